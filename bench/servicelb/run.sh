#!/usr/bin/env bash
# Skiff's eBPF service load balancer vs a direct connection vs kube-proxy's
# iptables rules, measured in one run (as root). Flags go to the program,
# e.g. bench/servicelb/run.sh -services 1000 -duration 5s
set -euo pipefail
cd "$(dirname "$0")/../.."
go build -o _output/bin/servicelb-bench ./bench/servicelb
exec _output/bin/servicelb-bench "$@"
