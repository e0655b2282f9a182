#!/usr/bin/env bash
# `make run`: start a single-node Skiff cluster in the background (or find the
# one already running), deploy examples/demo, wait until it answers, and show
# what to try next.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${SKIFF_DATA_DIR:-/var/lib/skiff/server}
RUN=/var/lib/skiff/run
SKIFF=$PWD/_output/skiff
export SKIFF_DATA_DIR=$DATA
step() { printf '\n==> %s\n' "$*"; }
die() { echo "make run: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (sudo make run): the agent manages containers, routes and BPF programs"
mkdir -p "$RUN"

running() { [[ -f $RUN/skiff.pid ]] && kill -0 "$(cat "$RUN/skiff.pid")" 2>/dev/null; }

if running; then
	step "Skiff is already running (pid $(cat "$RUN/skiff.pid")); reusing it"
else
	for port in 80 443 6443; do
		users=$(ss -Hltnp "sport = :$port")
		# The node data plane of an earlier run outlives its agent; the new
		# agent's data plane takes its sockets over.
		[[ $port != 6443 ]] && users=$(grep -v '"skiff"' <<<"$users" || true)
		if [[ -n $users ]]; then
			die "port $port is in use by: $(ss -Hltnp "sport = :$port" | sed 's/.*users://' | head -1); stop that program (Skiff needs 80/443 for ingress and 6443 for the API)"
		fi
	done
	step "Starting skiff server (control plane + node agent); output in $RUN/skiff.log"
	nohup "$SKIFF" server --data-dir "$DATA" >"$RUN/skiff.log" 2>&1 &
	echo $! >"$RUN/skiff.pid"
	for _ in $(seq 1 120); do
		grep -q "ready in" "$RUN/skiff.log" && break
		running || { tail -20 "$RUN/skiff.log"; die "skiff server exited; see $RUN/skiff.log"; }
		sleep 1
	done
	grep "skiff server:" "$RUN/skiff.log" | sed 's/^/    /'
fi

step "Waiting for the node to be Ready"
for i in $(seq 1 120); do
	"$SKIFF" kubectl get nodes 2>/dev/null | grep -qw Ready && break
	((i % 10 == 0)) && grep "skiff agent:" "$RUN/skiff.log" | tail -1 | sed 's/^/    /'
	running || { tail -20 "$RUN/skiff.log"; die "skiff exited; see $RUN/skiff.log"; }
	sleep 1
done
"$SKIFF" kubectl get nodes -o wide

step "Deploying examples/demo (Deployment, Service, Ingress, ConfigMap, Secret)"
"$SKIFF" kubectl apply -f examples/demo/
"$SKIFF" kubectl rollout status deployment/demo --timeout=180s

step "A LoadBalancer Service (no pool: EXTERNAL-IP is the node's address)"
# Port 8081: the node's ingress proxy holds 80 and 443 (docs/loadbalancer.md).
# apply, not create: a cluster kept by `make stop` may hold an older demo-lb.
"$SKIFF" kubectl apply -f - <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: demo-lb}
spec:
  type: LoadBalancer
  selector: {app: demo}
  ports: [{name: http, port: 8081, targetPort: http}]
YAML
EXTERNAL_IP=
for _ in $(seq 1 60); do
	EXTERNAL_IP=$("$SKIFF" kubectl get service demo-lb -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
	[[ -n $EXTERNAL_IP ]] && break
	sleep 1
done
[[ -n $EXTERNAL_IP ]] || "$SKIFF" kubectl describe service demo-lb | tail -5
"$SKIFF" kubectl get service demo-lb

step "Waiting for traffic through the Service, the Ingress and the LoadBalancer"
CLUSTER_IP=$("$SKIFF" kubectl get service demo -o jsonpath='{.spec.clusterIP}')
for _ in $(seq 1 60); do
	curl -fs --max-time 2 "http://$CLUSTER_IP/" >/dev/null && curl -fs --max-time 2 http://demo.localhost/ >/dev/null &&
		curl -fs --max-time 2 "http://$EXTERNAL_IP:8081/" >/dev/null && break
	sleep 1
done

step "Try these"
echo "\$ curl http://demo.localhost/            # through the Ingress"
curl -s --max-time 5 http://demo.localhost/ || echo "(no answer yet: see $RUN/skiff.log)"
echo
echo "\$ curl http://$CLUSTER_IP/               # the ClusterIP, load-balanced by eBPF"
curl -s --max-time 5 "http://$CLUSTER_IP/" || echo "(no answer yet: see $RUN/skiff.log)"
echo
echo "\$ curl http://$EXTERNAL_IP:8081/          # the LoadBalancer Service's EXTERNAL-IP"
curl -s --max-time 5 "http://$EXTERNAL_IP:8081/" || echo "(no answer yet: see $RUN/skiff.log)"
echo
echo "\$ _output/skiff kubectl get pods -o wide"
"$SKIFF" kubectl get pods -o wide
echo
echo "Kubeconfig: $DATA/kubeconfig    Stop everything: make stop"
