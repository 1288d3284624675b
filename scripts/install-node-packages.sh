#!/usr/bin/env bash
# Installs, when missing, the Debian packages the dev cluster's real node uses
# (`hotstandby dev-cluster up --real-node`): containerd and runc, the CNI
# plugins (bridge, host-local, loopback, portmap), iptables and conntrack, and
# mmdebstrap and umoci for building images without Docker. Needs root and apt.
# Usage: bash scripts/install-node-packages.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_node_packages
