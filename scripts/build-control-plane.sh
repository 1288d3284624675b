#!/usr/bin/env bash
# Builds the test control plane from Go modules (there is no Docker here):
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes,
# etcd from go.etcd.io/etcd, kwok (fake nodes) and helm. Each binary lands in a
# cache outside git, keyed by version:
#   ${HOTSTANDBY_CACHE:-~/.cache/hotstandby}/controlplane/<tool>-<version>/<binary>
# so a second run only checks and takes a second. Versions: tools/controlplane/versions.env.
# Usage: bash scripts/build-control-plane.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/tools/controlplane"
# shellcheck source=../tools/controlplane/versions.env
source "$tools/versions.env"
cache="${HOTSTANDBY_CACHE:-$HOME/.cache/hotstandby}/controlplane"

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build the test control plane (go.mod asks for go 1.26). Install it from https://go.dev/dl/ and run again." >&2
  exit 1
fi

# build <module dir> <version> <package> <binary> [extra -ldflags]
# A stamp beside each binary records how it was built; a change of flags rebuilds it.
build() {
  local module=$1 version=$2 package=$3 binary=$4 ldflags="-s -w ${5:-}"
  local out="$cache/$module-$version/$binary"
  local stamp="$package $ldflags"
  if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "    $binary $version: cached ($out)"
    return 0
  fi
  mkdir -p "$(dirname "$out")"
  echo "    $binary $version: building $package (the first build takes minutes)"
  local started=$SECONDS
  # Niced: the machine's other work (tests measuring lease expiry) must keep its CPU.
  if ! (cd "$tools/$module" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 10 \
        go build -trimpath -ldflags="$ldflags" -o "$out.tmp" "$package"); then
    rm -f "$out.tmp"
    echo "error: building $binary ($package $version) failed; the go output above says why." >&2
    exit 1
  fi
  mv "$out.tmp" "$out"
  printf '%s' "$stamp" > "$out.stamp"
  echo "    $binary $version: built in $((SECONDS - started)) s"
}

# Kubernetes binaries report their version from these variables (helm checks a
# chart's kubeVersion against it; unset, the server says v0.0.0-master).
k8s_minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
k8s_version_flags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"

echo "==> test control plane in $cache"
build etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 etcd
build kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_version_flags"
build kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_version_flags"
build kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$k8s_version_flags"
build kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_version_flags"
build kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok kwok
build helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm helm
