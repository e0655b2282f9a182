#!/usr/bin/env bash
# Pins k8s.io/kubernetes and points each of its staging modules (which its go.mod
# replaces with ./staging/... paths we cannot use) at the published module of the
# matching v0.MINOR.PATCH tag. Run with the wanted release: hack/update-kubernetes.sh v1.37.2
set -euo pipefail
version=${1:?usage: hack/update-kubernetes.sh vX.Y.Z}
staging_version="v0.${version#v1.}"
cd "$(dirname "$0")/.."

gomod=$(go mod download -json "k8s.io/kubernetes@${version}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[ -n "$gomod" ] || { echo "could not download k8s.io/kubernetes@${version}" >&2; exit 1; }

mods=$(awk '/^replace \(/{r=1; next} r && /^\)/{r=0} r && /=> \.\/staging/{print $1}' "$gomod")
args=()
for m in $mods; do
  args+=("-replace=${m}=${m}@${staging_version}")
done
go mod edit "${args[@]}" "-require=k8s.io/kubernetes@${version}"
echo "pinned k8s.io/kubernetes ${version} with $(echo "$mods" | wc -w) staging modules at ${staging_version}"
