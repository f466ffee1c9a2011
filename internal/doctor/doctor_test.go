package doctor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"github.com/postern/postern/internal/testserver"
)

// fakeBackend serves each connection with handle on 127.0.0.1 until the
// test ends.
func fakeBackend(t *testing.T, handle func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String()
}

// headers records the PROXY headers a fake backend read.
type headers struct {
	mu  sync.Mutex
	got []*proxyproto.Header
}

func (h *headers) read(r *bufio.Reader) bool {
	hd, err := proxyproto.Read(r)
	if err != nil {
		return false
	}
	h.mu.Lock()
	h.got = append(h.got, hd)
	h.mu.Unlock()
	return true
}

func (h *headers) sources() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, hd := range h.got {
		src, _, _ := hd.TCPAddrs()
		out = append(out, src.AddrPort().String())
	}
	return out
}

func line(r *bufio.Reader) string {
	s, _ := r.ReadString('\n')
	return strings.TrimRight(s, "\r\n")
}

// goodIMAP is Dovecot behind a PROXY header (haproxy = yes).
func goodIMAP(h *headers) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		if !h.read(r) {
			return
		}
		fmt.Fprint(c, "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] Dovecot ready.\r\n")
		for {
			f := strings.Fields(line(r))
			if len(f) < 2 {
				return
			}
			switch strings.ToUpper(f[1]) {
			case "CAPABILITY":
				fmt.Fprintf(c, "* CAPABILITY IMAP4rev1 SASL-IR STARTTLS AUTH=PLAIN AUTH=LOGIN\r\n%s OK Pre-login capabilities listed, post-login capabilities have more.\r\n", f[0])
			case "LOGOUT":
				fmt.Fprintf(c, "* BYE Logging out\r\n%s OK Logout completed.\r\n", f[0])
				return
			}
		}
	}
}

// plainIMAP is Dovecot on a listener without haproxy = yes: it greets and
// takes whatever comes for commands.
func plainIMAP(c net.Conn, r *bufio.Reader) {
	fmt.Fprint(c, "* OK Dovecot ready.\r\n")
	for {
		s, err := r.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(s)
		switch {
		case len(f) == 0:
			fmt.Fprint(c, "* BAD Error in IMAP command received by server.\r\n")
		case len(f) >= 2 && strings.EqualFold(f[1], "CAPABILITY"):
			fmt.Fprintf(c, "* CAPABILITY IMAP4rev1\r\n%s OK done\r\n", f[0])
		default:
			fmt.Fprintf(c, "%s BAD Error in IMAP command %s: Unknown command.\r\n", f[0], strings.Join(f[1:], " "))
		}
	}
}

// goodSMTP is Postfix behind a PROXY header, or with XCLIENT when xclient.
func goodSMTP(h *headers, xclient bool) func(net.Conn, *bufio.Reader) {
	return func(c net.Conn, r *bufio.Reader) {
		if !xclient && !h.read(r) {
			return
		}
		fmt.Fprint(c, "220 mx.example.test ESMTP Postfix\r\n")
		for {
			s := line(r)
			up := strings.ToUpper(s)
			switch {
			case strings.HasPrefix(up, "EHLO "):
				fmt.Fprint(c, "250-mx.example.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n")
				if xclient {
					fmt.Fprint(c, "250-XCLIENT ADDR PORT NAME\r\n")
				}
				fmt.Fprint(c, "250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
			case strings.HasPrefix(up, "XCLIENT "):
				if !strings.Contains(s, "ADDR=127.0.0.1") {
					fmt.Fprint(c, "501 5.5.4 bad XCLIENT\r\n")
					continue
				}
				fmt.Fprint(c, "220 mx.example.test ESMTP Postfix\r\n")
			case up == "QUIT":
				fmt.Fprint(c, "221 2.0.0 Bye\r\n")
				return
			case s == "":
				return
			default:
				fmt.Fprint(c, "502 5.5.2 Error: command not recognized\r\n")
			}
		}
	}
}

// parse decodes a configuration written for the test.
func parse(t *testing.T, text string) *config.File {
	t.Helper()
	f, err := config.Parse(filepath.Join(t.TempDir(), "p.yaml"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, text)
	}
	return f
}

// adminSocket listens where the configuration's admin API is, accepting
// and closing connections: reachable, with no token to read.
func adminSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "a.sock")
	testserver.Unix(t, p, nil) // reachable, says nothing
	return p
}

