#!/usr/bin/env bash
# Benchmarks Skiff's cluster DNS against CoreDNS (its kubernetes plugin) with
# dnsperf; see docs/benchmarks.md, "Cluster DNS". Run as root: the servers and
# dnsperf run in scheduler autogroups at nice -19, and as SCHED_FIFO during the
# latency runs, so that other work on a shared machine disturbs them less.
#   bench/dns/run.sh [--duration 20s] [--rounds 3] [--services 200] [--latency-qps 5000]
# CoreDNS is built from its Go module (the Go module proxy) into a temp dir,
# at its latest release unless COREDNS_VERSION=vX.Y.Z says otherwise; nothing
# of it is kept. Skiff itself is not rebuilt: make build first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${SKIFF_BINARY:-$root/_output/skiff}"
coredns_version="${COREDNS_VERSION:-latest}"

fail() { echo "bench/dns: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || fail "run as root"
[[ -x "$bin" ]] || fail "$bin is missing: run make build first (or set SKIFF_BINARY)"
for tool in dnsperf taskset nice go; do
	command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install dnsperf util-linux coreutils)"
done
[[ $(nproc) -ge 2 ]] || fail "needs 2 CPUs: one for the servers, one for dnsperf"

tmp="$(mktemp -d /tmp/skiff-bench-dns-build-XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

echo "bench/dns: building CoreDNS github.com/coredns/coredns@$coredns_version from the Go module proxy" >&2
# Outside this repository, so CoreDNS builds with its own go.mod, not ours.
(cd "$tmp" && GOBIN="$tmp/bin" GOFLAGS=-mod=mod go install "github.com/coredns/coredns@$coredns_version")
"$tmp/bin/coredns" -version >&2

echo "bench/dns: building the benchmark" >&2
(cd "$root" && go build -o "$tmp/bench-dns" ./bench/dns)
"$tmp/bench-dns" --skiff "$bin" --coredns "$tmp/bin/coredns" "$@"
