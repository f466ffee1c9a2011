#!/usr/bin/env bash
# start.sh DIR [--fresh] — start a real Postfix 3.7 and Dovecot 2.3 on
# 127.0.0.1 for postern's end-to-end tests, without systemd. Run as root.
#
# Everything lives in DIR (≤64 characters): configs, TLS certificate, queue,
# maildirs, logs (DIR/log), PIDs (DIR/pids) and DIR/backends.env, which tells
# tests the ports and paths. Nothing in /etc is changed; the only system
# changes are the Debian packages (installed when missing) and a "vmail" user.
# --fresh deletes the mail and logs of an earlier run first.
# Stop with stop.sh DIR. See docs/E2E.md.
#
# Ports: POSTERN_BACKENDS_PORT_BASE (default 12000) plus a fixed offset, or
# each one set on its own:
#   POSTERN_BACKENDS_IMAP_PROXY_PORT   base+143  IMAP, PROXY header required
#   POSTERN_BACKENDS_IMAP_PLAIN_PORT   base+144  IMAP, no header
#   POSTERN_BACKENDS_IMAPS_PROXY_PORT  base+993  IMAP implicit TLS, PROXY header first
#   POSTERN_BACKENDS_POP3_PROXY_PORT   base+110  POP3, PROXY header required
#   POSTERN_BACKENDS_POP3_PLAIN_PORT   base+111  POP3, no header
#   POSTERN_BACKENDS_POP3S_PROXY_PORT  base+995  POP3 implicit TLS, PROXY header first
#   POSTERN_BACKENDS_LMTP_PORT         base+24   Dovecot LMTP (Postfix delivers here)
#   POSTERN_BACKENDS_SMTP_PROXY_PORT   base+25   Postfix, PROXY header required
#   POSTERN_BACKENDS_SMTP_PLAIN_PORT   base+26   Postfix, no header, XCLIENT from 127/8
# Knobs (fast-test defaults; the servers' own defaults in brackets):
#   POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT  10485760 bytes
#   POSTERN_BACKENDS_AUTH_FAILURE_DELAY  0   [2s]  Dovecot's wait before a failed-login reply
#   POSTERN_BACKENDS_AUTH_PENALTY        0   [1]   1: Dovecot's per-IP 2/4/8/15 s penalty
#   POSTERN_BACKENDS_SMTPD_ERROR_SLEEP   0s  [1s]  Postfix's sleep after a 4xx/5xx reply
#   POSTERN_BACKENDS_NO_INSTALL=1        fail rather than call apt-get
#   POSTERN_BACKENDS_POSTFIX_CHECKS=1    let `postfix start` run its checks (+2-3 s)
#   POSTERN_BACKENDS_DOVECOT_REUSE       0   [0]   1: Dovecot's login, IMAP and POP3
#       processes serve one client after another (service_count = 0, a few
#       started in advance) instead of one process each: about ten times the
#       logins a second, for benchmarks of a busy server
# The template values (ports, knobs, INSTANCE...) are read by name in
# render's ${!v}, which shellcheck cannot see:
# shellcheck disable=SC2034
set -euo pipefail
BE_SELF=start.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then be_die "usage: start.sh DIR [--fresh]"; fi
FRESH=0
case "${2:-}" in "") ;; --fresh) FRESH=1 ;; *) be_die "unknown option: $2" ;; esac
[ "$(id -u)" = 0 ] || be_die "must run as root (Dovecot and Postfix switch users; apt-get installs)"

IMAP_PROXY_PORT=$(be_port IMAP_PROXY_PORT 143)
IMAP_PLAIN_PORT=$(be_port IMAP_PLAIN_PORT 144)
IMAPS_PROXY_PORT=$(be_port IMAPS_PROXY_PORT 993)
POP3_PROXY_PORT=$(be_port POP3_PROXY_PORT 110)
POP3_PLAIN_PORT=$(be_port POP3_PLAIN_PORT 111)
POP3S_PROXY_PORT=$(be_port POP3S_PROXY_PORT 995)
LMTP_PORT=$(be_port LMTP_PORT 24)
SMTP_PROXY_PORT=$(be_port SMTP_PROXY_PORT 25)
SMTP_PLAIN_PORT=$(be_port SMTP_PLAIN_PORT 26)
DOVECOT_PORTS=("$IMAP_PROXY_PORT" "$IMAP_PLAIN_PORT" "$IMAPS_PROXY_PORT" "$POP3_PROXY_PORT"
               "$POP3_PLAIN_PORT" "$POP3S_PROXY_PORT" "$LMTP_PORT")
