#!/usr/bin/env bash
# LoadBalancer address failover: on a 3-node test cluster, ROUNDS (default 20)
# times the node announcing the address dies (agent killed, link cut); the time
# to the first successful new request from a client on the same L2 segment,
# p50/p99/max, next to a graceful handover, with the lease settings used.
# Needs root and a built skiff (make build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
export KUBECTL_BINARY="${KUBECTL_BINARY:-$root/_output/kubectl}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/lbfailover: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
cd "$root/bench/lbfailover"
go test -run '^$' -bench LBFailover -benchtime 1x -timeout 40m .
