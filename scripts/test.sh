#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what is missing, then
# type-checks, lints and runs the unit, integration and e2e suites.
# Usage: bash scripts/test.sh [vitest args...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(repo_root)
cd "$root"

ensure_node_modules
# The real node's e2e tests need root; elsewhere they are skipped and say why.
if [ "$(id -u)" -eq 0 ]; then ensure_node_packages; fi
ensure_stores
ensure_lua
if [ -x scripts/build-control-plane.sh ] || [ -f scripts/build-control-plane.sh ]; then
  log_step "building the test control plane when not cached"
  bash scripts/build-control-plane.sh
  export HOTSTANDBY_E2E=1
fi

# Dragonfly takes long to build from source, so it is never built here: its suites run
# when scripts/build-dragonfly.sh has cached it, and are skipped (saying why) when not.
if bash scripts/build-dragonfly.sh --print-path >/dev/null 2>&1; then
  log_step "Dragonfly is built: the stream-server suites run on it and on redis-server"
else
  log_step "Dragonfly is not built: its suites are skipped (build it with: bash scripts/build-dragonfly.sh)"
fi

log_step "building the linearizability checker when not cached"
bash scripts/build-linearizability.sh >/dev/null

log_step "type-checking"
tsc --noEmit -p .
log_step "linting"
eslint .
log_step "running tests"
vitest run "$@"