POSTFIX_PORTS=("$SMTP_PROXY_PORT" "$SMTP_PLAIN_PORT")
[ "$(printf '%s\n' "${DOVECOT_PORTS[@]}" "${POSTFIX_PORTS[@]}" | sort -u | wc -l)" = 9 ] \
  || be_die "two services were given the same port"

MESSAGE_SIZE_LIMIT=${POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT:-10485760}
AUTH_FAILURE_DELAY=${POSTERN_BACKENDS_AUTH_FAILURE_DELAY:-0}
SMTPD_ERROR_SLEEP=${POSTERN_BACKENDS_SMTPD_ERROR_SLEEP:-0s}
DOVECOT_REUSE=${POSTERN_BACKENDS_DOVECOT_REUSE:-0}
case $DOVECOT_REUSE in 0|1) ;; *) be_die "POSTERN_BACKENDS_DOVECOT_REUSE must be 0 or 1" ;; esac
case "${POSTERN_BACKENDS_AUTH_PENALTY:-0}" in
  0) AUTH_PENALTY_MODE=0 ;; 1) AUTH_PENALTY_MODE=0600 ;;
  *) be_die "POSTERN_BACKENDS_AUTH_PENALTY must be 0 or 1" ;;
esac
[[ $MESSAGE_SIZE_LIMIT =~ ^[0-9]+$ ]] || be_die "POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT must be a number of bytes"
# Postfix reads smtpd_error_sleep_time only when smtpd runs: check it here.
[[ $SMTPD_ERROR_SLEEP =~ ^[0-9]+[smhdw]?$ ]] || be_die "POSTERN_BACKENDS_SMTPD_ERROR_SLEEP must be a Postfix time such as 0s or 1s"
VMAIL_USER=vmail
T_ALL=$(be_now)

# ---- 1. packages and the vmail user (once per machine) ----------------------------
# Servers, plus the clients verify.sh uses (swaks needs the two Perl TLS
# modules for --tls; they are only "recommended", and we install none of those).
PKGS=(postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd
      openssl swaks libnet-ssleay-perl libio-socket-ssl-perl curl python3 netbase)
missing_pkgs() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || echo "$p"
  done
}
POLICY=/usr/sbin/policy-rc.d
MADE_POLICY=0
STARTED=0
DIR=
on_exit() {
  local rc=$?
  if [ "$MADE_POLICY" = 1 ]; then rm -f "$POLICY"; fi
  if [ "$rc" != 0 ] && [ "$STARTED" = 1 ]; then
    be_log "failed: stopping what this run started"
    "$BE_HOME/stop.sh" "$DIR" >&2 || true
  fi
}
trap on_exit EXIT

