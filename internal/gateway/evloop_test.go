package gateway

import (
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
	alice := demo.Users()[0]
	session := func(svc service.Service) {
		t.Helper()
		c, r := dialFrom(t, "127.0.0.61", g.Addr(svc))
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		greeting := readLine(t, r)
		if svc == service.IMAP {
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
		if svc == service.SMTP {
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
	session(service.IMAP)
	session(service.POP3)
	session(service.SMTP)
	if n := len(be.Deliveries()); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
	grp := g.loops.group
	if grp == nil {
		t.Fatal("event_loops: true started no loops")
	}
	st := grp.Stats()
	if st.Started.Load() != 3 || st.Detached.Load() != 0 {
		t.Fatalf("on the loops: %d started, %d left them; want 3 and 0", st.Started.Load(), st.Detached.Load())
	}
	// Off at a reload: new sessions on goroutines.
	writeConfig(t, cfg, conf(false))
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 1)
	session(service.IMAP)
	if n := st.Started.Load(); n != 3 {
		t.Fatalf("after event_loops: false, %d sessions started on the loops, want 3", n)
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
	if st := g.loops.group.Stats(); st.Started.Load() < 3 {
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
