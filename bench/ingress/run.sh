#!/usr/bin/env bash
# Compares Skiff's ingress proxy with Debian's nginx and HAProxy as reverse
# proxies in front of the same Go backends; see docs/benchmarks.md, "Ingress".
# Each proxy gets one core to itself (taskset), the load generators and the
# backends the other; the proxies are interleaved over rounds and the median
# round is reported, with the CPU each proxy got and the rounds other tasks
# disturbed. Run as root: processes run at nice -19 in autogroups of their own.
#
#   bench/ingress/run.sh                      # 5 rounds of 10 s, 64/256/1000 connections, HTTP and HTTPS
#   bench/ingress/run.sh -rounds 7 -duration 20s -with-nethttp
#   bench/ingress/run.sh -h                   # every flag
#
# Everything listens on 127.0.0.1; every process started is stopped by its PID
# when the run ends (also on failure and Ctrl-C), and its temp dir is removed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

fail() { echo "bench/ingress: $*" >&2; exit 1; }
for tool in wrk hey nginx haproxy taskset go; do
	command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install wrk hey nginx haproxy util-linux)"
done
[[ $(nproc) -ge 2 ]] || fail "needs 2 CPUs: one for the proxies, one for the load generators and backends"

tmp="$(mktemp -d /tmp/skiff-bench-ingress-build-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
echo "bench/ingress: building the benchmark" >&2
(cd "$root" && go build -o "$tmp/bench-ingress" ./bench/ingress)
"$tmp/bench-ingress" run "$@"
