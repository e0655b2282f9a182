#!/usr/bin/env bash
# Pod start-up latency on a one-node test cluster: 30 pods (image present)
# created at once, create-to-Ready p50/p99, and the agent's RSS with them.
# Needs root and a built skiff (make build). Goal (issue 3): p99 under 2 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/podstartup: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
cd "$root"
go test -run '^$' -bench PodStartup -benchtime "${ROUNDS:-3}x" -timeout 20m ./bench/podstartup | tee /tmp/skiff-podstartup.txt
awk '/^BenchmarkPodStartup/ {
  for (i = 1; i <= NF; i++) { if ($i == "p50-ms") p50 = $(i-1); if ($i == "p99-ms") p99 = $(i-1); if ($i == "agent-RSS-MiB") rss = $(i-1) }
  printf "\n%-34s %10s\n", "metric (30 pods, image present)", "skiff"
  printf "%-34s %8.0f ms\n%-34s %8.0f ms\n%-34s %7.0f MiB\n", "create-to-Ready p50", p50, "create-to-Ready p99", p99, "agent RSS with 30 pods", rss
  printf "%-34s %8s\n", "goal: p99 under", "2000 ms"
}' /tmp/skiff-podstartup.txt
