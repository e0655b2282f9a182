#!/usr/bin/env bash
# Benchmarks one server against three (latency and failover) on test
# clusters of network namespaces, with an already built skiff.
#   bench/ha/run.sh            (TRIALS=10 OPS=300 by default)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
export KUBECTL_BINARY="${KUBECTL_BINARY:-$root/_output/kubectl}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/ha: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
exec go test -run '^$' -bench ControlPlane -benchtime 1x -timeout 40m -v ./bench/ha
