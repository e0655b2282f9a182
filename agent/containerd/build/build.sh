#!/usr/bin/env bash
# Builds the container runtime Skiff ships into OUT (make build passes
# _output/skiff-containerd): containerd, containerd-shim-runc-v2 and ctr
# from the containerd/ module, runc from the runc/ module. Each is a Go
# module of its own so that their dependency versions are the ones
# upstream tested, not those Kubernetes pins in Skiff's go.mod; go.sum
# pins every byte. See docs/containerd.md.
#
# The inputs are the two modules' go.mod/go.sum, this script and the Go
# toolchain; when none changed since the last build, nothing is rebuilt
# (linking containerd alone takes a while on a small machine).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
GO=${GO:-go}
export GOFLAGS=-buildvcs=false

stamp=$(cat "$here"/containerd/go.mod "$here"/containerd/go.sum "$here"/runc/go.mod "$here"/runc/go.sum "$0" <($GO version) | sha256sum | cut -d' ' -f1)
if [[ -f $out/.stamp && $(cat "$out/.stamp") == "$stamp" ]] &&
	[[ -x $out/containerd && -x $out/containerd-shim-runc-v2 && -x $out/ctr && -x $out/runc ]]; then
	echo "$out: containerd and runc are up to date"
	exit 0
fi
rm -f "$out/.stamp"

version() { (cd "$1" && $GO list -m -f '{{.Version}}' "$2"); }

# containerd is pure Go: static, without the btrfs, devmapper and zfs
# snapshotters (cgo, and Skiff uses overlayfs), as containerd's own static
# release builds do.
cd "$here/containerd"
ctrd=github.com/containerd/containerd/v2
v=$(version . $ctrd)
echo "building containerd $v, containerd-shim-runc-v2 and ctr into $out"
CGO_ENABLED=0 $GO build -trimpath -tags 'urfave_cli_no_docs no_btrfs no_devmapper no_zfs' \
	-ldflags "-s -w -X $ctrd/version.Version=$v -X $ctrd/version.Package=$ctrd" \
	-o "$out/" $ctrd/cmd/containerd $ctrd/cmd/containerd-shim-runc-v2 $ctrd/cmd/ctr

# runc needs cgo (its nsenter is C) and libseccomp for seccomp profiles; it
# is linked statically (libseccomp.a from libseccomp-dev), as runc's own
# release binaries are, so a node needs no libseccomp of its own.
cd "$here/runc"
v=$(version . github.com/opencontainers/runc)
echo "building runc $v into $out"
CGO_ENABLED=1 $GO build -trimpath -buildmode=pie -tags 'seccomp urfave_cli_no_docs netgo osusergo' \
	-ldflags "-s -w -X main.version=${v#v} -linkmode external -extldflags -static-pie" \
	-o "$out/runc" github.com/opencontainers/runc

echo "$stamp" >"$out/.stamp"
