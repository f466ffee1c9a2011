#!/usr/bin/env bash
# verify.sh DIR — prove, with real clients, that the backends start.sh DIR
# started behave as docs/E2E.md says: logins through PROXY v1/v2 with the
# claimed client address in the logs, SMTP reply codes, delivery into the
# Maildir, XCLIENT, STARTTLS and implicit TLS.
# Clients: curl (PROXY v1 only: --haproxy-protocol sends the real address),
# swaks (--proxy-version 2 --proxy-source), and pxclient.py (python3 imaplib,
# poplib, smtplib after a PROXY v2 header).
# One line per check, then "N passed, N failed"; exit 1 when any failed.
set -uo pipefail
BE_SELF=verify.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# = 1 ] || be_die "usage: verify.sh DIR"
DIR=$(be_dir "$1")
[ -f "$DIR/backends.env" ] || be_die "no $DIR/backends.env: start.sh $DIR first"
# shellcheck disable=SC1091
. "$DIR/backends.env"
for tool in curl swaks /usr/bin/python3; do command -v "$tool" > /dev/null || be_die "$tool is missing (start.sh installs it)"; done

H=127.0.0.1
IMAP_PX=$POSTERN_BACKENDS_IMAP_PROXY_PORT IMAP_PL=$POSTERN_BACKENDS_IMAP_PLAIN_PORT IMAPS_PX=$POSTERN_BACKENDS_IMAPS_PROXY_PORT
POP3_PX=$POSTERN_BACKENDS_POP3_PROXY_PORT POP3_PL=$POSTERN_BACKENDS_POP3_PLAIN_PORT POP3S_PX=$POSTERN_BACKENDS_POP3S_PROXY_PORT
SMTP_PX=$POSTERN_BACKENDS_SMTP_PROXY_PORT SMTP_PL=$POSTERN_BACKENDS_SMTP_PLAIN_PORT LMTP=$POSTERN_BACKENDS_LMTP_PORT
DLOG=$POSTERN_BACKENDS_DOVECOT_LOG PLOG=$POSTERN_BACKENDS_POSTFIX_LOG CERT=$POSTERN_BACKENDS_TLS_CERT
PX=(/usr/bin/python3 "$BE_HOME/pxclient.py")
TAG=verify-$$-$(date +%s)   # makes this run's subjects unique
# Logs and maildirs outlive a restart: only look at what this run adds.
DLOG_FROM=$(( $(stat -c %s "$DLOG" 2>/dev/null || echo 0) + 1 ))
PLOG_FROM=$(( $(stat -c %s "$PLOG" 2>/dev/null || echo 0) + 1 ))

pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok    $1"; }
# shellcheck disable=SC2001  # indent every line of a multi-line text
bad() { fail=$((fail + 1)); echo "FAIL  $1"; [ -z "${2:-}" ] || sed 's/^/        /' <<< "$2" | head -n 8; }
# expect NAME REGEX OUTPUT
expect() { if grep -Eq -- "$2" <<< "$3"; then ok "$1"; else bad "$1" "expected /$2/, got: $3"; fi; }
# exit_is NAME WANT GOT OUTPUT
exit_is() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "exit $3 (want $2): $4"; fi; }
# logged NAME dovecot|postfix REGEX: the log gains a matching line within 5 s
logged() {
  local file from
  case $2 in dovecot) file=$DLOG from=$DLOG_FROM ;; postfix) file=$PLOG from=$PLOG_FROM ;; esac
  for _ in $(seq 1 100); do
    tail -c +"$from" "$file" 2>/dev/null | grep -Eq -- "$3" && { ok "$1"; return; }
    sleep 0.05
  done
  bad "$1" "no line matching /$3/ in $file"
}
# maildir_has NAME USER TEXT: a message holding TEXT lands in USER's Maildir within 5 s
maildir_has() {
  local user=$2 md f
  md=$POSTERN_BACKENDS_MAIL_ROOT/${user#*@}/${user%@*}/Maildir
  for _ in $(seq 1 100); do
    f=$(grep -rlF -- "$3" "$md/new" "$md/cur" 2>/dev/null | head -n 1)
    [ -n "$f" ] && { ok "$1 (${f#"$DIR"/})"; return; }
    sleep 0.05
  done
  bad "$1" "nothing with '$3' in $md/{new,cur}"
}
# swaks_px SRC ARGS...: swaks to the SMTP PROXY port, header claiming SRC
swaks_px() {
  local src=$1 fam=AF_INET dst=127.0.0.1; shift
  if [[ $src == *:* ]]; then fam=AF_INET6 dst=::ffff:127.0.0.1; fi
  swaks --server "$H:$SMTP_PX" --helo client.test --timeout 15 \
        --proxy-version 2 --proxy-family "$fam" --proxy-source "$src" --proxy-source-port 40000 \
        --proxy-dest "$dst" --proxy-dest-port "$SMTP_PX" "$@" 2>&1
}
# raw PORT TEXT: send TEXT without any header, print what comes back (≤8 s)
raw() {
  /usr/bin/python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=8)
s.sendall(sys.argv[2].encode())
try:
    data = s.recv(4096)
    print(data.decode(errors="replace").strip() if data else "closed")
except OSError as e:
    print("closed:", e)
EOF
}

