#!/usr/bin/env bash
# bench/evloop/profile.sh OUT BIN [SCENARIO] — as root from the module root:
# run bench/peers with BIN in postern's column (one round of SCENARIO,
# default login, 25 s windows) and record BIN's process with perf for 15 s
# inside its window. Writes OUT.data (perf record -g), OUT.txt (the run's
# output), OUT.perf.log, the run's table in OUT.peers/, and prints the
# run's table row. PEERS_FLAGS go to bench/peers (e.g. "-reuse -keep"). BIN is started by bench/peers as
# "BIN serve -c FILE"; a wrapper script must exec the program. PROC names
# the postern process to record: postern-mail (default; IMAP, POP3, SMTP),
# postern-web (http), postern-webdyn (httpdyn), postern-webtls (https).
# PERF_EVENTS replaces the sampling (default "-F 2999"), e.g.
# PERF_EVENTS="-e raw_syscalls:sys_enter" for the stacks of every system call.
#
#   bench/evloop/profile.sh /tmp/ev/gor /tmp/evloop-goroutine
#   PEERS_FLAGS="-reuse -keep" bench/evloop/profile.sh /tmp/ev/postern /tmp/postern
#   perf report -i /tmp/ev/gor.data --children --sort sym
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/evloop/busy.sh
out=${1:?usage: profile.sh OUT BIN [SCENARIO]} bin=${2:?usage: profile.sh OUT BIN [SCENARIO]} scen=${3:-login}
command -v perf >/dev/null || { echo "profile.sh: needs perf (Debian: linux-perf)" >&2; exit 1; }
rm -f "$out.txt" # a previous run's lines must not be taken for this one's
bench/peers.sh -only "$scen" -rounds 1 -duration 25s -warmup 2s ${PEERS_FLAGS:-} -postern "$bin" -out "$out.peers" > "$out.txt" 2>&1 &
run=$!
trap 'kill $run 2>/dev/null || true' EXIT
# The sides run in the order direct, nginx, haproxy, postern: BIN's window
# starts after haproxy's line (2 s of warm-up).
deadline=$((SECONDS + 600))
until grep -q " $scen .* haproxy " "$out.txt" 2>/dev/null; do
  kill -0 $run 2>/dev/null || { cat "$out.txt" >&2; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "profile.sh: no haproxy line in 10 minutes" >&2; exit 1; }
  sleep 0.2
done
# BIN's process: the one serving the configuration bench/peers wrote.
proc=${PROC:-postern-mail}
pid=$(pgrep -f "serve -c .*/$proc/postern\.yaml$" | head -1 || true)
[ -n "$pid" ] || { echo "profile.sh: BIN's process not found" >&2; exit 1; }
wait_busy "$pid"
sleep 3
perf record ${PERF_EVENTS:--F 2999} -g -p "$pid" -o "$out.data" -- sleep 15 > "$out.perf.log" 2>&1
wait $run
trap - EXIT
grep "^| " "$out.txt" | tail -1
