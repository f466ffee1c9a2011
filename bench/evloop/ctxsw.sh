#!/usr/bin/env bash
# bench/evloop/ctxsw.sh OUT BIN [SCENARIO] — as root from the module root:
# run bench/peers with BIN in postern's column (one round of SCENARIO,
# login or smtp, default login, 25 s windows) and count, with perf stat,
# the context switches and CPU time (task-clock) of haproxy and of BIN's
# mail process during 15 s of their windows. Prints each side's figures
# per operation (divided by its socket(2) calls: one backend connection per
# login or SMTP session). Writes OUT.txt (the run's output), OUT.peers/,
# OUT.haproxy.stat and OUT.postern.stat. PEERS_FLAGS go to bench/peers
# (e.g. "-reuse -keep -event-loops").
#
#   PEERS_FLAGS="-reuse -keep" bench/evloop/ctxsw.sh /tmp/cs/login /tmp/postern login
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/evloop/busy.sh
out=${1:?usage: ctxsw.sh OUT BIN [SCENARIO]} bin=${2:?usage: ctxsw.sh OUT BIN [SCENARIO]} scen=${3:-login}
case $scen in login|smtp) ;; *) echo "ctxsw.sh: SCENARIO is login or smtp" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "ctxsw.sh: needs perf (Debian: linux-perf)" >&2; exit 1; }
rm -f "$out.txt" # a previous run's lines must not be taken for this one's
bench/peers.sh -only "$scen" -rounds 1 -duration 25s -warmup 2s ${PEERS_FLAGS:-} -postern "$bin" -out "$out.peers" > "$out.txt" 2>&1 &
run=$!
trap 'kill $run 2>/dev/null || true' EXIT
count() { # NAME PIDS
  wait_busy "$2"
  sleep 3
  perf stat -e context-switches,task-clock,syscalls:sys_enter_socket -p "$2" -o "$out.$1.stat" -- sleep 15 > /dev/null 2>&1
}
wait_line nginx
count haproxy "$(pgrep -x haproxy | paste -sd, -)"
wait_line haproxy
pid=$(pgrep -f "serve -c .*postern-mail/postern\.yaml$" | head -1 || true)
[ -n "$pid" ] || { echo "ctxsw.sh: BIN's mail process not found" >&2; exit 1; }
count postern "$pid"
wait $run
trap - EXIT
for side in haproxy postern; do
  awk -v side="$side" -v scen="$scen" '
    { gsub(/,/, "", $1) }
    $2 == "context-switches" { cs = $1 }
    $2 == "msec" && $3 == "task-clock" { ms = $1 }
    $2 == "syscalls:sys_enter_socket" { n = $1 }
    END { if (!n) { printf "%s: no socket(2) calls counted\n", side; exit }
          printf "%-8s %6.2f context switches, %.3f ms CPU per %s (%d operations)\n", side, cs / n, ms / n, scen, n }' "$out.$side.stat"
done
