#!/usr/bin/env bash
# How long a deleted pod stays in the service load balancer: on a 3-node test
# cluster, ROUNDS (default 20) pods deleted one at a time; per node, the time
# from the delete to the pod's address leaving the node's pinned BPF maps,
# p50/p99/max. Needs root and a built skiff (make build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/lbupdate: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
cd "$root"
go test -run '^$' -bench LBUpdate -benchtime 1x -timeout 20m ./bench/lbupdate
