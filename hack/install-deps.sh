#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Skiff's build, tests and single-node
# cluster use, skipping what is already there.
set -euo pipefail
# containerd and runc are not among them: make build builds the versions Skiff
# ships (agent/containerd/build); runc's build needs gcc and libseccomp-dev.
pkgs=(gcc libc6-dev pkg-config libseccomp-dev containernetworking-plugins clang llvm libbpf-dev bpftool iproute2 nftables iptables
      dnsutils curl wrk hey dnsperf nginx docker-registry skopeo iperf3 jq busybox-static)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	if [[ $EUID -ne 0 ]]; then
		echo "missing packages: ${missing[*]}; run as root (sudo make ...) so they can be installed" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go is not installed: install Go $(sed -n 's/^go //p' go.mod) or newer from https://go.dev/dl/" >&2; exit 1; }
go mod download
