#!/usr/bin/env bash
# Benchmarks the control plane of an already built skiff binary. It builds
# only this small program, never skiff itself (that takes minutes).
#   bench/controlplane/run.sh [--pods 1000] [--nodes 100] [--ops 1000]
#   bench/controlplane/run.sh --servers 3   one server against three on test
#     clusters of network namespaces (latency, failover; TRIALS=10 OPS=300)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${SKIFF_BINARY:-$root/_output/skiff}"
if [[ ! -x "$bin" ]]; then
	echo "bench/controlplane: $bin is missing: run make build first (or set SKIFF_BINARY)" >&2
	exit 1
fi
cd "$root"
if [[ ${1:-} == --servers ]]; then
	[[ ${2:-} == 3 ]] || { echo "bench/controlplane: --servers: only 3 is measured" >&2; exit 1; }
	export SKIFF_BINARY="$bin" KUBECTL_BINARY="${KUBECTL_BINARY:-$root/_output/kubectl}"
	exec go test -run '^$' -bench ControlPlane -benchtime 1x -timeout 40m -v ./bench/controlplane/ha
fi
exec go run ./bench/controlplane --skiff "$bin" "$@"
