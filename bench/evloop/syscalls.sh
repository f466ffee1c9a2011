#!/usr/bin/env bash
# bench/evloop/syscalls.sh OUT BIN [SCENARIO] — as root from the module root:
# run bench/peers with BIN in postern's column (one round of SCENARIO,
# login, smtp, imaps-login, imaps-resume or smtps, default login, 14 s windows) and count, with perf's
# system-call tracepoints, every system call haproxy and BIN's mail
# process make during 8 s of their windows. Prints each side's calls per
# operation (divided by its socket(2) calls: one backend connection per
# login or SMTP session). Tracing slows the traced process: take CPU
# figures from untraced runs. Writes OUT.txt (the run's output), OUT.peers/,
# OUT.haproxy.stat and OUT.postern.stat. PEERS_FLAGS go to bench/peers
# (e.g. "-reuse -keep -event-loops").
#
#   PEERS_FLAGS="-reuse -keep -event-loops" bench/evloop/syscalls.sh /tmp/sc/login /tmp/postern login
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/evloop/busy.sh
out=${1:?usage: syscalls.sh OUT BIN [SCENARIO]} bin=${2:?usage: syscalls.sh OUT BIN [SCENARIO]} scen=${3:-login}
case $scen in login|smtp|imaps-login|imaps-resume|smtps) ;; *) echo "syscalls.sh: SCENARIO is login, smtp, imaps-login, imaps-resume or smtps" >&2; exit 2 ;; esac
command -v perf >/dev/null || { echo "syscalls.sh: needs perf (Debian: linux-perf)" >&2; exit 1; }
rm -f "$out.txt" # a previous run's lines must not be taken for this one's
bench/peers.sh -only "$scen" -rounds 1 -duration 14s -warmup 2s ${PEERS_FLAGS:-} -postern "$bin" -out "$out.peers" > "$out.txt" 2>&1 &
run=$!
trap 'kill $run 2>/dev/null || true' EXIT
count() { # NAME PIDS
  wait_busy "$2"
  sleep 3
  perf stat -e 'syscalls:sys_enter_*' -p "$2" -o "$out.$1.stat" -- sleep 8 > /dev/null 2>&1
}
wait_line nginx
count haproxy "$(pgrep -x haproxy | paste -sd, -)"
wait_line haproxy
pid=$(pgrep -f "serve -c .*postern-mail/postern\.yaml$" | head -1 || true)
[ -n "$pid" ] || { echo "syscalls.sh: BIN's mail process not found" >&2; exit 1; }
count postern "$pid"
wait $run
trap - EXIT
for side in haproxy postern; do
  echo "== $side: system calls per $scen"
  awk '/syscalls:sys_enter_/ { gsub(/,/, "", $1); name = $2; sub(/syscalls:sys_enter_/, "", name); c[name] = $1; if (name == "socket") n = $1 }
       END { if (!n) { print "  no socket(2) calls counted"; exit }
             for (k in c) { t += c[k]; if (c[k] / n >= 0.05) printf "  %-16s %6.2f\n", k, c[k] / n }
             printf "  %-16s %6.2f\n", "(all)", t / n }' "$out.$side.stat" | sort -k2 -n -r
done
