# lib.sh — helpers shared by start.sh, stop.sh and verify.sh (sourced, not run).
# shellcheck shell=bash

# Where the scripts and templates live.
# shellcheck disable=SC2034  # used by the scripts that source this file
BE_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

be_log() { echo "${BE_SELF:-backends}: $*" >&2; }
be_die() { be_log "$*"; exit 1; }

# be_now / be_since T0: wall clock with sub-second precision, for timings.
be_now() { date +%s.%N; }
be_since() { awk -v a="$1" -v b="$(be_now)" 'BEGIN { printf "%.2f", b - a }'; }

# be_port NAME OFFSET: a port from POSTERN_BACKENDS_<NAME>, else from
# POSTERN_BACKENDS_PORT_BASE (default 12000) plus OFFSET.
be_port() {
  local var=POSTERN_BACKENDS_$1 base=${POSTERN_BACKENDS_PORT_BASE:-12000}
  local v=${!var:-$((base + $2))}
  if ! [[ $v =~ ^[0-9]+$ ]] || [ "$v" -lt 1024 ] || [ "$v" -gt 65535 ]; then
    be_die "$var=$v is not a port in 1024..65535"
  fi
  echo "$v"
}

# be_alive PID: the process exists and is not a zombie. Here PID 1 reaps
# orphans late, so a daemon that has exited can linger in state Z, where
# `kill -0` would still call it alive.
be_alive() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
  local stat; stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }          # the state follows the last ") " (comm may hold spaces)
  [ -n "$stat" ] && [ "${stat:0:1}" != Z ]
}

# be_listening PORT: something listens on 127.0.0.1:PORT, ::1:PORT or a
# wildcard address (reads /proc, so it needs no ss/netstat and sees every
# process's sockets).
be_listening() {
  local hex; hex=$(printf ':%04X' "$1")
  awk -v h="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == h { found = 1 } END { exit !found }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# be_wait_ports SECONDS PORT...: wait until every port listens (polls every
# 50 ms, at most SECONDS*20 times).
be_wait_ports() {
  local limit=$1 p ok; shift
  for _ in $(seq 1 $((limit * 20))); do
    ok=1
    for p in "$@"; do be_listening "$p" || { ok=0; break; }; done
    [ $ok = 1 ] && return 0
    sleep 0.05
  done
  return 1
}

# be_wait_closed SECONDS PORT...: wait until none of the ports listens.
be_wait_closed() {
  local limit=$1 p busy; shift
  for _ in $(seq 1 $((limit * 20))); do
    busy=0
    for p in "$@"; do be_listening "$p" && { busy=1; break; }; done
    [ $busy = 0 ] && return 0
    sleep 0.05
  done
  return 1
}

# be_dir DIR: the canonical absolute path of an existing DIR.
be_dir() { (cd "$1" 2>/dev/null && pwd -P) || be_die "no such folder: $1"; }
