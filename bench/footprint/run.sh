#!/usr/bin/env bash
# Idle memory and start-up time of a one-node test cluster (issue 17): RSS
# of the server, the agent, its data plane and containerd after IDLE (60s)
# idle, and the time from the cluster's start to a Ready node whose DNS and
# ingress answer, against the goals (server+agent < 400 MB, agent < 100 MB,
# start-up < 10 s). PROFILE_DIR=DIR also saves the server's and the agent's
# in-use heap profiles there and prints their top entries. Needs root and a
# built skiff (make build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/footprint: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
cd "$root"
go test -run '^$' -bench Footprint -benchtime 1x -timeout 15m ./bench/footprint
if [[ -n ${PROFILE_DIR:-} ]]; then
	for p in server agent; do
		echo "== $p: in-use heap, top 25"
		go tool pprof -sample_index=inuse_space -top -nodecount 25 "$PROFILE_DIR/$p.heap" 2>/dev/null | sed -n '1,32p'
		grep -E '^# (HeapAlloc|HeapSys|HeapIdle|HeapInuse|HeapReleased|Stack|Sys|NextGC|GCSys|OtherSys) ' "$PROFILE_DIR/$p.heap.txt" || true
	done
fi
