package policyd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
)

// nginxE2EYAML is the engine of postern's auth_http server in the nginx
// end-to-end test: bob may log in from 203.0.113.128/25 only.
const nginxE2EYAML = `local_domains: "example.test; other.test"
login_restrictions: [ "bob@example.test=203.0.113.128/25" ]
intrusion_prevention:
  imap_pop3: { failed_logins: 5 }
`

// nginxMail runs postern's auth_http server on its own engine and a real
// nginx mail proxy (Debian's libnginx-mod-mail) asking it, in front of
// the test backends' Dovecot; nginx reads the client's address from a
// PROXY header and hands it to Dovecot in one. It returns nginx's IMAP
// and POP3 addresses and the engine.
func nginxMail(t *testing.T, w *e2eWorld) (imap, pop3 string, eng *guard.Engine) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatal("nginx is not installed (apt-get install nginx libnginx-mod-mail)")
	}
	const module = "/usr/lib/nginx/modules/ngx_mail_module.so"
	if _, err := os.Stat(module); err != nil {
		t.Fatal("nginx's mail module is not installed (apt-get install libnginx-mod-mail)")
	}
	eng = newEngine(t, nginxE2EYAML)
	n := NewNginx(eng, NginxOptions{
		IMAP:           netip.MustParseAddrPort(w.env.IMAPProxy),
		POP3:           netip.MustParseAddrPort(w.env.POP3Proxy),
		BackendTimeout: 10 * time.Second,
	})
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- n.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	imap, pop3 = free(), free()
	dir := t.TempDir()
	conf := fmt.Sprintf(`load_module %s;
pid %s/nginx.pid;
error_log %s/error.log info;
worker_processes 1;
events { worker_connections 64; }
mail {
    server_name mail.example.test;
    auth_http %s/auth;
    auth_http_timeout 30s;
    proxy_pass_error_message on;
    proxy_protocol on;
    set_real_ip_from 127.0.0.0/8;
    server { listen %s proxy_protocol; protocol imap; }
    server { listen %s proxy_protocol; protocol pop3; }
}
`, module, dir, dir, ln.Addr().String(), imap, pop3)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", path, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", pop3, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatal("nginx exited at start")
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("nginx does not listen on %s: %v", pop3, err)
		}
	}
	return imap, pop3, eng
}

// loginVia logs in over IMAP at addr from src and returns the tagged reply.
func (w *e2eWorld) loginVia(t *testing.T, addr, src, user, pass string) string {
	t.Helper()
	l := w.dial(t, addr, src)
	defer l.c.Close()
	if g := l.read(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting %q", g)
	}
	l.send(`a LOGIN "` + user + `" "` + pass + `"`)
	for range 100 {
		if s := l.read(); strings.HasPrefix(s, "a ") {
			if strings.HasPrefix(s, "a OK") {
				l.send("b LOGOUT")
			}
			return s
		}
	}
	t.Fatal("no tagged reply")
	return ""
}

// nginx's mail proxy with postern as its auth_http server, in front of
// real Dovecot: a right login goes through; five wrong passwords block
// the address, and the right one is then refused with postern's text;
// a restricted account is refused with its right password from outside
// its network and logs in from inside it. POP3 logs in too.
func TestE2ENginxAuthHTTP(t *testing.T) {
	w := world(t)
	imap, pop3, eng := nginxMail(t, w)
	alice := w.env.Users["alice@example.test"]
	if r := w.loginVia(t, imap, "203.0.113.110:4000", "alice@example.test", alice); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("right password through nginx: %q", r)
	}

	const src = "203.0.113.111"
	for i := range 5 {
		r := w.loginVia(t, imap, src+":4000", "alice@example.test", fmt.Sprintf("wrong-%d", i))
		if !strings.HasPrefix(r, "a NO") {
			t.Fatalf("wrong password %d: %q", i+1, r)
		}
		if i < 4 && !strings.Contains(r, ngxInvalid) {
			t.Errorf("wrong password %d: %q, want %q", i+1, r, ngxInvalid)
		}
	}
	waitBlocked(t, eng, src)
	if r := w.loginVia(t, imap, src+":4001", "alice@example.test", alice); !strings.HasPrefix(r, "a NO") || !strings.Contains(r, "Blocked (") {
		t.Fatalf("right password from the blocked address: %q", r)
	}

	bob := w.env.Users["bob@example.test"]
	if r := w.loginVia(t, imap, "203.0.113.112:4000", "bob@example.test", bob); !strings.HasPrefix(r, "a NO") || !strings.Contains(r, ngxInvalid) {
		t.Fatalf("restricted account from outside its network: %q", r)
	}
	if r := w.loginVia(t, imap, "203.0.113.130:4000", "bob@example.test", bob); !strings.HasPrefix(r, "a OK") {
		t.Fatalf("restricted account from its network: %q", r)
	}

	l := w.dial(t, pop3, "203.0.113.113:4000")
	if g := l.read(); !strings.HasPrefix(g, "+OK") {
		t.Fatalf("POP3 greeting %q", g)
	}
	l.send("USER alice@example.test")
	if r := l.read(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("USER: %q", r)
	}
	l.send("PASS " + alice)
	if r := l.read(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("POP3 right password through nginx: %q", r)
	}
	l.send("STAT")
	if r := l.read(); !strings.HasPrefix(r, "+OK") {
		t.Fatalf("STAT after the login: %q", r)
	}
	l.send("QUIT")
}
