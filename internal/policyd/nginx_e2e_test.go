package policyd

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
  smtp: { failed_logins: 3 }
`

// nginxE2ESecret is the shared secret nginx sends postern
// (auth_http_header); postern refuses requests without it.
const nginxE2ESecret = "e2e-secret-6f1d0c2a9b"

// nginxMail runs postern's auth_http server on its own engine and a real
// nginx mail proxy (Debian's libnginx-mod-mail) asking it, in front of
// the test backends' Dovecot; nginx reads the client's address from a
// PROXY header and hands it to Dovecot in one. nginx's SMTP proxy hands
// a login to Postfix's plain port with XCLIENT (ADDR and LOGIN), where
// postern checks the password with STARTTLS, XCLIENT and AUTH (Dovecot
// SASL), verifying the backend's certificate.
// It returns nginx's IMAP, POP3 and SMTP addresses and the engine.
func nginxMail(t *testing.T, w *e2eWorld) (imap, pop3, smtp string, eng *guard.Engine) {
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
		IMAP:             netip.MustParseAddrPort(w.env.IMAPProxy),
		POP3:             netip.MustParseAddrPort(w.env.POP3Proxy),
		SMTP:             netip.MustParseAddrPort(w.env.SMTPPlain),
		SMTPBackendProxy: "xclient",
		SMTPBackendTLS:   w.env.ClientTLS("127.0.0.1"),
		Secret:           []byte(nginxE2ESecret),
		BackendTimeout:   10 * time.Second,
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
	imap, pop3, smtp = free(), free(), free()
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
    auth_http_header X-Postern-Key %s;
    proxy_pass_error_message on;
    proxy_protocol on;
    set_real_ip_from 127.0.0.0/8;
    server { listen %s proxy_protocol; protocol imap; }
    server { listen %s proxy_protocol; protocol pop3; }
    server {
        listen %s proxy_protocol; protocol smtp;
        proxy_protocol off; xclient on;
        smtp_auth plain login;
    }
}
`, module, dir, dir, ln.Addr().String(), nginxE2ESecret, imap, pop3, smtp)
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
	return imap, pop3, smtp, eng
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
	imap, pop3, _, eng := nginxMail(t, w)
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

