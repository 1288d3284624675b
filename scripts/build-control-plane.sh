#!/usr/bin/env bash
# Builds the test control plane from Go modules (there is no Docker here):
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from k8s.io/kubernetes,
# etcd from go.etcd.io/etcd, kwok (fake nodes) and helm; for the real node
# (`hotstandby dev-cluster up --real-node`) kubelet and kube-proxy from the same
# k8s.io/kubernetes module, CoreDNS from github.com/coredns/coredns and the pod
# sandbox's pause program from tools/node/pause. Each binary lands in a
# cache outside git, keyed by version:
#   ${HOTSTANDBY_CACHE:-~/.cache/hotstandby}/controlplane/<tool>-<version>/<binary>
# so a second run only checks and takes a second. Versions: tools/controlplane/versions.env.
# Usage: bash scripts/build-control-plane.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../tools/controlplane/versions.env
source "$root/tools/controlplane/versions.env"
cache="${HOTSTANDBY_CACHE:-$HOME/.cache/hotstandby}/controlplane"

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build the test control plane (go.mod asks for go 1.26). Install it from https://go.dev/dl/ and run again." >&2
  exit 1
fi

# build <module dir under tools/> <version> <package> <binary> [extra -ldflags] [extra stamp]
# A stamp beside each binary records how it was built; a change of flags (or of
# the extra stamp, a hash of sources kept in this repository) rebuilds it.
build() {
  local module=$1 version=$2 package=$3 binary=$4 ldflags="-s -w ${5:-}"
  local out="$cache/$(basename "$module")-$version/$binary"
  local stamp="$package $ldflags${6:+ $6}"
  if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "    $binary $version: cached ($out)"
    return 0
  fi
  mkdir -p "$(dirname "$out")"
  echo "    $binary $version: building $package (the first build takes minutes)"
  local started=$SECONDS
  # Niced: the machine's other work (tests measuring lease expiry) must keep its CPU.
  if ! (cd "$root/tools/$module" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice -n 19 \
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
build controlplane/etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 etcd
build controlplane/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_version_flags"
build controlplane/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_version_flags"
build controlplane/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$k8s_version_flags"
build controlplane/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_version_flags"
build controlplane/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok kwok
build controlplane/helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm helm

echo "==> the real node's binaries (dev-cluster up --real-node)"
build controlplane/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kubelet kubelet "$k8s_version_flags"
build controlplane/kubernetes "$KUBERNETES_VERSION" k8s.io/kubernetes/cmd/kube-proxy kube-proxy "$k8s_version_flags"
build controlplane/coredns "$COREDNS_VERSION" hotstandby.dev/tools/controlplane/coredns coredns "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" "$(cat "$root/tools/controlplane/coredns/main.go" | sha256sum | cut -c1-16)"
build node/pause v1 hotstandby.dev/tools/node/pause pause "" "$(cat "$root/tools/node/pause/main.go" | sha256sum | cut -c1-16)"
# The etcd image's etcd, at the version its tag names (the CRD's default etcd image).
etcd_image_version=$(sed -n 's/^ETCD_IMAGE=.*:\(v[0-9.]*\)$/\1/p' "$root/tools/images/images.env")
etcd_module_version=$(sed -n 's|^require go.etcd.io/etcd/server/v3 \(v[0-9.]*\)$|\1|p' "$root/tools/images/etcd/go.mod")
if [ -z "$etcd_image_version" ] || [ "$etcd_image_version" != "$etcd_module_version" ]; then
  echo "error: ETCD_IMAGE in tools/images/images.env is tagged '${etcd_image_version}' but tools/images/etcd/go.mod builds etcd '${etcd_module_version}'; make them equal." >&2
  exit 1
fi
build images/etcd "$etcd_image_version" go.etcd.io/etcd/server/v3 etcd
