#!/usr/bin/env bash
# Compares Skiff's ingress proxy with Debian's nginx as reverse proxies in
# front of the same Go backends: wrk with keep-alive, each proxy pinned to one
# core, HTTP and HTTPS. Prints requests/s and p99 with Skiff/nginx ratios.
#
#   bench/ingress/run.sh                 # defaults below; override by env
#   DURATION=30s CONNS=128 bench/ingress/run.sh
#
# Everything listens on 127.0.0.1; processes started here are stopped by PID
# on exit (also on failure and Ctrl-C) and the temp dir is removed.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
PROXY_CPU=${PROXY_CPU:-0}      # the core each proxy gets to itself
LOAD_CPUS=${LOAD_CPUS:-1}      # wrk and the backends
BASE_PORT=${BASE_PORT:-18080}

for tool in wrk nginx taskset go; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt-get install wrk nginx)" >&2; exit 1; }
done

root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d /tmp/skiff-ingress-bench.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

skiff_http=$BASE_PORT skiff_https=$((BASE_PORT + 363))
nginx_http=$((BASE_PORT + 10)) nginx_https=$((BASE_PORT + 373))
be1=$((BASE_PORT + 1)) be2=$((BASE_PORT + 2))

echo "building bench/ingress ..." >&2
(cd "$root" && go build -o "$tmp/bench" ./bench/ingress)
"$tmp/bench" cert -dir "$tmp"

wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "run.sh: nothing listens on 127.0.0.1:$1" >&2
	exit 1
}

taskset -c "$LOAD_CPUS" "$tmp/bench" backend -addr "127.0.0.1:$be1" & pids+=($!)
taskset -c "$LOAD_CPUS" "$tmp/bench" backend -addr "127.0.0.1:$be2" & pids+=($!)
wait_port "$be1"; wait_port "$be2"

GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$tmp/bench" proxy -http "127.0.0.1:$skiff_http" -https "127.0.0.1:$skiff_https" \
	-backends "127.0.0.1:$be1,127.0.0.1:$be2" -cert "$tmp" & pids+=($!)

mkdir -p "$tmp/nginx/logs"
cat >"$tmp/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx/body;
    proxy_temp_path $tmp/nginx/proxy;
    fastcgi_temp_path $tmp/nginx/fastcgi;
    uwsgi_temp_path $tmp/nginx/uwsgi;
    scgi_temp_path $tmp/nginx/scgi;
    upstream web {
        server 127.0.0.1:$be1;
        server 127.0.0.1:$be2;
        keepalive 256;
    }
    server {
        listen 127.0.0.1:$nginx_http;
        listen 127.0.0.1:$nginx_https ssl http2;
        ssl_certificate $tmp/tls.crt;
        ssl_certificate_key $tmp/tls.key;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
CONF
taskset -c "$PROXY_CPU" nginx -p "$tmp/nginx" -c "$tmp/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$skiff_http"; wait_port "$skiff_https"; wait_port "$nginx_http"; wait_port "$nginx_https"

# run URL → "requests/s p99_ms"
run() {
	local out
	# a short warm-up fills the keep-alive pools
	taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" -d2s -H 'Host: bench.local' "$1" >/dev/null
	out=$(taskset -c "$LOAD_CPUS" wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H 'Host: bench.local' "$1")
	if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
		echo "run.sh: errors against $1:" >&2
		echo "$out" >&2
	fi
	awk '
		/Requests\/sec:/ { rps = $2 }
		$1 == "99%" {
			v = $2
			if (v ~ /us$/) { sub(/us$/, "", v); p99 = v / 1000 }
			else if (v ~ /ms$/) { sub(/ms$/, "", v); p99 = v }
			else if (v ~ /s$/) { sub(/s$/, "", v); p99 = v * 1000 }
		}
		END { printf "%s %s\n", rps, p99 }' <<<"$out"
}

echo "wrk -t$THREADS -c$CONNS -d$DURATION, keep-alive; proxies on CPU $PROXY_CPU, wrk and 2 Go backends on CPU $LOAD_CPUS" >&2
printf '%-7s %14s %14s %9s %14s %14s %9s\n' proto "skiff req/s" "nginx req/s" ratio "skiff p99 ms" "nginx p99 ms" ratio
for proto in http https; do
	if [ "$proto" = http ]; then sp=$skiff_http np=$nginx_http; else sp=$skiff_https np=$nginx_https; fi
	read -r s_rps s_p99 < <(run "$proto://127.0.0.1:$sp/")
	read -r n_rps n_p99 < <(run "$proto://127.0.0.1:$np/")
	awk -v p="$proto" -v sr="$s_rps" -v nr="$n_rps" -v sl="$s_p99" -v nl="$n_p99" 'BEGIN {
		printf "%-7s %14.0f %14.0f %8.2fx %14.2f %14.2f %8.2fx\n", p, sr, nr, (nr > 0 ? sr / nr : 0), sl, nl, (nl > 0 ? sl / nl : 0)
	}'
done
echo "ratio: skiff / nginx (req/s: higher is better; p99: lower is better)" >&2
