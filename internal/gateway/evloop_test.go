package gateway

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/demo"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/tlsconf"
)

// With event_loops, the IMAP and POP3 sessions of direct clients run on
// the event loops, logins and what follows them work as without; a reload
// that turns it off leaves new sessions on goroutines.
func TestEventLoops(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops run on Linux")
	}
	be, cfg, conf := loopsGateway(t)
	writeConfig(t, cfg, conf(true))
	logs := new(syncBuffer)
	g, reload := runGateway(t, cfg, Options{Log: logs})
	session := func(svc service.Service) {
		t.Helper()
		c, r := dialFrom(t, "127.0.0.61", g.Addr(svc))
		defer c.Close()
		mailSession(t, svc, c, r)
	}
	session(service.IMAP)
	session(service.POP3)
	session(service.SMTP)
	if n := len(be.Deliveries()); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
	grp := g.loops.group.Load()
	if grp == nil {
		t.Fatal("event_loops: true started no loops")
	}
	// The three sessions, and the three listeners' accept loops, which
	// move to a loop after their first connection (each started before
	// that connection's session could end: posted after it, to the same
	// loop).
	st := grp.Stats()
	if st.Started.Load() != 6 || st.Detached.Load() != 0 {
		t.Fatalf("on the loops: %d started, %d left them; want 6 (3 sessions, 3 accept loops) and 0", st.Started.Load(), st.Detached.Load())
	}
	// Off at a reload: new sessions on goroutines.
	writeConfig(t, cfg, conf(false))
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 1)
	session(service.IMAP)
	if n := st.Started.Load(); n != 6 {
		t.Fatalf("after event_loops: false, %d handlers started on the loops, want 6", n)
	}
	// The IMAP listener's accept loop leaves its loop after that
	// connection, for a goroutine of its own.
	for deadline := time.Now().Add(10 * time.Second); st.Detached.Load() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d handlers left the loops, want 1 (the IMAP accept loop)", st.Detached.Load())
		}
	}
	session(service.IMAP) // accepted on that goroutine
}

// With event_loops, sessions over TLS work as over plain TCP: implicit
// TLS (993, 995, 465) runs on goroutines, and a session on 143 starts on
// a loop and leaves it for its STARTTLS handshake. (TLS sessions on the
// loops, handshake included, were measured and not kept:
// docs/benchmarks/issue17-round16.md.)
func TestEventLoopsTLS(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops run on Linux")
	}
	dir := t.TempDir()
	be, err := demo.Start(t.Context(), demo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	cert, key, err := tlsconf.SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tlsLine := fmt.Sprintf("tls: { cert: %q, key: %q }", cert, key)
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
event_loops: true
services:
  imap: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  imaps: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  pop3s: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
  smtps: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, %s }
local_domains: %q
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"),
		be.IMAP(), tlsLine, be.IMAP(), tlsLine, be.POP3(), tlsLine, be.SMTP(), tlsLine, demo.Domain))
	g, _ := runGateway(t, cfg, Options{Log: io.Discard})
	clientTLS := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}
	for _, svc := range []service.Service{service.IMAPS, service.POP3S, service.SMTPS} {
		raw, _ := dialFrom(t, "127.0.0.63", g.Addr(svc))
		c := tls.Client(raw, clientTLS)
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatalf("%s: handshake: %v", svc, err)
		}
		mailSession(t, svc, c, bufio.NewReader(c))
		c.Close()
	}
	// STARTTLS on 143, then the login over TLS.
	raw, r := dialFrom(t, "127.0.0.64", g.Addr(service.IMAP))
	readLine(t, r) // the greeting
	fmt.Fprintf(raw, "s STARTTLS\r\n")
	if l := readLine(t, r); !strings.HasPrefix(l, "s OK") {
		t.Fatalf("STARTTLS: %q", l)
	}
	c := tls.Client(raw, clientTLS)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := c.Handshake(); err != nil {
		t.Fatalf("STARTTLS handshake: %v", err)
	}
	alice := demo.Users()[0]
	tr := bufio.NewReader(c)
	fmt.Fprintf(c, "a LOGIN %s %s\r\nb LOGOUT\r\n", alice.Name, alice.Password)
	for want := "a OK"; ; {
		l := readLine(t, tr)
		if strings.HasPrefix(l, "a ") && !strings.HasPrefix(l, want) {
			t.Fatalf("login after STARTTLS: %q", l)
		}
		if strings.HasPrefix(l, "b ") {
			if !strings.HasPrefix(l, "b OK") {
				t.Fatalf("LOGOUT: %q", l)
			}
			break
		}
	}
	c.Close()
	if n := len(be.Deliveries()); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
	st := g.loops.group.Load().Stats()
	if st.Started.Load() != 2 || st.Detached.Load() != 1 {
		t.Fatalf("on the loops: %d started, %d left them; want 2 (the STARTTLS session, the imap listener's accept loop) and 1 (the STARTTLS session)", st.Started.Load(), st.Detached.Load())
	}
}