func run(t *testing.T, text string) Report {
	t.Helper()
	return runTimeout(t, 5*time.Second, text)
}

// runTimeout runs the doctor on text, with a reachable admin socket and no
// token.
func runTimeout(t *testing.T, timeout time.Duration, text string) Report {
	t.Helper()
	text += fmt.Sprintf("admin:\n  listen: unix:%s\n  token_file: /nonexistent/token\n", adminSocket(t))
	noToken := func(string) (string, error) { return "", errors.New("no token in tests") }
	return Run(context.Background(), parse(t, text), Options{Timeout: timeout, AdminToken: noToken})
}

func result(t *testing.T, rep Report, check string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", check, rep)
	return Result{}
}

func TestGoodBackends(t *testing.T) {
	var h headers
	imap := fakeBackend(t, goodIMAP(&h))
	smtp := fakeBackend(t, goodSMTP(&h, false))
	sub := fakeBackend(t, goodSMTP(&h, true))
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/login", http.StatusFound)
	}))
	defer web.Close()
	rep := run(t, fmt.Sprintf(`services:
  imap: { listen: ":1143", backend: "%s" }
  smtp: { listen: ":1025", backend: "%s", backend_proxy: v1 }
  submission: { listen: ":1587", backend: "%s", backend_proxy: xclient }
  web: { listen: ":1080", backend: "%s" }
`, imap, smtp, sub, web.URL))
	if !rep.OK {
		b, _ := json.MarshalIndent(rep, "", "  ")
		t.Fatalf("not OK:\n%s", b)
	}
	im := result(t, rep, "imap")
	if im.Via != "PROXY v2" || !strings.HasPrefix(im.Greeting, "* OK") || strings.Join(im.Auth, " ") != "PLAIN LOGIN" || im.StartTLS == nil || !*im.StartTLS {
		t.Errorf("imap: %+v", im)
	}
	sm := result(t, rep, "smtp")
	if sm.Via != "PROXY v1" || strings.Join(sm.Auth, " ") != "PLAIN LOGIN" || !*sm.StartTLS || len(sm.Capabilities) != 5 {
		t.Errorf("smtp: %+v", sm)
	}
	su := result(t, rep, "submission")
	if su.Via != "XCLIENT" || len(su.Notes) == 0 || su.Notes[0] != "XCLIENT accepted" {
		t.Errorf("submission: %+v", su)
	}
	w := result(t, rep, "web")
	if w.HTTPStatus != "HTTP/1.1 302 Found" || len(w.Notes) != 1 || w.Notes[0] != "redirects to /login" {
		t.Errorf("web: %+v", w)
	}
	if a := result(t, rep, "admin"); !a.OK {
		t.Errorf("admin: %+v", a)
	}
	// Two headers (imap v2, smtp v1), both with the doctor's client address.
	if got := h.sources(); len(got) != 2 || got[0] != "127.0.0.1:40000" || got[1] != "127.0.0.1:40000" {
		t.Errorf("PROXY header sources %v", got)
	}
}

func TestBackendClosesAfterHeader(t *testing.T) {
	var h headers
	closer := func(c net.Conn, r *bufio.Reader) { h.read(r) } // then closes, like an untrusted Dovecot
	imap := fakeBackend(t, closer)
	smtp := fakeBackend(t, closer)
	rep := run(t, fmt.Sprintf(`services:
  imap: { listen: ":1143", backend: "%s" }
  smtp: { listen: ":1025", backend: "%s" }
`, imap, smtp))
	if rep.OK {
		t.Fatal("OK with backends that close after the header")
	}
	im := result(t, rep, "imap")
	want := "Dovecot at " + imap + " closed the connection after postern's PROXY v2 header: set `haproxy_trusted_networks` to include 127.0.0.1 (see examples/dovecot/conf.d/99-postern.conf)"
	if im.OK || im.Problem != want {
		t.Errorf("imap problem\n got %q\nwant %q", im.Problem, want)
	}
	sm := result(t, rep, "smtp")
	if sm.OK || !strings.HasPrefix(sm.Problem, "Postfix at "+smtp+" closed the connection after postern's PROXY v2 header: set `smtpd_upstream_proxy_protocol = haproxy`") ||
		!strings.Contains(sm.Problem, "postscreen_upstream_proxy_protocol") || !strings.Contains(sm.Problem, "examples/postfix/master.cf.snippet") {
		t.Errorf("smtp problem %q", sm.Problem)
	}
	if len(h.sources()) != 2 {
		t.Errorf("headers read: %v", h.sources())
	}
}

