#!/usr/bin/env bash
# Builds the linearizability checker (tools/linearizability: a small Go program
# around github.com/anishathalye/porcupine, fetched through the Go module proxy)
# into a cache outside git:
#   ${HOTSTANDBY_CACHE:-~/.cache/hotstandby}/linearizability-<porcupine version>/linearizability
# A stamp beside the binary holds a hash of go.mod, go.sum and main.go; a change
# of any of them rebuilds it, otherwise a run only checks. src/chaos/linearizability.ts
# finds the binary at the same path (or $HOTSTANDBY_LINEARIZABILITY).
# Usage: bash scripts/build-linearizability.sh   (prints the binary's path last)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/tools/linearizability"
version=$(sed -n 's|^require github.com/anishathalye/porcupine \(v[0-9.]*\)$|\1|p' "$src/go.mod")
if [ -z "$version" ]; then
  echo "error: tools/linearizability/go.mod must pin github.com/anishathalye/porcupine on one 'require' line." >&2
  exit 1
fi
out="${HOTSTANDBY_CACHE:-$HOME/.cache/hotstandby}/linearizability-$version/linearizability"
stamp=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
if [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "    linearizability (porcupine $version): cached ($out)" >&2
  echo "$out"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build the linearizability checker (go.mod asks for go 1.26). Install it from https://go.dev/dl/ and run again." >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
echo "    linearizability (porcupine $version): building" >&2
if ! (cd "$src" && CGO_ENABLED=0 nice -n 19 go build -mod=readonly -trimpath -ldflags="-s -w" -o "$out.tmp" .) >&2; then
  rm -f "$out.tmp"
  echo "error: building the linearizability checker failed; the go output above says why." >&2
  exit 1
fi
mv "$out.tmp" "$out"
printf '%s' "$stamp" > "$out.stamp"
echo "$out"
