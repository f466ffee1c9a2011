#!/usr/bin/env bash
# stop.sh DIR [--purge] — stop the backends that start.sh DIR started.
#
# Only the PIDs in DIR/pids are signalled (never processes by name), and each
# only after checking that it is still this DIR's daemon (PIDs are reused).
# Postfix first, then the Dovecot it delivers to: SIGTERM, up to 15 s, then
# SIGKILL. A zombie counts as stopped. Then waits (≤10 s) until no port of
# DIR/backends.env listens any more, so a new start can bind them at once.
# --purge also deletes DIR. Stopping what is not running is not an error.
set -euo pipefail
BE_SELF=stop.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then be_die "usage: stop.sh DIR [--purge]"; fi
PURGE=0
case "${2:-}" in "") ;; --purge) PURGE=1 ;; *) be_die "unknown option: $2" ;; esac
if [ ! -d "$1" ]; then be_log "$1 does not exist: nothing to stop"; exit 0; fi
DIR=$(be_dir "$1")

# ours NAME PID: is PID still NAME of this DIR?
ours() {
  local cmd; cmd=$(tr '\0' ' ' < "/proc/$2/cmdline" 2>/dev/null) || return 1
  case $1 in
    dovecot) [[ $cmd == *"$DIR/dovecot/dovecot.conf"* ]] ;;
    postfix) [[ $cmd == *master* ]] &&
             [ "$(tr -d ' \n' < "$DIR/postfix/queue/pid/master.pid" 2>/dev/null)" = "$2" ] ;;
    *) return 1 ;;
  esac
}

T_ALL=$(be_now)
if [ -f "$DIR/pids" ]; then
  tac "$DIR/pids" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if ! be_alive "$pid"; then be_log "$name ($pid) had already exited"; continue; fi
    if ! ours "$name" "$pid"; then be_log "pid $pid is no longer $name of $DIR: left alone"; continue; fi
    T0=$(be_now)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do be_alive "$pid" || break; sleep 0.05; done
    if be_alive "$pid"; then
      be_log "$name ($pid) still running 15s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do be_alive "$pid" || break; sleep 0.05; done
    fi
    be_log "stopped $name ($pid) in $(be_since "$T0")s"
  done
  rm -f "$DIR/pids"
else
  be_log "no $DIR/pids: nothing to stop"
fi

# Children that inherited a listening socket (a Postfix smtpd finishing its
# session, a Dovecot login process) may hold a port for a moment after their
# master has gone.
if [ -f "$DIR/backends.env" ]; then
  mapfile -t PORTS < <(sed -n 's/^POSTERN_BACKENDS_[A-Z0-9_]*_PORT=\([0-9][0-9]*\)$/\1/p' "$DIR/backends.env")
  if [ ${#PORTS[@]} -gt 0 ] && ! be_wait_closed 10 "${PORTS[@]}"; then
    be_die "ports still listening 10s after stopping: $(for p in "${PORTS[@]}"; do be_listening "$p" && printf '%s ' "$p"; done)"
  fi
  rm -f "$DIR/backends.env"
fi
be_log "done in $(be_since "$T_ALL")s"

if [ $PURGE = 1 ]; then
  rm -rf "$DIR"
  be_log "removed $DIR"
fi
