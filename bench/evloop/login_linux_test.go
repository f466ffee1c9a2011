//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// startChecks turns the checks on for the test with the configuration
// conf — -login when imap, -smtp-checks when smtp — its log lines going
// to a file whose contents the returned function gives.
func startChecks(t *testing.T, conf string, imap, smtp bool) (logged func() string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ck, err := newLoginChecks(ctx, path, int(logf.Fd()), false)
	if err != nil {
		t.Fatal(err)
	}
	ck.imap, ck.smtp = imap, smtp
	checks.Store(ck)
	t.Cleanup(func() {
		checks.Store(nil)
		cancel()
		ck.eng.Close()
		logf.Close()
	})
	return func() string {
		bs, err := os.ReadFile(logf.Name())
		if err != nil {
			t.Fatal(err)
		}
		return string(bs)
	}
}

// waitLogged polls the log until done says it has what the test waits
// for, at most 5 s, and returns it.
func waitLogged(t *testing.T, logged func() string, done func(string) bool) string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		log := logged()
		if done(log) || time.Now().After(deadline) {
			return log
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

// startChecked turns -login on for the test (see startChecks).
func startChecked(t *testing.T) (logged func() string) {
	t.Helper()
	return startChecks(t, `services:
  imap: { listen: "127.0.0.1:1", backend: "127.0.0.1:1", backend_proxy: v2, plaintext_login: "127.0.0.0/8" }
intrusion_prevention:
  imap_pop3: { failed_logins: 2 }
`, true, false)
}

// fakeDovecot serves one connection on ln as Dovecot's imap-login does for
// a checked session: the PROXY header, a greeting with SASL-IR and
// AUTH=PLAIN, AUTHENTICATE PLAIN answered OK for alice's password (NO
// otherwise), then LOGOUT. It reports the PROXY source and the decoded
// credentials, or an error.
func fakeDovecot(ln net.Listener, res chan<- string) {
	out := "error"
	defer func() { res <- out }()
	c, err := ln.Accept()
	if err != nil {
		out = err.Error()
		return
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		out = err.Error()
		return
	}
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	if err != nil {
		out = "PROXY header: " + err.Error()
		return
	}
	io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n")
	line, err := br.ReadString('\n')
	if err != nil {
		out = "credentials: " + err.Error()
		return
	}
	f := strings.Fields(line)
	if len(f) != 4 || f[1] != "AUTHENTICATE" || f[2] != "PLAIN" {
		out = fmt.Sprintf("credentials: %q", line)
		return
	}
	blob, err := base64.StdEncoding.DecodeString(f[3])
	if err != nil {
		out = "credentials: " + err.Error()
		return
	}
	out = h.SourceAddr.String() + " " + strings.ReplaceAll(string(blob), "\x00", "|")
	if string(blob) != "\x00alice\x00pa ss" {
		io.WriteString(c, f[0]+" NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
		return
	}
	io.WriteString(c, "* CAPABILITY IMAP4rev1 IDLE\r\n"+f[0]+" OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
	if line, err = br.ReadString('\n'); err != nil || !strings.HasSuffix(line, " LOGOUT\r\n") {
		out = fmt.Sprintf("after the login: %q %v", line, err)
		return
	}
	io.WriteString(c, "* BYE Logging out\r\n"+strings.Fields(line)[0]+" OK Logout completed.\r\n")
}

// TestCheckedLogin: with -login, the loop greets with the backend's
// capabilities, answers a command other than LOGIN itself, sends the login
// as AUTHENTICATE PLAIN with the PROXY header's client address, gives the
// client the backend's answer under its tag, relays after it, and logs
// the login; a refused password is answered NO and closes the connection.
func TestCheckedLogin(t *testing.T) { checkedLogin(t) }

// TestCheckedLoginStack is TestCheckedLogin with each session's reads on
// a coroutine of its own (-costs stack).
func TestCheckedLoginStack(t *testing.T) {
	costs.stack.Store(true) // until startLoop's cleanup
	before := coroReads.Load()
	checkedLogin(t)
	if coroReads.Load() == before {
		t.Error("no read was handled on a coroutine")
	}
}

func checkedLogin(t *testing.T) {
	logged := startChecked(t)
	ln := backendListener(t)
	addr := startLoop(t, service{name: "imap", backend: netip.MustParseAddrPort(ln.Addr().String())}, false)
	login := func(pass string) (string, string) {
		t.Helper()
		res := make(chan string, 1)
		go fakeDovecot(ln, res)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		deadline(t, c)
		io.WriteString(c, "x1 NOOP\r\nx2 LOGIN alice \""+pass+"\"\r\n")
		bs, _ := io.ReadAll(&readUntilClose{c: c, next: "x3 LOGOUT\r\n"})
		return <-res + " from " + c.LocalAddr().String(), string(bs)
	}
	got, answer := login("pa ss")
	if !strings.HasSuffix(got, " |alice|pa ss from "+got[:strings.IndexByte(got, ' ')]) {
		t.Errorf("backend: %s", got)
	}
	want := "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN] postern ready.\r\n" +
		"x1 BAD Error in IMAP command.\r\n" +
		"* CAPABILITY IMAP4rev1 IDLE\r\nx2 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n" +
		"* BYE Logging out\r\nx3 OK Logout completed.\r\n"
	if answer != want {
		t.Errorf("client got\n%q\nwant\n%q", answer, want)
	}
	got, answer = login("wrong")
	if !strings.Contains(got, " |alice|wrong") || !strings.HasSuffix(answer, "x2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n") {
		t.Errorf("a wrong password: backend %s, client %q", got, answer)
	}
	// The loop writes its log lines after the batch of events in which
	// it answered: the client may read its answer first.
	log := waitLogged(t, logged, func(log string) bool { return strings.Contains(log, " account=alice result=failed\n") })
	if n := strings.Count(log, " level=INFO msg=login service=imap client=127.0.0.1 account=alice result=ok\n"); n != 1 {
		t.Errorf("%d lines of the good login in the log:\n%s", n, log)
	}
	if !strings.Contains(log, " account=alice result=failed\n") {
		t.Errorf("no line of the failed login in the log:\n%s", log)
	}
}

// readUntilClose reads c; once it has seen the tagged OK of a LOGIN it
// sends next (the client's LOGOUT), and it reads until the connection
// closes.
type readUntilClose struct {
	c    net.Conn
	next string
	seen []byte
	sent bool
}

func (r *readUntilClose) Read(p []byte) (int, error) {
	n, err := r.c.Read(p)
	r.seen = append(r.seen, p[:n]...)
	if !r.sent && strings.Contains(string(r.seen), "x2 OK") {
		r.sent = true
		io.WriteString(r.c, r.next)
	}
	return n, err
}

// TestCheckedLogPipe: the log lines go to a pipe with raw writes, as
// postern's log writer makes them, and to a regular file (or with
// -login-log-runtime) through the runtime's entry.
func TestCheckedLogPipe(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(conf, []byte("services:\n  imap: { listen: \"127.0.0.1:1\", backend: \"127.0.0.1:1\" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	file, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for _, c := range []struct {
		fd         int
		viaRuntime bool
		raw        bool
	}{{int(pw.Fd()), false, true}, {int(pw.Fd()), true, false}, {int(file.Fd()), false, false}} {
		ck, err := newLoginChecks(t.Context(), conf, c.fd, c.viaRuntime)
		if err != nil {
			t.Fatal(err)
		}
		ck.eng.Close()
		if ck.raw != c.raw {
			t.Errorf("descriptor %d, through the runtime %v: raw %v, want %v", c.fd, c.viaRuntime, ck.raw, c.raw)
		}
		if c.raw {
			checks.Store(ck)
			l := &loop{}
			l.logLogin(&checked{src: netip.MustParseAddr("192.0.2.1"), user: "bob smith"}, "ok")
			l.flushLog()
			checks.Store(nil)
			buf := make([]byte, 512)
			n, err := pr.Read(buf)
			if err != nil || !strings.HasSuffix(string(buf[:n]), ` level=INFO msg=login service=imap client=192.0.2.1 account="bob smith" result=ok`+"\n") {
				t.Errorf("the pipe got %q, %v", buf[:n], err)
			}
		}
	}
}

// TestCheckedTimeout: a checked session whose client says nothing after
// the greeting is closed once checkTimeout has passed (to the second),
// with a word to the client; the backend's connection closes with it.
func TestCheckedTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a deadline of a second")
	}
	defer func(d time.Duration) { checkTimeout = d }(checkTimeout)
	checkTimeout = time.Second
	for _, c := range []struct {
		svc, greeting, bye string
		start              func(*testing.T) func() string
	}{
		{"imap", "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n", "* BYE Disconnected for inactivity.\r\n", startChecked},
		{"smtp", "220 fake.test ESMTP\r\n", "421 4.4.2 postern.bench.invalid Error: timeout exceeded\r\n", startSMTPChecks},
	} {
		t.Run(c.svc, func(t *testing.T) {
			c.start(t)
			ln := backendListener(t)
			addr := startLoop(t, service{name: c.svc, backend: netip.MustParseAddrPort(ln.Addr().String())}, false)
			closed := make(chan error, 1)
			go func() {
				b, err := ln.Accept()
				if err != nil {
					closed <- err
					return
				}
				defer b.Close()
				b.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(b)
				if _, err := proxyproto.Read(br); err != nil {
					closed <- err
					return
				}
				io.WriteString(b, c.greeting)
				_, err = io.ReadAll(br) // until the loop closes it
				closed <- err
			}()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			deadline(t, conn)
			start := time.Now()
			bs, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(string(bs), c.bye) {
				t.Errorf("client got %q, want it to end with %q", bs, c.bye)
			}
			if d := time.Since(start); d < checkTimeout || d > checkTimeout+3*time.Second {
				t.Errorf("closed after %v, want %v to the second", d, checkTimeout)
			}
			if err := <-closed; err != nil {
				t.Errorf("backend: %v", err)
			}
		})
	}
}