echo "== Dovecot IMAP and POP3 ($H: IMAP $IMAP_PX/$IMAP_PL/$IMAPS_PX, POP3 $POP3_PX/$POP3_PL/$POP3S_PX)"
out=$(curl -sS --max-time 10 --haproxy-protocol "imap://$H:$IMAP_PX/" -u alice@example.test:alice-pass-1 2>&1)
expect "curl IMAP login through PROXY v1 on $IMAP_PX" 'LIST .*INBOX' "$out"
out=$(curl -sS --max-time 10 "imap://$H:$IMAP_PL/" -u alice@example.test:alice-pass-1 2>&1)
expect "curl IMAP login without PROXY on $IMAP_PL" 'LIST .*INBOX' "$out"
out=$(curl -sS --max-time 10 --haproxy-protocol "imap://$H:$IMAP_PX/" -u alice@example.test:wrong 2>&1); rc=$?
exit_is "curl IMAP wrong password through PROXY v1: denied (curl 67)" 67 $rc "$out"
out=$(curl -sS --max-time 10 --haproxy-protocol "pop3://$H:$POP3_PX/" -u bob@example.test:bob-pass-2 2>&1); rc=$?
exit_is "curl POP3 login through PROXY v1 on $POP3_PX" 0 $rc "$out"
out=$(curl -sS --max-time 10 "pop3://$H:$POP3_PL/" -u bob@example.test:bob-pass-2 2>&1); rc=$?
exit_is "curl POP3 login without PROXY on $POP3_PL" 0 $rc "$out"
out=$(curl -sS --max-time 10 "pop3://$H:$POP3_PL/" -u bob@example.test:wrong 2>&1); rc=$?
exit_is "curl POP3 wrong password: denied (curl 67)" 67 $rc "$out"

out=$("${PX[@]}" imap "$H:$IMAP_PX" 203.0.113.7 alice@example.test alice-pass-1 2>&1)
expect "imaplib + PROXY v2 from 203.0.113.7: LOGIN OK" '^LOGIN OK' "$out"
logged "  Dovecot logs the login with rip=203.0.113.7" dovecot 'imap-login: Info: Login: user=<alice@example.test>.*rip=203\.0\.113\.7,'
out=$("${PX[@]}" imap "$H:$IMAP_PX" 203.0.113.8 alice@example.test wrong 2>&1)
expect "imaplib + PROXY v2, wrong password: NO [AUTHENTICATIONFAILED]" '^LOGIN NO .*AUTHENTICATIONFAILED' "$out"
logged "  Dovecot logs the failure with rip=203.0.113.8" dovecot 'auth failed.*user=<alice@example.test>.*rip=203\.0\.113\.8,'
out=$("${PX[@]}" imap "$H:$IMAP_PX" 203.0.113.9 nobody@example.test whatever 2>&1)
expect "imaplib + PROXY v2, unknown user: NO [AUTHENTICATIONFAILED]" '^LOGIN NO .*AUTHENTICATIONFAILED' "$out"
out=$("${PX[@]}" pop3 "$H:$POP3_PX" 203.0.113.7 bob@example.test bob-pass-2 2>&1)
expect "poplib + PROXY v2 from 203.0.113.7: +OK Logged in." '^PASS \+OK Logged in' "$out"
logged "  Dovecot logs the POP3 login with rip=203.0.113.7" dovecot 'pop3-login: Info: Login: user=<bob@example.test>.*rip=203\.0\.113\.7,'
out=$("${PX[@]}" pop3 "$H:$POP3_PX" '[2001:db8::7]:40007' bob@example.test bob-pass-2 2>&1)
expect "poplib + PROXY v2 from IPv6 2001:db8::7: +OK" '^PASS \+OK' "$out"
logged "  Dovecot logs rip=2001:db8::7" dovecot 'pop3-login: Info: Login: user=<bob@example.test>.*rip=2001:db8::7,'
out=$("${PX[@]}" pop3 "$H:$POP3_PX" 198.51.100.9 bob@example.test wrong 2>&1)
expect "poplib + PROXY v2, wrong password: -ERR [AUTH]" '^PASS -ERR \[AUTH\]' "$out"
out=$("${PX[@]}" imap "$H:$IMAP_PX" local carol@other.test carol-pass-3 2>&1)
expect "imaplib + PROXY v2 LOCAL (health check): LOGIN OK" '^LOGIN OK' "$out"
out=$(raw "$IMAP_PX" $'a LOGIN alice@example.test alice-pass-1\r\n')
expect "IMAP PROXY port without a header: dropped" '^closed' "$out"