// The cost of postern as nginx's auth_http server: IMAP logins (right
// password) timed from LOGIN to the tagged OK, straight to Dovecot and
// through nginx (nginx asks postern, postern logs in to Dovecot once to
// check the password, nginx logs in again for the session). The figures
// are logged; BENCHMARKS.md records them.
func TestE2ENginxLoginLatency(t *testing.T) {
	w := world(t)
	imap, _, _, _ := nginxMail(t, w)
	pass := w.env.Users["alice@example.test"]
	measure := func(addr, prefix string, n int) (p50, p99 time.Duration) {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			l := w.dial(t, addr, fmt.Sprintf("%s.%d:4000", prefix, i+1))
			if g := l.read(); !strings.HasPrefix(g, "* OK") {
				t.Fatalf("greeting %q", g)
			}
			t0 := time.Now()
			l.send(`a LOGIN "alice@example.test" "` + pass + `"`)
			for {
				s := l.read()
				if strings.HasPrefix(s, "a ") {
					if !strings.HasPrefix(s, "a OK") {
						t.Fatalf("login: %q", s)
					}
					break
				}
			}
			lat = append(lat, time.Since(t0))
			l.send("b LOGOUT")
			l.c.Close()
		}
		slices.Sort(lat)
		return lat[n/2], lat[n*99/100]
	}
	// postern's answer alone: nginx's request to a server like nginx's.
	srv := NewNginx(newEngine(t, nginxE2EYAML), NginxOptions{IMAP: netip.MustParseAddrPort(w.env.IMAPProxy), BackendTimeout: 10 * time.Second})
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	ask := func(n int) (p50, p99 time.Duration) {
		lat := make([]time.Duration, 0, n)
		for i := range n {
			t0 := time.Now()
			if _, h := ngxAsk(t, "http://"+ln.Addr().String()+"/auth", "imap", "alice@example.test", pass, fmt.Sprintf("198.18.2.%d", i+1), "1"); h.Get("Auth-Status") != "OK" {
				t.Fatalf("auth_http: %v", h)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		return lat[n/2], lat[n*99/100]
	}
	const n = 100
	d50, d99 := measure(w.env.IMAPProxy, "198.18.0", n)
	n50, n99 := measure(imap, "198.18.1", n)
	a50, a99 := ask(n)
	t.Logf("IMAP login, %d each: straight to Dovecot p50 %v p99 %v; through nginx with postern's auth_http p50 %v p99 %v; postern's auth_http answer alone p50 %v p99 %v",
		n, d50, d99, n50, n99, a50, a99)
	if n50 > 2*time.Second {
		t.Errorf("a login through nginx takes %v (p50)", n50)
	}
}

// smtpAuthVia logs in over SMTP at addr from src with AUTH PLAIN and
// returns the AUTH reply's last line; logged in, it asks for a
// recipient elsewhere (relaying, which Postfix allows authenticated
// clients only) and returns that reply too.
func (w *e2eWorld) smtpAuthVia(t *testing.T, addr, src, user, pass string) (auth, rcpt string) {
	t.Helper()
	l := w.dial(t, addr, src)
	defer l.c.Close()
	if g := l.smtp(""); !strings.HasPrefix(g, "220") {
		t.Fatalf("SMTP greeting %q", g)
	}
	if r := l.smtp("EHLO client.test"); !strings.HasPrefix(r, "250") {
		t.Fatalf("EHLO: %q", r)
	}
	auth = l.smtp("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	if strings.HasPrefix(auth, "235") {
		if r := l.smtp("MAIL FROM:<" + user + ">"); !strings.HasPrefix(r, "250") {
			t.Fatalf("MAIL after the login: %q", r)
		}
		rcpt = l.smtp("RCPT TO:<someone@relay.example.net>")
	}
	l.send("QUIT")
	return auth, rcpt
}

// nginx's SMTP proxy with postern as its auth_http server, in front of
// real Postfix with Dovecot SASL: a right login is accepted and may relay
// (nginx hands the login to Postfix with XCLIENT LOGIN); three wrong
// passwords block the address, and the right one is then refused; a
// restricted account is refused with its right password from outside its
// network, and the wrong one counted.
func TestE2ENginxAuthHTTPSMTP(t *testing.T) {
	w := world(t)
	_, _, smtp, eng := nginxMail(t, w)
	alice := w.env.Users["alice@example.test"]
	auth, rcpt := w.smtpAuthVia(t, smtp, "203.0.113.120:4000", "alice@example.test", alice)
	if !strings.HasPrefix(auth, "235") {
		t.Fatalf("right password through nginx: %q", auth)
	}
	if !strings.HasPrefix(rcpt, "250") {
		t.Errorf("relaying after the login: %q, want 250 (Postfix did not take nginx's XCLIENT LOGIN)", rcpt)
	}

	const src = "203.0.113.121"
	for i := range 3 {
		auth, _ := w.smtpAuthVia(t, smtp, src+":4000", "alice@example.test", fmt.Sprintf("wrong-%d", i))
		if !strings.HasPrefix(auth, "5") {
			t.Fatalf("wrong password %d: %q", i+1, auth)
		}
		if i < 2 && !strings.Contains(auth, ngxInvalid) {
			t.Errorf("wrong password %d: %q, want %q", i+1, auth, ngxInvalid)
		}
	}
	waitBlocked(t, eng, src)
	if auth, _ := w.smtpAuthVia(t, smtp, src+":4001", "alice@example.test", alice); strings.HasPrefix(auth, "235") || !strings.Contains(auth, "Blocked (") {
		t.Fatalf("right password from the blocked address: %q", auth)
	}

	bob := w.env.Users["bob@example.test"]
	if auth, _ := w.smtpAuthVia(t, smtp, "203.0.113.122:4000", "bob@example.test", bob); strings.HasPrefix(auth, "235") || !strings.Contains(auth, ngxInvalid) {
		t.Fatalf("restricted account from outside its network: %q", auth)
	}
	if auth, _ := w.smtpAuthVia(t, smtp, "203.0.113.131:4000", "bob@example.test", bob); !strings.HasPrefix(auth, "235") {
		t.Fatalf("restricted account from its network: %q", auth)
	}
}
