#!/bin/sh
# Entrypoint of the dev cluster's "Dragonfly" image: Debian's redis-server
# STANDING IN for Dragonfly, which cannot be built here yet. It takes the
# Dragonfly flags the operator passes that redis-server understands
# (--flag=value or --flag value) and drops the rest, saying which.
echo "hotstandby dev cluster: Debian's redis-server is standing in for Dragonfly (no Dragonfly binary is built here)" >&2
keep=""
set_kept() { keep="$keep --$1 $(printf '%s' "$2" | sed "s/'/'\\\\''/g; s/^/'/; s/\$/'/")"; }
while [ $# -gt 0 ]; do
  arg=$1; shift
  case "$arg" in
    --*=*) name=${arg%%=*}; name=${name#--}; value=${arg#*=} ;;
    --*)
      name=${arg#--}
      case "$1" in --*|"") value="" ;; *) value=$1; shift ;; esac ;;
    dragonfly|redis-server) continue ;;
    *) echo "dragonfly stand-in: ignoring argument $arg" >&2; continue ;;
  esac
  case "$name" in
    port|bind|requirepass|masterauth|dir|dbfilename|maxmemory|save|appendonly|loglevel) set_kept "$name" "$value" ;;
    *) echo "dragonfly stand-in: redis-server has no --$name; ignored" >&2 ;;
  esac
done
# Dragonfly has no protected mode and keeps its data in /data.
eval "exec redis-server --protected-mode no --dir /data $keep"
