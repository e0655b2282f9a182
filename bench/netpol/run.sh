#!/usr/bin/env bash
# NetworkPolicy programming latency on one node's maps: 1,000 local pods,
# 1,000 policies, p50/p99/max of compute + map writes per change. As root.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
go test -run '^$' -bench Programming -benchtime 1x -timeout 20m ./bench/netpol