# Several start.sh at once (parallel Go test binaries) would fight over the
# dpkg lock and useradd: the install step runs under one machine-wide lock.
exec 9> /tmp/.postern-backends-install.lock
flock -w 900 9 || be_die "waited 15 minutes for another start.sh to finish installing"
mapfile -t MISSING < <(missing_pkgs)
if [ ${#MISSING[@]} -gt 0 ]; then
  [ "${POSTERN_BACKENDS_NO_INSTALL:-0}" = 1 ] && be_die "missing packages: ${MISSING[*]} (POSTERN_BACKENDS_NO_INSTALL=1)"
  T0=$(be_now)
  be_log "installing ${MISSING[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # "No configuration": no /etc/postfix/main.cf, so no system Postfix.
  debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string mx.example.test
EOF
  # Without systemd, maintainer scripts start daemons through invoke-rc.d
  # (a system Dovecot on 110/143 on every interface) unless policy-rc.d
  # forbids it. Containers often have one; otherwise ours lives only as
  # long as this install.
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# temporary, from postern test/backends/start.sh\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    MADE_POLICY=1
  fi
  APTLOG=$(mktemp /tmp/postern-backends-apt.XXXXXX)
  apt_get() { apt-get -o DPkg::Lock::Timeout=300 -q "$@" >> "$APTLOG" 2>&1; }
  if ! apt_get install -y --no-install-recommends "${MISSING[@]}"; then
    # Usually a stale or empty package list: refresh it once and retry.
    if ! { apt_get update && apt_get install -y --no-install-recommends "${MISSING[@]}"; }; then
      tail -n 30 "$APTLOG" >&2
      be_die "apt-get install failed (full log: $APTLOG)"
    fi
  fi
  rm -f "$APTLOG"
  if [ "$MADE_POLICY" = 1 ]; then rm -f "$POLICY"; MADE_POLICY=0; fi
  mapfile -t STILL < <(missing_pkgs)
  [ ${#STILL[@]} = 0 ] || be_die "still missing after apt-get: ${STILL[*]}"
  be_log "installed the packages in $(be_since "$T0")s"
fi
if ! id -u "$VMAIL_USER" > /dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
          --shell /usr/sbin/nologin "$VMAIL_USER"
  be_log "created the system user $VMAIL_USER (owner of the maildirs)"
fi
exec 9>&-

# ---- 2. the folder ------------------------------------------------------------------
check_dir() {
  # Unix socket paths have 107 bytes; Dovecot's longest lie ~40 below DIR.
  [ ${#1} -le 64 ] || be_die "DIR is too long for unix socket paths (${#1} > 64 characters): $1"
  [[ $1 =~ ^[A-Za-z0-9/._+-]+$ ]] || be_die "DIR may hold only letters, digits and / . _ + -: $1"
}
check_dir "$(realpath -m -- "$1")"
mkdir -p "$1"
DIR=$(be_dir "$1")
check_dir "$DIR"

if [ -f "$DIR/pids" ]; then
  while read -r name pid; do
    be_alive "$pid" && be_die "$name (pid $pid) of an earlier start is still running: stop.sh $DIR first"
  done < "$DIR/pids"
  rm -f "$DIR/pids"
fi
for p in "${DOVECOT_PORTS[@]}" "${POSTFIX_PORTS[@]}"; do
  be_listening "$p" && be_die "port $p is in use (another instance? set POSTERN_BACKENDS_PORT_BASE)"
done

# dovenull, dovecot, postfix and vmail must be able to walk down to DIR:
# add o+x (search, not read) where mktemp -d or t.TempDir() left 0700.
d=$DIR
while [ "$d" != / ]; do
  if [ $(( 8#$(stat -c %a "$d") & 1 )) = 0 ]; then
    be_log "chmod o+x $d (so the mail servers' users can reach $DIR)"
    chmod o+x "$d"
  fi
  d=$(dirname "$d")
done
chmod 755 "$DIR"

[ $FRESH = 1 ] && rm -rf "$DIR/mail" "$DIR/log"
rm -rf "$DIR/dovecot/run" "$DIR/postfix/queue/pid" "$DIR/backends.env"
mkdir -p "$DIR/dovecot/run" "$DIR/dovecot/state" "$DIR/postfix/conf" "$DIR/postfix/queue" \
         "$DIR/postfix/data" "$DIR/mail" "$DIR/log" "$DIR/tls"
chown postfix:postfix "$DIR/postfix/data"
chown "$VMAIL_USER:$VMAIL_USER" "$DIR/mail"
chmod 700 "$DIR/mail"

# ---- 3. TLS: one self-signed certificate per DIR, kept across restarts ----------------
if [ ! -s "$DIR/tls/cert.pem" ] || [ ! -s "$DIR/tls/key.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=mx.example.test" \
    -addext "subjectAltName=DNS:mx.example.test,DNS:localhost,IP:127.0.0.1,IP:::1" \
    -keyout "$DIR/tls/key.pem.new" -out "$DIR/tls/cert.pem.new" 2> "$DIR/log/openssl.err" \
    || { cat "$DIR/log/openssl.err" >&2; be_die "openssl could not make the test certificate"; }
  chmod 600 "$DIR/tls/key.pem.new"
  chmod 644 "$DIR/tls/cert.pem.new"
  mv "$DIR/tls/key.pem.new" "$DIR/tls/key.pem"
  mv "$DIR/tls/cert.pem.new" "$DIR/tls/cert.pem"
fi

# ---- 4. configuration ----------------------------------------------------------------
INSTANCE=$(basename "$DIR" | tr -c 'A-Za-z0-9\n' '-')
VARS=(DIR INSTANCE VMAIL_USER IMAP_PROXY_PORT IMAP_PLAIN_PORT IMAPS_PROXY_PORT POP3_PROXY_PORT
      POP3_PLAIN_PORT POP3S_PROXY_PORT LMTP_PORT SMTP_PROXY_PORT SMTP_PLAIN_PORT
      MESSAGE_SIZE_LIMIT AUTH_FAILURE_DELAY AUTH_PENALTY_MODE SMTPD_ERROR_SLEEP)
SEDS=()
for v in "${VARS[@]}"; do
  [[ ${!v} =~ ^[A-Za-z0-9/._+-]*$ ]] || be_die "$v has characters the templates cannot take: ${!v}"
  SEDS+=(-e "s|@$v@|${!v}|g")
done
render() {  # template output
  sed "${SEDS[@]}" "$BE_HOME/conf/$1" > "$2"
  if grep -n '@[A-Z_]*@' "$2" >&2; then be_die "unknown placeholder left in $2 (from conf/$1)"; fi
}
render dovecot.conf.in "$DIR/dovecot/dovecot.conf"
render main.cf.in "$DIR/postfix/conf/main.cf"
render master.cf.in "$DIR/postfix/conf/master.cf"

# Policy services (postern's policy-service mode tests), off unless asked:
#   POSTERN_BACKENDS_POSTFIX_POLICY=inet:127.0.0.1:PORT     check_policy_service
#   POSTERN_BACKENDS_DOVECOT_POLICY_URL=http://127.0.0.1:PORT/  auth_policy_server_url
#   POSTERN_BACKENDS_DOVECOT_POLICY_NONCE_FILE=/path         auth_policy_hash_nonce = </path
# Both fail open when the policy server is down (DUNNO; Dovecot's default
# auth_policy_reject_on_fail = no).
if [ -n "${POSTERN_BACKENDS_POSTFIX_POLICY:-}" ]; then
  [[ $POSTERN_BACKENDS_POSTFIX_POLICY =~ ^inet:[0-9.]+:[0-9]+$ ]] || be_die "POSTERN_BACKENDS_POSTFIX_POLICY must be inet:ADDR:PORT"
  cat >> "$DIR/postfix/conf/main.cf" <<EOF2

# ---- postern's policy service (POSTERN_BACKENDS_POSTFIX_POLICY)
smtpd_relay_restrictions = check_policy_service $POSTERN_BACKENDS_POSTFIX_POLICY, permit_sasl_authenticated, reject_unauth_destination
smtpd_end_of_data_restrictions = check_policy_service $POSTERN_BACKENDS_POSTFIX_POLICY
smtpd_policy_service_default_action = DUNNO
smtpd_policy_service_timeout = 5s
smtpd_policy_service_try_limit = 1
smtpd_policy_service_retry_delay = 1s
EOF2
fi
if [ -n "${POSTERN_BACKENDS_DOVECOT_POLICY_URL:-}" ]; then
  [[ $POSTERN_BACKENDS_DOVECOT_POLICY_URL =~ ^http://[0-9.]+:[0-9]+/$ ]] || be_die "POSTERN_BACKENDS_DOVECOT_POLICY_URL must be http://ADDR:PORT/"
  [ -f "${POSTERN_BACKENDS_DOVECOT_POLICY_NONCE_FILE:-}" ] || be_die "POSTERN_BACKENDS_DOVECOT_POLICY_NONCE_FILE must name the nonce file"
  cat >> "$DIR/dovecot/dovecot.conf" <<EOF2

# ---- postern's authentication policy (POSTERN_BACKENDS_DOVECOT_POLICY_URL)
auth_policy_server_url = $POSTERN_BACKENDS_DOVECOT_POLICY_URL
auth_policy_hash_nonce = <$POSTERN_BACKENDS_DOVECOT_POLICY_NONCE_FILE
auth_policy_server_timeout_msecs = 2000
EOF2
fi

if [ "$DOVECOT_REUSE" = 1 ]; then
  # Dovecot's "high-performance" login processes, and IMAP and POP3
  # processes kept for the next client: no fork a login.
  cat >> "$DIR/dovecot/dovecot.conf" <<EOF2

# ---- processes reused (POSTERN_BACKENDS_DOVECOT_REUSE=1)
service imap-login {
  service_count = 0
  process_min_avail = 2
}
service pop3-login {
  service_count = 0
  process_min_avail = 2
}
service imap {
  service_count = 0
  process_min_avail = 4
}
service pop3 {
  service_count = 0
  process_min_avail = 2
}
EOF2
fi

# conf/users -> Dovecot's passwd-file and Postfix's recipient table.
USERS=$(awk '!/^[[:space:]]*(#|$)/ { print $1, $2 }' "$BE_HOME/conf/users")
[ -n "$USERS" ] || be_die "conf/users lists no users"
awk '{ printf "%s:{PLAIN}%s::::::\n", $1, $2 }' <<< "$USERS" > "$DIR/dovecot/users"
chown root:dovecot "$DIR/dovecot/users"
chmod 640 "$DIR/dovecot/users"
awk '{ print $1, "OK" }' <<< "$USERS" > "$DIR/postfix/conf/recipients"

# Postfix re-reads main.cf and tables until their mtime is older than the
# moment it began to read them (so it never reads half-written files): right
# after a render every Postfix command would stall 1-2 s. Back-date them.
touch -d "@$(( $(date +%s) - 10 ))" "$DIR"/postfix/conf/* "$DIR/dovecot/dovecot.conf" "$DIR/dovecot/users"

: > "$DIR/pids"
STARTED=1   # from here on, a failure stops what this run started

# ---- 5. Dovecot ------------------------------------------------------------------------
T0=$(be_now)
doveconf -c "$DIR/dovecot/dovecot.conf" -n > /dev/null 2> "$DIR/log/doveconf.err" \
  || { cat "$DIR/log/doveconf.err" >&2; be_die "the Dovecot configuration is invalid"; }
# Every daemon: its own session (a Ctrl-C or process-group kill of the caller
# does not reach it) and stdio away from the caller's pipes (Go's
# exec.Cmd.Wait and $(...) would wait for it otherwise). -F: no fork.
setsid dovecot -F -c "$DIR/dovecot/dovecot.conf" < /dev/null >> "$DIR/log/dovecot.stdout" 2>&1 &
DOVECOT_PID=$!
echo "dovecot $DOVECOT_PID" >> "$DIR/pids"
if ! be_wait_ports 20 "${DOVECOT_PORTS[@]}"; then
  tail -n 20 "$DIR/log/dovecot.log" "$DIR/log/dovecot.stdout" >&2 2>/dev/null || true
  be_die "Dovecot did not listen on ${DOVECOT_PORTS[*]} within 20s"
fi
be_alive "$DOVECOT_PID" || be_die "Dovecot exited; see $DIR/log/dovecot.log"
for _ in $(seq 1 100); do [ -S "$DIR/dovecot/run/auth-postfix" ] && break; sleep 0.05; done
[ -S "$DIR/dovecot/run/auth-postfix" ] || be_die "Dovecot made no SASL socket for Postfix within 5s"
T_DOVECOT=$(be_since "$T0")

# ---- 6. Postfix ------------------------------------------------------------------------
T0=$(be_now)
PFCONF=$DIR/postfix/conf
if [ "${POSTERN_BACKENDS_POSTFIX_CHECKS:-0}" = 1 ]; then
  rm -f "$DIR/postfix/queue/quick-start"
else
  # `postfix start` runs post-install create-missing and its checks first
  # (~2 s). Instead, make the queue folders as Postfix's own list of files
  # (meta_directory/postfix-files) says, and leave the quick-start flag that
  # makes postfix-script skip the checks (Postfix's quick-stop leaves it too).
  read -r META MAIL_OWNER SETGID_GROUP < <(postconf -c "$PFCONF" -h meta_directory mail_owner setgid_group | paste -sd ' ')
  # shellcheck disable=SC2016  # $queue_directory etc. are literal text in postfix-files
  awk -F: -v mo="$MAIL_OWNER" -v sg="$SETGID_GROUP" '
    $1 ~ /^\$queue_directory\/[a-z]+$/ && $2 == "d" {
      owner = ($3 == "$mail_owner") ? mo : $3
      group = ($4 == "-") ? "root" : ($4 == "$setgid_group") ? sg : $4
      sub(/^\$queue_directory\//, "", $1)
      print owner, group, $5, $1
    }' "$META/postfix-files" > "$DIR/postfix/queue-dirs"
  [ -s "$DIR/postfix/queue-dirs" ] || be_die "found no queue folders in $META/postfix-files"
  # One install(1) per owner/group/mode: process starts are the slow part.
  while read -r owner group mode; do
    mapfile -t names < <(awk -v k="$owner $group $mode" '$1" "$2" "$3 == k { print dir "/" $4 }' \
                           dir="$DIR/postfix/queue" "$DIR/postfix/queue-dirs")
    install -d -o "$owner" -g "$group" -m "$mode" "${names[@]}"
  done < <(cut -d' ' -f1-3 "$DIR/postfix/queue-dirs" | sort -u)
  touch "$DIR/postfix/queue/quick-start"
fi
# Postfix prints its fatal errors only to a terminal (postlogd is not up yet),
# so a bad main.cf fails silently: then re-run `postfix check` under script(1).
if ! postfix -c "$PFCONF" start < /dev/null >> "$DIR/log/postfix.stdout" 2>&1; then
  script -qec "postfix -c $PFCONF check" /dev/null < /dev/null >&2 || true
  tail -n 20 "$DIR/log/postfix.log" >&2 2>/dev/null || true
  be_die "postfix start failed; see above and $DIR/log/"
fi
# master daemonizes itself; its PID is in the queue.
POSTFIX_PID=$(tr -d ' \n' < "$DIR/postfix/queue/pid/master.pid" 2>/dev/null || true)
[ -n "$POSTFIX_PID" ] || be_die "Postfix wrote no master.pid"
echo "postfix $POSTFIX_PID" >> "$DIR/pids"
if ! be_wait_ports 20 "${POSTFIX_PORTS[@]}"; then
  tail -n 20 "$DIR/log/postfix.log" >&2 2>/dev/null || true
  be_die "Postfix did not listen on ${POSTFIX_PORTS[*]} within 20s"
fi
T_POSTFIX=$(be_since "$T0")

# ---- 7. what the tests read -----------------------------------------------------------
cat > "$DIR/backends.env.new" <<EOF
# Written by test/backends/start.sh: the running backends (shell syntax).
POSTERN_BACKENDS_DIR=$DIR
POSTERN_BACKENDS_IMAP_PROXY_PORT=$IMAP_PROXY_PORT
POSTERN_BACKENDS_IMAP_PLAIN_PORT=$IMAP_PLAIN_PORT
POSTERN_BACKENDS_IMAPS_PROXY_PORT=$IMAPS_PROXY_PORT
POSTERN_BACKENDS_POP3_PROXY_PORT=$POP3_PROXY_PORT
POSTERN_BACKENDS_POP3_PLAIN_PORT=$POP3_PLAIN_PORT
POSTERN_BACKENDS_POP3S_PROXY_PORT=$POP3S_PROXY_PORT
POSTERN_BACKENDS_LMTP_PORT=$LMTP_PORT
POSTERN_BACKENDS_SMTP_PROXY_PORT=$SMTP_PROXY_PORT
POSTERN_BACKENDS_SMTP_PLAIN_PORT=$SMTP_PLAIN_PORT
POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT=$MESSAGE_SIZE_LIMIT
POSTERN_BACKENDS_DOVECOT_REUSE=$DOVECOT_REUSE
POSTERN_BACKENDS_USERS="$(awk '{ printf "%s%s:%s", (NR > 1 ? " " : ""), $1, $2 }' <<< "$USERS")"
POSTERN_BACKENDS_MAIL_ROOT=$DIR/mail
POSTERN_BACKENDS_DOVECOT_LOG=$DIR/log/dovecot.log
POSTERN_BACKENDS_POSTFIX_LOG=$DIR/log/postfix.log
POSTERN_BACKENDS_TLS_CERT=$DIR/tls/cert.pem
POSTERN_BACKENDS_DOVECOT_PID=$DOVECOT_PID
POSTERN_BACKENDS_POSTFIX_PID=$POSTFIX_PID
EOF
mv "$DIR/backends.env.new" "$DIR/backends.env"

be_log "Dovecot (pid $DOVECOT_PID) ready in ${T_DOVECOT}s, Postfix (pid $POSTFIX_PID) in ${T_POSTFIX}s; total $(be_since "$T_ALL")s"
be_log "IMAP $IMAP_PROXY_PORT proxy / $IMAP_PLAIN_PORT plain / $IMAPS_PROXY_PORT TLS+proxy, POP3 $POP3_PROXY_PORT / $POP3_PLAIN_PORT / $POP3S_PROXY_PORT, LMTP $LMTP_PORT, SMTP $SMTP_PROXY_PORT proxy / $SMTP_PLAIN_PORT plain; logs in $DIR/log"
