#!/usr/bin/env bash
# What clients of a node see while its agent restarts, is upgraded, crashes,
# and while the control plane is down (the data-plane continuity issue):
# requests sent, failed and wrong per path, and the slowest request.
# CONC (default 50) connections per path; OUTAGE_SECONDS (default 60).
# Needs root and a built skiff (make build); builds an upgrade binary.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export SKIFF_BINARY="${SKIFF_BINARY:-$root/_output/skiff}"
[[ -x $SKIFF_BINARY ]] || { echo "bench/restart: $SKIFF_BINARY is missing: run make build" >&2; exit 1; }
cd "$root"
go test -run '^$' -bench Restart -benchtime 1x -timeout 30m ./bench/restart
