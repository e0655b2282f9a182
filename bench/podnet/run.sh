#!/usr/bin/env bash
# Pod-to-pod TCP throughput (iperf3) and round-trip time (a ping-pong client
# against the echo server's TCP echo) across two nodes of a test cluster,
# against node-to-node over the same bridge, for the routed and vxlan pod
# networks (as root). Flags go to the program, e.g.
#
#   bench/podnet/run.sh -modes routed -duration 10s -reps 5
#
# It needs the built skiff (make build) and iperf3 (apt-get install iperf3).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x _output/skiff ] || { echo "run.sh: _output/skiff is missing; run make build first" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "run.sh: iperf3 not found (apt-get install iperf3)" >&2; exit 1; }
go build -o _output/bin/podnet-bench ./bench/podnet
SKIFF_BINARY=${SKIFF_BINARY:-$PWD/_output/skiff} exec _output/bin/podnet-bench "$@"