func TestBackendExpectsHeaderGetsNone(t *testing.T) {
	// Dovecot closes after haproxy_timeout; Postfix answers 421 after
	// smtpd_upstream_proxy_timeout (both shortened here).
	dovecot := fakeBackend(t, func(c net.Conn, r *bufio.Reader) {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		r.Peek(1)
	})
	postfix := fakeBackend(t, func(c net.Conn, r *bufio.Reader) {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		r.Peek(1)
		fmt.Fprint(c, "421 4.3.0 mx.example.test Server local error\r\n")
	})
	rep := run(t, fmt.Sprintf(`services:
  pop3: { listen: ":1110", backend: "%s", backend_proxy: none }
  smtp: { listen: ":1025", backend: "%s", backend_proxy: none }
`, dovecot, postfix))
	p := result(t, rep, "pop3")
	if p.OK || !strings.HasPrefix(p.Problem, "Dovecot at "+dovecot+" closed the connection before its greeting and postern sends no PROXY header (backend_proxy: none)") ||
		!strings.Contains(p.Problem, "`backend_proxy: v2` on services.pop3") {
		t.Errorf("pop3 problem %q", p.Problem)
	}
	s := result(t, rep, "smtp")
	if s.OK || !strings.HasPrefix(s.Problem, `Postfix at `+postfix+` answered "421 4.3.0 mx.example.test Server local error" and postern sends no PROXY header`) {
		t.Errorf("smtp problem %q", s.Problem)
	}
}

func TestBackendReadsHeaderAsCommands(t *testing.T) {
	imap := fakeBackend(t, plainIMAP)
	smtp := fakeBackend(t, goodSMTP(nil, true)) // no header expected: the header is a command
	rep := run(t, fmt.Sprintf(`services:
  imap: { listen: ":1143", backend: "%s", backend_proxy: v1 }
  imaps: { listen: ":1993", backend: "%s", backend_tls: none, tls: { cert: %q, key: %q } }
  smtp: { listen: ":1025", backend: "%s", backend_proxy: v1 }
`, imap, imap, cert(t), cert(t), smtp))
	for _, name := range []string{"imap", "imaps"} {
		r := result(t, rep, name)
		if r.OK || !strings.Contains(r.Problem, "read postern's PROXY") || !strings.Contains(r.Problem, "add `haproxy = yes` to the inet_listener") {
			t.Errorf("%s problem %q", name, r.Problem)
		}
	}
	s := result(t, rep, "smtp")
	if s.OK || !strings.HasPrefix(s.Problem, "Postfix at "+smtp+" read postern's PROXY v1 header as commands") {
		t.Errorf("smtp problem %q", s.Problem)
	}
}

// cert is a file that exists; the doctor never reads postern's own
// certificates.
func cert(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "c.pem")
	os.WriteFile(p, []byte("x"), 0o600)
	return p
}

func TestNothingListens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rep := run(t, fmt.Sprintf("services:\n  pop3: { listen: \":1110\", backend: \"%s\" }\n", addr))
	p := result(t, rep, "pop3")
	if p.OK || p.Problem != "nothing listens at "+addr+": start Dovecot there or correct services.pop3.backend (see examples/dovecot/conf.d/99-postern.conf)" {
		t.Errorf("problem %q", p.Problem)
	}
}

func TestAdviceNamesExistingExamples(t *testing.T) {
	// Every example file advice can name exists in the source tree.
	for _, p := range []string{"examples/dovecot/conf.d/99-postern.conf", "examples/postfix/master.cf.snippet", "examples/roundcube/nginx.conf.snippet"} {
		if _, err := os.Stat(filepath.Join("..", "..", p)); err != nil {
			t.Errorf("advice names %s: %v", p, err)
		}
	}
}

