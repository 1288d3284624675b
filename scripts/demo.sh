#!/usr/bin/env bash
# The live demo on a fresh machine: installs what is missing, then runs
# `hotstandby demo` (three masters, a steady write load, the leader killed
# every few seconds). Extra arguments go to the demo: bash scripts/demo.sh --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
root=$(repo_root)
cd "$root"
ensure_node_modules
ensure_stores
exec node bin/hotstandby.js demo "$@"
