package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// Sync: carol's mailbox (which no other subtest reads or changes) gets
// messages through LMTP; mbsync syncs it into a Maildir once directly from
// Dovecot's plain IMAP port and then through postern (STARTTLS, imaps, and
// plain IMAP from an address allowed plaintext logins); fetchmail
// downloads it into an mbox-like file once directly from Dovecot's plain
// POP3 port and then through postern (STLS, pop3s). The results must be
// equal byte for byte, ignoring only what mbsync makes up per run: the
// Maildir file names' time, pid, counter and host name (the IMAP UID and
// the flags in the name are compared), the X-TUID header field it writes
// into every message (a random transaction id), and its state files
// (.uidvalidity, .mbsyncstate: the local UIDVALIDITY and sync state).
// mbsync and fetchmail cannot send PROXY headers: they connect to a
// forwarder of the test that plays the load balancer (a trusted upstream)
// and sends one for 203.0.113.4x, inside carol's login restriction.
func testSync(t *testing.T, s *mailSuite) {
	// The mailbox: the transparency message, 8-bit text, an empty body,
	// a 200 KB attachment-like body.
	token := uniq("sync")
	msgs := [][]byte{
		readMessage(token + "-1"),
		crlf("From: x@example.test\nTo: carol@other.test\nSubject: " + token + "-2\n\nline\n"),
		crlf("From: x@example.test\nSubject: " + token + "-3\n\n"),
		crlf("From: x@example.test\nSubject: " + token + "-4\nContent-Type: application/octet-stream\n\n" + strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTAx\n", 2800)),
	}
	for _, m := range msgs {
		lmtpDeliver(t, s.env, carol, m)
	}
	waitMessages(t, s.env, carol, token, len(msgs))
	mark := s.env.LogMark(t, "dovecot")

	direct := mbsync(t, "direct", s.env.IMAPPlain, "None", "")
	if len(direct) < len(msgs) {
		t.Fatalf("mbsync directly: %d messages, want at least %d", len(direct), len(msgs))
	}
	n := 0
	for _, m := range direct {
		if bytes.Contains(m.body, []byte(token)) {
			n++
		}
	}
	if n != len(msgs) {
		t.Fatalf("mbsync directly: %d of the test's messages, want %d", n, len(msgs))
	}
	for _, tc := range []struct{ name, target, src, tlsType string }{
		{"STARTTLS", s.gw.IMAP, "203.0.113.40", "STARTTLS"},
		{"IMAPS", s.gw.IMAPS, "203.0.113.41", "IMAPS"},
		{"Plain", s.gw.IMAP, "203.0.113.42", "None"},
	} {
		fwd := forwarder(t, tc.target, netip.MustParseAddr(tc.src))
		got := mbsync(t, "postern-"+tc.name, fwd, tc.tlsType, s.gw.CertFile)
		sameMaildir(t, "mbsync "+tc.name, direct, got)
		waitDovecot(t, s.env, mark, 1, loginLine("imap", carol, tc.src)...)
	}

	fdirect := fetchmail(t, "direct", s.env.POP3Plain, "", "")
	for i := range msgs {
		if !bytes.Contains(fdirect, []byte(fmt.Sprintf("Subject: %s-%d\r\n", token, i+1))) &&
			!bytes.Contains(fdirect, []byte(fmt.Sprintf("Subject: %s-%d\n", token, i+1))) {
			t.Fatalf("fetchmail directly: message %d missing (%d bytes)", i+1, len(fdirect))
		}
	}
	for _, tc := range []struct{ name, target, src, mode string }{
		{"STLS", s.gw.POP3, "203.0.113.43", "stls"},
		{"POP3S", s.gw.POP3S, "203.0.113.44", "ssl"},
	} {
		fwd := forwarder(t, tc.target, netip.MustParseAddr(tc.src))
		got := fetchmail(t, "postern-"+tc.name, fwd, tc.mode, s.gw.CertFile)
		sameBytes(t, "fetchmail "+tc.name+" through postern vs directly", fdirect, got)
		waitDovecot(t, s.env, mark, 1, loginLine("pop3", carol, tc.src)...)
	}
}

// syncedMessage is one message mbsync wrote: the IMAP UID and flags from
// its file name, and the file.
type syncedMessage struct {
	uid, flags string
	body       []byte
}

var mbsyncName = regexp.MustCompile(`^[0-9]+\.[0-9]+_[0-9]+\.[^,]+,U=([0-9]+):2,([A-Z]*)$`)

// mbsync syncs carol's INBOX from addr (SSLType tlsType) into a new
// Maildir and returns its messages by UID.
func mbsync(t *testing.T, name, addr, tlsType, cert string) map[string]syncedMessage {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	cfg := fmt.Sprintf(`IMAPAccount carol
Host %s
Port %s
User %s
Pass %s
SSLType %s
AuthMechs PLAIN LOGIN
`, host, port, carol, carolPass, tlsType)
	if cert != "" {
		cfg += "CertificateFile " + cert + "\nSystemCertificates no\n"
	}
	if tlsType != "None" {
		// isync 1.4 checks only DNS names: the certificate's is localhost.
		cfg = strings.Replace(cfg, "Host 127.0.0.1", "Host localhost", 1)
	}
	cfg += fmt.Sprintf(`
IMAPStore remote
Account carol

MaildirStore local
Path %[1]s/
Inbox %[1]s/INBOX

Channel inbox
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
`, dir)
	rc := filepath.Join(t.TempDir(), "mbsyncrc")
	if err := os.WriteFile(rc, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "mbsync", "-c", rc, "-a")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mbsync (%s, SSLType %s, %s): %v\n%s", name, tlsType, addr, err, out)
	}
	got := map[string]syncedMessage{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, "INBOX", sub))
		if err != nil {
			t.Fatalf("mbsync (%s): %v\n%s", name, err, out)
		}
		for _, e := range ents {
			m := mbsyncName.FindStringSubmatch(e.Name())
			if m == nil {
				t.Fatalf("mbsync (%s) wrote an unexpected file %s/%s", name, sub, e.Name())
			}
			b, err := os.ReadFile(filepath.Join(dir, "INBOX", sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			got[m[1]] = syncedMessage{uid: m[1], flags: sub + ":" + m[2], body: b}
		}
	}
	return got
}

