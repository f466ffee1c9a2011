# Sourced by profile.sh, syscalls.sh and ctxsw.sh. wait_busy PIDS (comma-separated)
# returns once the processes together use a twentieth of a core over a
# second (haproxy relaying SMTP uses about a tenth; idle, none). A side's
# window in bench/peers starts only after the previous window's clean-up
# (the SMTP scenario waits for Postfix's queue to drain), so the line that
# ends one side's window does not mark the start of the next one's load.
cpu_ticks() {
  local t=0 p
  for p in ${1//,/ }; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
  done
  echo "$t"
}
wait_busy() {
  local deadline=$((SECONDS + 300)) a b hz
  hz=$(getconf CLK_TCK)
  while :; do
    a=$(cpu_ticks "$1"); sleep 1; b=$(cpu_ticks "$1")
    [ $(((b - a) * 20)) -lt "$hz" ] || return 0
    [ $SECONDS -lt $deadline ] || { echo "$(basename "$0"): the processes $1 never got busy" >&2; exit 1; }
  done
}

# wait_line SIDE returns once the bench/peers run $run, writing to
# $out.txt, has printed SIDE's line for scenario $scen (the sides run in
# the order direct, nginx, haproxy, postern); it fails when the run ended
# without it or after 10 minutes.
wait_line() {
  local deadline=$((SECONDS + 600))
  until grep -q " $scen .* $1 " "$out.txt" 2>/dev/null; do
    kill -0 "$run" 2>/dev/null || { cat "$out.txt" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "$(basename "$0"): no $1 line in 10 minutes" >&2; exit 1; }
    sleep 0.2
  done
}