// On the event loops, a client that sends a command and closes its side
// at once (the command and its close arrive together) gets its answer,
// and the session ends then, not when its wait for the next command times
// out.
func TestEventLoopsCommandThenClose(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops run on Linux")
	}
	_, cfg, conf := loopsGateway(t)
	writeConfig(t, cfg, conf(true))
	g, _ := runGateway(t, cfg, Options{Log: io.Discard})
	for _, tc := range []struct {
		svc           service.Service
		command, want string
	}{
		{service.IMAP, "a NOOP", "a OK"},
		{service.POP3, "NOOP", "-ERR"}, // before login
		{service.SMTP, "NOOP", "250"},
	} {
		c, r := dialFrom(t, "127.0.0.62", g.Addr(tc.svc))
		c.SetDeadline(time.Now().Add(20 * time.Second))
		readLine(t, r) // the greeting
		start := time.Now()
		fmt.Fprintf(c, "%s\r\n", tc.command)
		c.(*net.TCPConn).CloseWrite()
		var got []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				if err != io.EOF {
					t.Fatalf("%s: after %q: %v", tc.svc, got, err)
				}
				break
			}
			got = append(got, strings.TrimRight(l, "\r\n"))
		}
		c.Close()
		if len(got) == 0 || !strings.HasPrefix(got[len(got)-1], tc.want) {
			t.Fatalf("%s: answer %q, want one ending with %q", tc.svc, got, tc.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%s: the session ended %v after the client's close", tc.svc, d)
		}
	}
	if st := g.loops.group.Load().Stats(); st.Started.Load() < 3 {
		t.Fatalf("%d sessions ran on the loops, want 3", st.Started.Load())
	}
}

// loopsGateway starts the demo backends and returns them, the path of a
// configuration to write, and the configuration of IMAP, POP3 and SMTP
// gateways to them with event_loops on or off.
func loopsGateway(t *testing.T) (be *demo.Backends, cfg string, conf func(on bool) string) {
	t.Helper()
	dir := t.TempDir()
	be, err := demo.Start(t.Context(), demo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be, filepath.Join(dir, "postern.yaml"), func(on bool) string {
		return fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
event_loops: %v
services:
  imap: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, plaintext_login: "127.0.0.0/8" }
  pop3: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2, plaintext_login: "127.0.0.0/8" }
  smtp: { listen: "127.0.0.1:0", backend: %q, backend_proxy: v2 }
local_domains: %q
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), on, be.IMAP(), be.POP3(), be.SMTP(), demo.Domain)
	}
}

// mailSession runs a session of svc's protocol (IMAP, POP3, SMTP) on c, r
// from the greeting: a login and a command, or a message to the demo
// user.
func mailSession(t *testing.T, svc service.Service, c net.Conn, r *bufio.Reader) {
	t.Helper()
	alice := demo.Users()[0]
	c.SetDeadline(time.Now().Add(20 * time.Second))
	greeting := readLine(t, r)
	if svc == service.IMAP || svc == service.IMAPS {
		if !strings.HasPrefix(greeting, "* OK") {
			t.Fatalf("greeting %q", greeting)
		}
		fmt.Fprintf(c, "a LOGIN %s %s\r\nb SELECT INBOX\r\nc LOGOUT\r\n", alice.Name, alice.Password)
		var got []string
		for {
			l := readLine(t, r)
			if tag, _, _ := strings.Cut(l, " "); tag == "a" || tag == "b" || tag == "c" {
				got = append(got, l)
				if tag == "c" {
					break
				}
			}
		}
		if len(got) != 3 || !strings.HasPrefix(got[0], "a OK") || !strings.HasPrefix(got[1], "b OK") || !strings.HasPrefix(got[2], "c OK") {
			t.Fatalf("IMAP session: %q", got)
		}
		return
	}
	if svc == service.SMTP || svc == service.SMTPS {
		if !strings.HasPrefix(greeting, "220") {
			t.Fatalf("greeting %q", greeting)
		}
		for _, step := range []struct{ send, want string }{
			{"EHLO client.example", "250 "}, {"MAIL FROM:<sender@example.org>", "250"},
			{"RCPT TO:<" + alice.Name + ">", "250"}, {"DATA", "354"},
			{"Subject: on a loop\r\n\r\nhello\r\n.", "250"}, {"QUIT", "221"},
		} {
			fmt.Fprintf(c, "%s\r\n", step.send)
			l := readLine(t, r)
			for len(l) > 3 && l[3] == '-' {
				l = readLine(t, r)
			}
			if !strings.HasPrefix(l, step.want) {
				t.Fatalf("SMTP %q: %q", step.send, l)
			}
		}
		return
	}
	if !strings.HasPrefix(greeting, "+OK") {
		t.Fatalf("greeting %q", greeting)
	}
	fmt.Fprintf(c, "USER %s\r\nPASS %s\r\nSTAT\r\nQUIT\r\n", alice.Name, alice.Password)
	for _, want := range []string{"+OK", "+OK", "+OK", "+OK"} {
		if l := readLine(t, r); !strings.HasPrefix(l, want) {
			t.Fatalf("POP3 session: %q", l)
		}
	}
}
