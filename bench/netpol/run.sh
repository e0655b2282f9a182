#!/usr/bin/env bash
# NetworkPolicy benchmarks, as root:
#  - programming latency on one node's maps: 1,000 local pods, 1,000
#    policies, p50/p99/max of the incremental model + map writes per change;
#  - the data path: conn/s and throughput pod to pod with 0/100/1,000
#    policies, Skiff's programs against kube-router-style iptables/ipset,
#    in namespaces of its own (ROUNDS, SECONDS_PER_TEST);
#  - end to end on a 3-node test cluster: API call -> every pod pair behaves
#    under the new rules (TRIALS); needs make build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
export KUBECTL_BINARY="${KUBECTL_BINARY:-$root/_output/kubectl}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/netpol: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v ipset >/dev/null || need+=(ipset)
command -v iptables-restore >/dev/null || need+=(iptables)
if ((${#need[@]})); then
	apt-get install -y "${need[@]}"
fi
go test -run '^$' -bench Programming -benchtime 1x -timeout 30m ./bench/netpol
# Namespaces: one namespace benchmark or test cluster at a time.
flock /tmp/skiff-e2e-helpers.lock go test -run '^$' -bench Datapath -benchtime 1x -timeout 30m ./bench/netpol
flock /tmp/skiff-e2e-helpers.lock go test -run '^$' -bench EndToEnd -benchtime 1x -timeout 30m ./bench/netpol