func TestSpamDNSAdmin(t *testing.T) {
	rspamd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			fmt.Fprint(w, "pong\r\n")
			return
		}
		http.NotFound(w, r)
	}))
	defer rspamd.Close()
	rep := run(t, fmt.Sprintf("spam:\n  rspamd: %q\n", rspamd.URL))
	if s := result(t, rep, "spam"); !s.OK {
		t.Errorf("rspamd: %+v", s)
	}
	spamd := fakeBackend(t, func(c net.Conn, r *bufio.Reader) {
		if line(r) == "PING SPAMC/1.5" {
			fmt.Fprint(c, "SPAMD/1.5 0 PONG\r\n")
		}
	})
	rep = run(t, fmt.Sprintf("spam:\n  spamd: %q\n", spamd))
	if s := result(t, rep, "spam"); !s.OK || s.Server != "spamd" {
		t.Errorf("spamd: %+v", s)
	}
	// A rspamd controller (or any other web server) is not the scanner.
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	rep = run(t, fmt.Sprintf("spam:\n  rspamd: %q\n", other.URL))
	if s := result(t, rep, "spam"); s.OK || !strings.Contains(s.Problem, "does not answer like rspamd") {
		t.Errorf("not rspamd: %+v", s)
	}
	// The admin API: nothing listening is a failure with advice.
	f := parse(t, "admin:\n  listen: unix:/nonexistent/admin.sock\n")
	rep = Run(context.Background(), f, Options{Timeout: 2 * time.Second})
	if a := result(t, rep, "admin"); a.OK || !strings.Contains(a.Problem, "is `postern serve` running") || rep.OK {
		t.Errorf("admin: %+v", a)
	}
}

func TestDNSResolver(t *testing.T) {
	z := fcrdnstest.Start(t, ". 300 IN NS a.root-servers.net.")
	rep := run(t, fmt.Sprintf("dns:\n  resolver: %q\n", z.Addr))
	if d := result(t, rep, "dns"); !d.OK || z.Queries() != 1 {
		t.Errorf("dns: %+v after %d queries", d, z.Queries())
	}
	z.Fail(".")
	rep = run(t, fmt.Sprintf("dns:\n  resolver: %q\n", z.Addr))
	if d := result(t, rep, "dns"); d.OK || !strings.Contains(d.Problem, "SERVFAIL") {
		t.Errorf("dns SERVFAIL: %+v", d)
	}
	z.Silent(".")
	f := parse(t, fmt.Sprintf("dns:\n  resolver: %q\n", z.Addr))
	rep = Run(context.Background(), f, Options{Timeout: 300 * time.Millisecond})
	if d := result(t, rep, "dns"); d.OK || !strings.Contains(d.Problem, "does not answer") {
		t.Errorf("dns silent: %+v", d)
	}
}

func TestWebBackendFailing(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "php-fpm is down", http.StatusBadGateway)
	}))
	defer web.Close()
	rep := run(t, fmt.Sprintf("services:\n  web: { listen: \":1080\", backend: %q }\n", web.URL))
	w := result(t, rep, "web")
	if w.OK || rep.OK || w.HTTPStatus != "HTTP/1.1 502 Bad Gateway" || !strings.Contains(w.Problem, "answers 502 Bad Gateway") {
		t.Errorf("web: %+v", w)
	}
}

func TestSMTPOptionsNotOffered(t *testing.T) {
	// A Postfix port that offers neither XCLIENT nor STARTTLS to postern.
	var h headers
	serve := func(header bool) func(net.Conn, *bufio.Reader) {
		return func(c net.Conn, r *bufio.Reader) {
			if header {
				h.read(r)
			}
			postfixNoOptions(c, r)
		}
	}
	xclient, starttls := fakeBackend(t, serve(false)), fakeBackend(t, serve(true))
	rep := run(t, fmt.Sprintf(`services:
  smtp: { listen: ":1025", backend: %q, backend_proxy: xclient }
  submission: { listen: ":1587", backend: %q, backend_tls: starttls }
`, xclient, starttls))
	if s := result(t, rep, "smtp"); s.OK || !strings.Contains(s.Problem, "does not offer XCLIENT to postern: set `smtpd_authorized_xclient_hosts = 127.0.0.1`") {
		t.Errorf("smtp: %+v", s)
	}
	if s := result(t, rep, "submission"); s.OK || !strings.Contains(s.Problem, "does not offer STARTTLS but services.submission has `backend_tls: starttls`") {
		t.Errorf("submission: %+v", s)
	}
}

// postfixNoOptions greets and answers EHLO without XCLIENT or STARTTLS.
func postfixNoOptions(c net.Conn, r *bufio.Reader) {
	fmt.Fprint(c, "220 mx.example.test ESMTP Postfix\r\n")
	for {
		s := line(r)
		switch {
		case strings.HasPrefix(s, "EHLO "):
			fmt.Fprint(c, "250-mx.example.test\r\n250 PIPELINING\r\n")
		case s == "QUIT", s == "":
			return
		default:
			fmt.Fprint(c, "502 5.5.2 Error: command not recognized\r\n")
		}
	}
}