echo "== Dovecot TLS (certificate $CERT)"
out=$(curl -sS --max-time 10 --ssl-reqd --cacert "$CERT" "imap://$H:$IMAP_PL/" -u alice@example.test:alice-pass-1 2>&1)
expect "curl IMAP STARTTLS (verified) on $IMAP_PL" 'LIST .*INBOX' "$out"
out=$("${PX[@]}" imap "$H:$IMAP_PX" 203.0.113.31 alice@example.test alice-pass-1 --starttls --cafile "$CERT" 2>&1)
expect "imaplib + PROXY v2 + STARTTLS (verified): LOGIN OK" '^LOGIN OK' "$out"
logged "  Dovecot logs the TLS login with rip=203.0.113.31" dovecot 'imap-login: Info: Login: user=<alice@example.test>.*rip=203\.0\.113\.31,.*TLS'
out=$("${PX[@]}" imap "$H:$IMAPS_PX" 203.0.113.32 alice@example.test alice-pass-1 --tls --cafile "$CERT" 2>&1)
expect "imaplib implicit TLS after PROXY v2 on $IMAPS_PX: LOGIN OK" '^LOGIN OK' "$out"
out=$("${PX[@]}" pop3 "$H:$POP3_PX" 203.0.113.33 bob@example.test bob-pass-2 --starttls --cafile "$CERT" 2>&1)
expect "poplib + PROXY v2 + STLS (verified): +OK" '^PASS \+OK' "$out"
out=$(curl -sS --max-time 10 --haproxy-protocol --cacert "$CERT" "pop3s://$H:$POP3S_PX/" -u bob@example.test:bob-pass-2 2>&1); rc=$?
exit_is "curl POP3 implicit TLS after PROXY v1 on $POP3S_PX" 0 $rc "$out"

echo "== Postfix SMTP ($H: $SMTP_PX PROXY, $SMTP_PL plain + XCLIENT; LMTP $LMTP)"
out=$(swaks_px 203.0.113.7 --from sender@remote.test --to alice@example.test --header "Subject: $TAG-swaks")
expect "swaks + PROXY v2 from 203.0.113.7: mail to alice queued" '<-  250 2\.0\.0 Ok: queued' "$out"
logged "  Postfix logs client=unknown[203.0.113.7]" postfix 'client=unknown\[203\.0\.113\.7\]'
maildir_has "  the message lands in alice's Maildir" alice@example.test "$TAG-swaks"
out=$(swaks_px 203.0.113.22 --from sender@remote.test --to nobody@example.test)
expect "unknown user: 550 5.1.1" '<\*\* +550 5\.1\.1 <nobody@example\.test>: Recipient address rejected: User unknown' "$out"
out=$(swaks_px 203.0.113.23 --from sender@remote.test --to victim@elsewhere.invalid)
expect "relay without AUTH: 554 5.7.1 Relay access denied" '<\*\* +554 5\.7\.1 .*Relay access denied' "$out"
logged "  Postfix logs the reject for unknown[203.0.113.23]" postfix 'reject: RCPT from unknown\[203\.0\.113\.23\]:40000: 554 5\.7\.1'
out=$(swaks_px 203.0.113.24 --from alice@example.test --to victim@elsewhere.invalid \
        --auth PLAIN --auth-user alice@example.test --auth-password wrong --quit-after AUTH)
