#!/usr/bin/env bash
# Builds Dragonfly from source for the Dragonfly test suites and the oplog benchmark.
# Dragonfly, its helio submodule and every third-party source its CMake would download are
# taken from their git repositories at pinned refs (tools/dragonfly/versions.env, sources.txt);
# tools/dragonfly/local-sources.patch points CMake at those local copies, so nothing is
# downloaded at build time, and lz4 and xxhash come from Debian's -dev packages.
# The binary lands in a cache outside git, keyed by version and build flags:
#   ${HOTSTANDBY_CACHE:-~/.cache/hotstandby}/dragonfly/<version>-<key>/dragonfly
# A second run only checks the cache. The last line printed is the binary's path.
# Repositories are read from $HOTSTANDBY_GIT_MIRRORS/<owner>+<name>/repo when present (bare git
# dirs), else cloned from GitHub into the cache. The first build takes long (the README says how
# long); it runs at nice 19 with DRAGONFLY_JOBS (default 2) parallel jobs.
# Usage: bash scripts/build-dragonfly.sh [--print-path]
#   --print-path  print where the binary would be and exit (0 when it is built, 1 when not)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/tools/dragonfly"
# shellcheck source=../tools/dragonfly/versions.env
source "$tools/versions.env"
cache="${HOTSTANDBY_CACHE:-$HOME/.cache/hotstandby}/dragonfly"
mirrors="${HOTSTANDBY_GIT_MIRRORS:-/work/.mirror}"
jobs="${DRAGONFLY_JOBS:-2}"

# The key covers everything that changes the binary: version, flags, pinned sources, our patch.
# src/lib/dragonfly.ts dragonflyBinaryPath() computes the same path; keep the two in step.
# The work dir is keyed by what configures CMake (fixes are applied to it on every run, so a
# new fix rebuilds only the files it touches); the binary by that plus the fixes.
fixes=("$tools"/fixes/*.patch)
srckey=$(cat "$tools/versions.env" "$tools/sources.txt" "$tools/local-sources.patch" | sha256sum | cut -c1-12)
key=$(cat "$tools/versions.env" "$tools/sources.txt" "$tools/local-sources.patch" "${fixes[@]}" | sha256sum | cut -c1-12)
out="$cache/$DRAGONFLY_VERSION-$key/dragonfly"
if [ "${1:-}" = "--print-path" ]; then
  echo "$out"
  [ -x "$out" ]
  exit
fi
if [ -x "$out" ]; then
  echo "    dragonfly $DRAGONFLY_VERSION: cached"
  echo "$out"
  exit 0
fi

missing=()
for pkg in $DRAGONFLY_DEBIAN_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "error: building Dragonfly needs these Debian packages: ${missing[*]}. Install them with: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

debian_lib() { echo "/usr/lib/$(gcc -dumpmachine)/$1"; }
system_libs="-DSYSTEM_LIB_lz4=$(debian_lib liblz4.a) -DSYSTEM_LIB_xxhash=$(debian_lib libxxhash.a)"

# repo <owner/name>: a git dir holding the repository, from the mirrors or cloned once.
repo() {
  local mirror="$mirrors/${1/\//+}/repo" clone="$cache/git/${1/\//+}.git"
  if [ -d "$mirror" ]; then echo "$mirror"; return; fi
  if [ ! -d "$clone" ]; then
    git clone --quiet --bare "https://github.com/$1" "$clone.tmp" >&2 && mv "$clone.tmp" "$clone"
  fi
  echo "$clone"
}
# checkout <owner/name> <ref> <dir> [pathspec...]: the tree at ref, without git metadata.
checkout() {
  local git
  git=$(repo "$1")
  if ! git --git-dir="$git" rev-parse --verify -q "$2^{commit}" >/dev/null; then
    echo "error: $1 has no ref $2 (in $git); fetch that repository again or fix tools/dragonfly/sources.txt." >&2
    exit 1
  fi
  rm -rf "$3" && mkdir -p "$3"
  git --git-dir="$git" archive "$2" -- "${@:4}" | tar -x -C "$3"
}

work="$cache/build-$DRAGONFLY_VERSION-$srckey"
# The work dir may be a symlink to an older work dir whose objects are still good (a change of
# inputs that touches few files): CMake and ninja are given its real path, because the compile
# commands name absolute paths and a new path would make ninja rebuild every object.
[ -L "$work" ] && work=$(realpath "$work")
src="$work/src" third="$work/third_party" build="$work/build"
echo "==> Dragonfly $DRAGONFLY_VERSION from source in $work"
# An interrupted build resumes: the sources stay as they were checked out (a fresh checkout
# would make every object file look stale) and ninja carries on where it stopped.
resumed=""
if [ -f "$work/sources.done" ]; then
  resumed=" (resumed: this run's part only)"
  echo "    resuming the build in $build"
else
  checkout "$DRAGONFLY_REPO" "$DRAGONFLY_VERSION" "$src"
  helio=$(git --git-dir="$(repo "$DRAGONFLY_REPO")" ls-tree "$DRAGONFLY_VERSION" helio | awk '{print $3}')
  checkout "$HELIO_REPO" "$helio" "$src/helio"
  patch --quiet -p1 -d "$src" < "$tools/local-sources.patch"
  mkdir -p "$build"
  while read -r kind name from ref paths; do
    case "$kind" in
      ''|'#'*) continue ;;
      # shellcheck disable=SC2086 # paths is a list of pathspecs
      dir) checkout "$from" "$ref" "$third/$name" $paths ;;
      tarball)
        git --git-dir="$(repo "$from")" archive --format=tar.gz --prefix="${name%.tar.gz}/" \
          -o "$build/$name" "$ref" ;;
      *) echo "error: tools/dragonfly/sources.txt: unknown kind '$kind'" >&2; exit 1 ;;
    esac
  done < "$tools/sources.txt"
  touch "$work/sources.done"
fi
# Our fixes for building with Debian 12's GCC 12 (tools/dragonfly/fixes), each applied once.
for fix in "${fixes[@]}"; do
  if ! patch --quiet -p1 -R -f --dry-run -d "$src" < "$fix" >/dev/null 2>&1; then
    patch --quiet -p1 -d "$src" < "$fix"
  fi
done

# shellcheck disable=SC2086 # the flag lists are meant to split into words
cmake -G Ninja -S "$src" -B "$build" $DRAGONFLY_CMAKE_FLAGS $system_libs \
  -DLOCAL_SOURCES_DIR="$third" > "$work/cmake.log" 2>&1 || {
  echo "error: configuring Dragonfly failed; see $work/cmake.log" >&2
  exit 1
}
started=$SECONDS
# Niced: other work on the machine (tests measuring lease expiry) must keep its CPU.
if ! nice -n 19 /usr/bin/time -v -o "$work/time.txt" ninja -C "$build" -j "$jobs" dragonfly; then
  echo "error: building Dragonfly failed; the ninja output above says why." >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$build/dragonfly" "$out.tmp"
strip "$out.tmp"
mv "$out.tmp" "$out"
echo "    dragonfly $DRAGONFLY_VERSION: built in $((SECONDS - started)) s, peak memory $(awk -F': ' '/Maximum resident/ {print int($2 / 1024)}' "$work/time.txt") MiB$resumed"
echo "$out"