// sameMaildir compares two mbsync results message by message.
func sameMaildir(t *testing.T, what string, want, got map[string]syncedMessage) {
	t.Helper()
	var uids []string
	for u := range want {
		uids = append(uids, u)
	}
	sort.Strings(uids)
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d", what, len(got), len(want))
	}
	for _, u := range uids {
		w, g := want[u], got[u]
		if g.body == nil {
			t.Fatalf("%s: no message with UID %s", what, u)
		}
		if w.flags != g.flags {
			t.Fatalf("%s: UID %s has flags %q, want %q", what, u, g.flags, w.flags)
		}
		sameBytes(t, fmt.Sprintf("%s: UID %s", what, u), withoutTUID(w.body), withoutTUID(g.body))
	}
}

// tuidRe is the X-TUID field mbsync writes into each message it stores: a
// random transaction id of that run, the one part of the files that
// legitimately differs.
var tuidRe = regexp.MustCompile(`(?m)^X-TUID: [A-Za-z0-9+/]+\n`)

// withoutTUID returns b without its (first) X-TUID field in the header.
func withoutTUID(b []byte) []byte {
	end := bytes.Index(b, []byte("\n\n"))
	if end < 0 {
		end = len(b)
	}
	loc := tuidRe.FindIndex(b[:end+1])
	if loc == nil {
		return b
	}
	return append(append([]byte(nil), b[:loc[0]]...), b[loc[1]:]...)
}

// fetchmail downloads every message of carol's mailbox from addr (mode ""
// plain, "stls" or "ssl"), keeping them on the server, into one file
// through an MDA (cat >> FILE), and returns the file. --invisible: no
// Received field of fetchmail's own (it would name the server and time).
func fetchmail(t *testing.T, name, addr, mode, cert string) []byte {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(dir, "mbox")
	tlsOpts := "sslproto ''"
	switch mode {
	case "stls":
		tlsOpts = fmt.Sprintf("sslproto tls1.2+ sslcertck sslcertfile %q", cert)
	case "ssl":
		tlsOpts = fmt.Sprintf("ssl sslcertck sslcertfile %q", cert)
	}
	if mode != "" {
		host = "localhost" // the name in the gateway's certificate
	}
	rc := fmt.Sprintf("poll %s service %s protocol POP3 user %q password %q %s keep fetchall no rewrite mda \"cat >> %s\"\n",
		host, port, carol, carolPass, tlsOpts, out)
	rcPath := filepath.Join(dir, "fetchmailrc")
	if err := os.WriteFile(rcPath, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "fetchmail", "-f", rcPath, "--invisible", "--nosyslog", "--idfile", filepath.Join(dir, "fetchids"), "-v")
	cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fetchmail (%s, %s): %v\n%s", name, addr, err, log)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("fetchmail (%s): %v\n%s", name, err, log)
	}
	return b
}
