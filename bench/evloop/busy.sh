# Sourced by profile.sh and syscalls.sh. wait_busy PIDS (comma-separated)
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
