package policyd

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/snapshot"
)

// baseYAML is the configuration of the tests: policy mode, no inline
// SMTP service (Postfix owns port 25), an inline IMAP service with a grant.
const baseYAML = `services:
  imap: { listen: ":143", backend: "127.0.0.1:1", grant: "127.0.0.0/8" }
local_domains: "example.com"
login_restrictions: [ "alice@example.com=127.0.0.0/16" ]
intrusion_prevention:
  smtp: { failed_logins: 3, relay_denials: 2, message_size: 1000B, tarpit_accounts: "trap@example.com", connections_per_minute: 50 }
  imap_pop3: { failed_logins: 5 }
`

// newEngine builds an engine from yaml (baseYAML when empty).
func newEngine(t testing.TB, yaml string) *guard.Engine {
	t.Helper()
	if yaml == "" {
		yaml = baseYAML
	}
	path := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	eng := newEngineAt(t, path)
	t.Cleanup(func() { eng.Close() })
	return eng
}

// newEngineAt builds an engine from the configuration file at path; the
// engine is never closed (the end-to-end tests share one per binary).
func newEngineAt(t testing.TB, path string) *guard.Engine {
	t.Helper()
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// listen returns a loopback listener closed with the test.
func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs srv on a loopback listener until the test ends and returns
// its address.
func servePostfix(t testing.TB, p *Postfix) string {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	return ln.Addr().String()
}

// pfClient is a Postfix smtpd's policy client.
type pfClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialPostfix(t testing.TB, addr string) *pfClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &pfClient{t: t, c: c, r: bufio.NewReader(c)}
}

// ask sends one request (attributes as "name=value" strings, request=
// smtpd_access_policy added) and returns the action.
func (p *pfClient) ask(attrs ...string) string {
	p.t.Helper()
	var b strings.Builder
	b.WriteString("request=smtpd_access_policy\n")
	for _, a := range attrs {
		b.WriteString(a + "\n")
	}
	b.WriteString("\n")
	if _, err := p.c.Write([]byte(b.String())); err != nil {
		p.t.Fatal(err)
	}
	line, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("reading the answer: %v", err)
	}
	if empty, err := p.r.ReadString('\n'); err != nil || empty != "\n" {
		p.t.Fatalf("answer not ended by an empty line: %q %v", empty, err)
	}
	if !strings.HasPrefix(line, "action=") {
		p.t.Fatalf("answer %q", line)
	}
	return strings.TrimSuffix(strings.TrimPrefix(line, "action="), "\n")
}

func blocked(eng *guard.Engine, addr string) bool {
	_, ok := eng.BlockOf(netip.MustParseAddr(addr))
	return ok
}
