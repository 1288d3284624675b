# Set-up steps shared by scripts/test.sh and scripts/demo.sh. Sourced, not run.
# Each step checks first and only acts when something is missing, so a second
# run costs seconds.

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

log_step() { printf '\n==> %s\n' "$*"; }

# The real node's Debian packages (containerd, runc, CNI plugins, iptables,
# conntrack, mmdebstrap, umoci), installed when missing and we are root.
# Debian's containerd is not started here: the dev cluster runs its own.
ensure_node_packages() {
  local missing=()
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  command -v conntrack >/dev/null 2>&1 || missing+=(conntrack)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v umoci >/dev/null 2>&1 || missing+=(umoci)
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log_step "installing ${missing[*]} from Debian (the real node's runtime and image tools)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if command -v systemctl >/dev/null 2>&1; then systemctl stop containerd >/dev/null 2>&1 || true; fi
  else
    echo "error: missing ${missing[*]}. Install them as root (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run again." >&2
    return 1
  fi
}

# Node dependencies (including the pinned Node 24 from the `node` package).
ensure_node_modules() {
  local root; root=$(repo_root)
  if [ ! -x "$root/node_modules/.bin/node" ] || [ "$root/package-lock.json" -nt "$root/node_modules/.package-lock.json" ]; then
    log_step "installing npm dependencies (npm ci)"
    (cd "$root" && npm ci --no-audit --no-fund)
  fi
  export PATH="$root/node_modules/.bin:$PATH"
  local major; major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 24 ]; then
    echo "error: node_modules/.bin/node is Node $major; the project needs Node 24 (the 'node' devDependency). Remove node_modules and run again." >&2
    exit 1
  fi
}

# etcd and a Redis-protocol server from Debian, installed when missing and we are root.
ensure_stores() {
  local missing=()
  command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log_step "installing ${missing[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Debian starts the packaged services; the tests run their own on free ports.
    for svc in etcd redis-server; do
      if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
    done
  else
    echo "error: missing ${missing[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) and run again." >&2
    exit 1
  fi
}

# The Lua 5.1 and 5.4 interpreters (redis-server's and Dragonfly's versions),
# for test/unit/lua-scripts.test.ts. Installed when missing and we are root;
# otherwise those checks skip and say why.
ensure_lua() {
  local missing=()
  command -v luac5.1 >/dev/null 2>&1 || missing+=(lua5.1)
  command -v luac5.4 >/dev/null 2>&1 || missing+=(lua5.4)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log_step "installing ${missing[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "note: ${missing[*]} missing (Debian/Ubuntu: sudo apt-get install ${missing[*]}); the Lua portability checks will be skipped." >&2
  fi
}