expect "AUTH PLAIN wrong password: 535 5.7.8" '<\*\* +535 5\.7\.8 Error: authentication failed' "$out"
logged "  Postfix logs the SASL failure for unknown[203.0.113.24]" postfix 'unknown\[203\.0\.113\.24\]:40000: SASL PLAIN authentication failed'
out=$(swaks_px 203.0.113.25 --from alice@example.test --to victim@elsewhere.invalid \
        --auth PLAIN --auth-user alice@example.test --auth-password alice-pass-1 --quit-after RCPT)
expect "AUTH PLAIN right password: 235 2.7.0" '<-  235 2\.7\.0 Authentication successful' "$out"
expect "  then relaying is allowed: 250 2.1.5" '<-  250 2\.1\.5 Ok' "$out"
out=$("${PX[@]}" smtp "$H:$SMTP_PX" 203.0.113.26 sender@remote.test bob@example.test --size $((POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT + 1)) 2>&1)
expect "MAIL FROM SIZE= over the limit: 552 5.3.4" '^MAIL 552 5\.3\.4 Message size exceeds fixed limit' "$out"
out=$("${PX[@]}" smtp "$H:$SMTP_PX" 203.0.113.27 sender@remote.test bob@example.test --body-bytes $((POSTERN_BACKENDS_MESSAGE_SIZE_LIMIT + 100000)) 2>&1)
expect "DATA over the limit without SIZE=: 552 5.3.4" '^DATA 552 5\.3\.4 Error: message file too big' "$out"
out=$("${PX[@]}" smtp "$H:$SMTP_PX" '[2001:db8::25]:40025' sender@remote.test bob@example.test --subject "$TAG-v6" 2>&1)
expect "smtplib + PROXY v2 from IPv6 2001:db8::25: queued" '^DATA 250 2\.0\.0 Ok: queued' "$out"
logged "  Postfix logs client=unknown[2001:db8::25]" postfix 'client=unknown\[2001:db8::25\]'
maildir_has "  the message lands in bob's Maildir" bob@example.test "$TAG-v6"
out=$(raw "$SMTP_PX" $'EHLO client.test\r\n')
expect "SMTP PROXY port without a header: 421 4.3.0" '^421 4\.3\.0' "$out"
out=$(swaks --server "$H:$SMTP_PL" --helo client.test --timeout 15 --xclient-addr 198.51.100.23 \
        --from sender@remote.test --to carol@other.test --header "Subject: $TAG-xclient" 2>&1)
expect "plain port + XCLIENT ADDR=198.51.100.23: queued" '<-  250 2\.0\.0 Ok: queued' "$out"
logged "  Postfix logs the XCLIENT address" postfix 'client=unknown\[198\.51\.100\.23\]'
maildir_has "  the message lands in carol's Maildir" carol@other.test "$TAG-xclient"

echo "== Postfix STARTTLS"
out=$(swaks_px 203.0.113.41 --tls --from sender@remote.test --to alice@example.test --header "Subject: $TAG-tls" 2>&1)
expect "swaks + PROXY v2 + STARTTLS: 220, then queued" '<-  220 2\.0\.0 Ready to start TLS' "$out"
expect "  ...and the message is queued" '<~  250 2\.0\.0 Ok: queued' "$out"
logged "  Postfix logs the TLS connection from unknown[203.0.113.41]" postfix 'TLS connection established from unknown\[203\.0\.113\.41\]'
out=$(swaks --server "$H:$SMTP_PL" --helo client.test --timeout 15 --tls --quit-after EHLO 2>&1)
expect "swaks STARTTLS on the plain port $SMTP_PL" '<-  220 2\.0\.0 Ready to start TLS' "$out"
out=$("${PX[@]}" smtp "$H:$SMTP_PX" 203.0.113.42 alice@example.test victim@elsewhere.invalid \
        --starttls --cafile "$CERT" --auth alice@example.test alice-pass-1 --subject "$TAG-auth-tls" 2>&1)
expect "smtplib + PROXY v2 + STARTTLS (verified) + AUTH: 235" '^AUTH 235' "$out"
expect "  ...relayed message accepted" '^DATA 250 2\.0\.0 Ok: queued' "$out"

echo "== Dovecot LMTP"
out=$(swaks --server "$H:$LMTP" --protocol LMTP --helo client.test --timeout 15 \
        --from sender@remote.test --to bob@example.test --header "Subject: $TAG-lmtp" 2>&1)
expect "LMTP delivery to bob: 250 Saved" '<-  250 2\.0\.0 <bob@example\.test> .* Saved' "$out"
maildir_has "  the message lands in bob's Maildir" bob@example.test "$TAG-lmtp"

echo "$pass passed, $fail failed"
[ $fail = 0 ]
