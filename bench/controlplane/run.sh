#!/usr/bin/env bash
# Benchmarks the control plane of an already built skiff binary. It builds
# only this small program, never skiff itself (that takes minutes).
#   bench/controlplane/run.sh [--pods 1000] [--nodes 100] [--ops 1000]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${SKIFF_BINARY:-$root/_output/skiff}"
if [[ ! -x "$bin" ]]; then
	echo "bench/controlplane: $bin is missing: run make build first (or set SKIFF_BINARY)" >&2
	exit 1
fi
cd "$root"
exec go run ./bench/controlplane --skiff "$bin" "$@"
