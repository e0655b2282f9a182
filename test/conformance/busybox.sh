#!/usr/bin/env bash
# Builds the busybox the conformance images use as their shell and applets:
# Debian 12's busybox source (its `deb` configuration) with
# FEATURE_DI_ENV_HACK on, so that ash passes environment variables whose names
# are not shell names (`data-1`) on to the programs it runs, as upstream's
# busybox 1.37 image does; Debian's binary packages (1.35) drop them, which
# fails the ConfigMap and Secret environment tests.
#
# The source comes through apt, from a deb-src entry in a temporary sources
# list, so it is checked against Debian's signed Release files; the machine's
# own apt configuration is not changed.
#
# Usage: busybox.sh OUT (the binary is written to OUT).
set -euo pipefail
out=$(realpath -m "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/src.sources" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_opts=(-o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=$work/src.sources" -o "Dir::Etc::SourceParts=-" -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache" -o "Debug::NoLocking=1")
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
echo "busybox.sh: fetching Debian's busybox source"
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq source busybox >/dev/null 2>"$work/source.log") || {
  cat "$work/source.log" >&2
  echo "busybox.sh: apt-get source busybox failed (needs deb.debian.org and dpkg-dev)" >&2
  exit 1
}
src=$(find "$work" -maxdepth 1 -type d -name 'busybox-*' | head -1)
cd "$src"
cp debian/config/pkg/deb .config
sed -i 's/^# CONFIG_FEATURE_DI_ENV_HACK is not set$/CONFIG_FEATURE_DI_ENV_HACK=y/' .config
grep -q '^CONFIG_FEATURE_DI_ENV_HACK=y$' .config || { echo "busybox.sh: FEATURE_DI_ENV_HACK not found in Debian's config" >&2; exit 1; }
{ yes "" || true; } | make -s oldconfig >/dev/null
echo "busybox.sh: building busybox $(basename "$src") (a few minutes)"
make -s -j"$(nproc)" busybox >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
cp busybox "$out"
echo "busybox.sh: wrote $out"
