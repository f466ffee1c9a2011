package policyd

import (
	"bufio"
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/testserver"
)

// fakeMail is a fake IMAP or POP3 backend behind a PROXY v1 header: it
// knows one password per account and records every login it is asked.
type fakeMail struct {
	mu     sync.Mutex
	users  map[string]string
	logins []fakeLogin
	noAuth bool // submission: no AUTH offered
}

// fakeLogin is one login a fake backend was asked.
type fakeLogin struct {
	client, user, pass string
}

func (f *fakeMail) record(client, user, pass string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logins = append(f.logins, fakeLogin{client, user, pass})
	want, ok := f.users[user]
	return ok && (want == pass || want == "*") // "*": a passdb that checks no password
}

func (f *fakeMail) asked() []fakeLogin {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeLogin(nil), f.logins...)
}

// proxyClient reads a PROXY v1 header and returns its source address.
func proxyClient(r *bufio.Reader) (string, bool) {
	l, err := r.ReadString('\n')
	f := strings.Fields(l)
	if err != nil || len(f) != 6 || f[0] != "PROXY" {
		return "", false
	}
	return f[2], true
}

func (f *fakeMail) imap(c net.Conn) {
	r := bufio.NewReader(c)
	client, ok := proxyClient(r)
	if !ok {
		return
	}
	c.Write([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"))
	l, _ := r.ReadString('\n')
	blob, ok := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "P0 AUTHENTICATE PLAIN ")
	if !ok {
		c.Write([]byte("P0 BAD what\r\n"))
		return
	}
	b, _ := base64.StdEncoding.DecodeString(blob)
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 || !f.record(client, parts[1], parts[2]) {
		c.Write([]byte("P0 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"))
		return
	}
	c.Write([]byte("P0 OK Logged in\r\n"))
	if l, _ := r.ReadString('\n'); strings.HasSuffix(l, "LOGOUT\r\n") {
		c.Write([]byte("* BYE\r\nP1 OK Logout completed.\r\n"))
	}
}

func (f *fakeMail) pop3(c net.Conn) {
	r := bufio.NewReader(c)
	client, ok := proxyClient(r)
	if !ok {
		return
	}
	c.Write([]byte("+OK ready\r\n"))
	if l, _ := r.ReadString('\n'); l != "CAPA\r\n" {
		return
	}
	c.Write([]byte("+OK\r\nUSER\r\n.\r\n"))
	l, _ := r.ReadString('\n')
	user, _ := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "USER ")
	c.Write([]byte("+OK\r\n"))
	l, _ = r.ReadString('\n')
	pass, _ := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "PASS ")
	if !f.record(client, user, pass) {
		c.Write([]byte("-ERR [AUTH] Authentication failed.\r\n"))
		return
	}
	c.Write([]byte("+OK Logged in.\r\n"))
	if l, _ := r.ReadString('\n'); l == "QUIT\r\n" {
		c.Write([]byte("+OK Logging out.\r\n"))
	}
}

// nginxSetup is an nginx auth_http server on an engine with the test
// configuration, and its fake backends.
type nginxSetup struct {
	eng        *guard.Engine
	url        string
	imap, pop3 *fakeMail
	smtp       *fakeMail
	imapAddr   netip.AddrPort
	smtpAddr   netip.AddrPort
}

func newNginxSetup(t *testing.T) *nginxSetup {
	t.Helper()
	return newNginxSetupWith(t, "", 0)
}

// newNginxSetupWith is newNginxSetup with an engine from yaml and a
// decision timeout.
func newNginxSetupWith(t *testing.T, yaml string, decision time.Duration) *nginxSetup {
	t.Helper()
	users := map[string]string{"bob@example.com": "right pw", "alice@example.com": "alice pw"}
	s := &nginxSetup{eng: newEngine(t, yaml), imap: &fakeMail{users: users}, pop3: &fakeMail{users: users}, smtp: &fakeMail{users: users}}
	s.imapAddr = netip.MustParseAddrPort(testserver.TCP(t, s.imap.imap))
	pop3Addr := netip.MustParseAddrPort(testserver.TCP(t, s.pop3.pop3))
	s.smtpAddr = netip.MustParseAddrPort(testserver.TCP(t, s.smtp.submission))
	n := NewNginx(s.eng, NginxOptions{Options: Options{DecisionTimeout: decision}, IMAP: s.imapAddr, POP3: pop3Addr, SMTP: s.smtpAddr, BackendProxy: "v1", BackendTimeout: 5 * time.Second})
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, ln) }()
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
	s.url = "http://" + ln.Addr().String() + "/auth"
	return s
}

// ngxAsk asks as nginx does (user and password escaped) and returns the
// HTTP status and the answer's headers.
func ngxAsk(t *testing.T, u, protocol, user, pass, client string, attempt string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Auth-Method", "plain")
	req.Header.Set("Auth-User", url.PathEscape(user))
	req.Header.Set("Auth-Pass", url.PathEscape(pass))
	req.Header.Set("Auth-Protocol", protocol)
	req.Header.Set("Auth-Login-Attempt", attempt)
	req.Header.Set("Client-IP", client)
	req.Header.Set("Client-Host", "[UNAVAILABLE]")
	return ngxDo(t, req)
}

func ngxDo(t *testing.T, req *http.Request) (int, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestNginxOK(t *testing.T) {
	s := newNginxSetup(t)
	code, h := ngxAsk(t, s.url, "imap", "bob@example.com", "right pw", "127.3.4.5", "1")
	if code != 200 || h.Get("Auth-Status") != "OK" || h.Get("Auth-Server") != "127.0.0.1" || h.Get("Auth-Port") != strings.TrimPrefix(s.imapAddr.String(), "127.0.0.1:") {
		t.Fatalf("imap: %d %v", code, h)
	}
	if a := s.imap.asked(); len(a) != 1 || a[0] != (fakeLogin{"127.3.4.5", "bob@example.com", "right pw"}) {
		t.Errorf("the backend was asked %v, want one login naming the client", a)
	}
	code, h = ngxAsk(t, s.url, "pop3", "bob@example.com", "right pw", "127.3.4.5", "1")
	if code != 200 || h.Get("Auth-Status") != "OK" || h.Get("Auth-Wait") != "" {
		t.Fatalf("pop3: %d %v", code, h)
	}
	if a := s.pop3.asked(); len(a) != 1 || a[0].client != "127.3.4.5" {
		t.Errorf("the pop3 backend was asked %v", a)
	}
}

func TestNginxWrongPasswordBlocks(t *testing.T) {
	s := newNginxSetup(t)
	// failed_logins: 5 for IMAP and POP3; different wrong passwords each
	// count once.
	for i := range 5 {
		code, h := ngxAsk(t, s.url, "imap", "bob@example.com", "wrong "+string(rune('a'+i)), "127.7.7.7", "1")
		if code != 200 || h.Get("Auth-Status") == "OK" || h.Get("Auth-Server") != "" {
			t.Fatalf("wrong password %d: %d %v", i, code, h)
		}
		if i < 4 && (h.Get("Auth-Status") != ngxInvalid || h.Get("Auth-Wait") == "") {
			t.Errorf("wrong password %d: %v, want %q with Auth-Wait", i, h, ngxInvalid)
		}
		if i == 4 && (!strings.HasPrefix(h.Get("Auth-Status"), "Blocked") || h.Get("Auth-Wait") != "") {
			t.Errorf("the failure at the threshold: %v, want the block's refusal without Auth-Wait", h)
		}
	}
	if !blocked(s.eng, "127.7.7.7") {
		t.Fatal("5 wrong passwords did not block the address")
	}
	code, h := ngxAsk(t, s.url, "imap", "bob@example.com", "right pw", "127.7.7.7", "1")
	if code != 200 || !strings.HasPrefix(h.Get("Auth-Status"), "Blocked") || h.Get("Auth-Wait") != "" {
		t.Errorf("the right password from a blocked address: %d %v", code, h)
	}
	if n := len(s.imap.asked()); n != 5 {
		t.Errorf("the backend was asked %d logins, want 5 (none once blocked)", n)
	}
	// Another address is not blocked.
	if _, h := ngxAsk(t, s.url, "imap", "bob@example.com", "right pw", "127.7.7.8", "1"); h.Get("Auth-Status") != "OK" {
		t.Errorf("another address: %v", h)
	}
}

func TestNginxGrantAndBlock(t *testing.T) {
	s := newNginxSetup(t)
	// The inline IMAP service grants 127.0.0.0/8 only.
	if _, h := ngxAsk(t, s.url, "imap", "bob@example.com", "right pw", "192.0.2.1", "1"); h.Get("Auth-Status") == "OK" || h.Get("Auth-Wait") != "" {
		t.Errorf("an address outside the grant: %v", h)
	}
	if len(s.imap.asked()) != 0 {
		t.Error("the backend was asked for an address outside the grant")
	}
	// Many attempts: the last is answered without Auth-Wait, so nginx ends
	// the session.
	if _, h := ngxAsk(t, s.url, "imap", "bob@example.com", "wrong", "127.7.7.9", "10"); h.Get("Auth-Status") != ngxInvalid || h.Get("Auth-Wait") != "" {
		t.Errorf("attempt 10: %v", h)
	}
}

func TestNginxRestricted(t *testing.T) {
	s := newNginxSetup(t)
	// alice may log in from 127.0.0.0/16 only.
	if _, h := ngxAsk(t, s.url, "imap", "alice@example.com", "alice pw", "127.0.9.9", "1"); h.Get("Auth-Status") != "OK" {
		t.Fatalf("alice from her network: %v", h)
	}
	_, h := ngxAsk(t, s.url, "imap", "alice@example.com", "alice pw", "127.9.9.9", "1")
	if h.Get("Auth-Status") != ngxInvalid || h.Get("Auth-Server") != "" {
		t.Errorf("alice from elsewhere with the right password: %v, want %q", h, ngxInvalid)
	}
	a := s.imap.asked()
	if len(a) != 2 || a[1].user != "alice@example.com" || a[1].pass == "alice pw" {
		t.Errorf("the restricted login reached the backend as %v, want a decoy password", a)
	}
	// It counted as a failed login (L): four more failures block.
	for i := range 4 {
		ngxAsk(t, s.url, "imap", "bob@example.com", "wrong "+string(rune('a'+i)), "127.9.9.9", "1")
	}
	if !blocked(s.eng, "127.9.9.9") {
		t.Error("the restricted login did not count as a failed login")
	}
}

// A backend that accepts the decoy of a restricted login (a passdb that
// checks no password) does not let it in: the answer is a failure.
func TestNginxDecoyAccepted(t *testing.T) {
	s := newNginxSetup(t)
	s.imap.mu.Lock()
	s.imap.users["alice@example.com"] = "*"
	s.imap.mu.Unlock()
	_, h := ngxAsk(t, s.url, "imap", "alice@example.com", "alice pw", "127.9.9.9", "1")
	if h.Get("Auth-Status") != ngxInvalid || h.Get("Auth-Server") != "" {
		t.Errorf("a restricted login whose decoy the backend accepted: %v", h)
	}
	if a := s.imap.asked(); len(a) != 1 || a[0].pass == "alice pw" {
		t.Errorf("the backend was asked %v, want the decoy once", a)
	}
}

// Account protection's delay longer than decision_timeout: the login is
// not attempted, and nginx is told to let the client try again after the
// delay.
func TestNginxAccountProtection(t *testing.T) {
	s := newNginxSetupWith(t, baseYAML+"  account_protection: { failures: 3, delay: 7s }\n", 200*time.Millisecond)
	for i := range 3 {
		if _, h := ngxAsk(t, s.url, "imap", "bob@example.com", "wrong", "127.6.0."+strconv.Itoa(i+1), "1"); h.Get("Auth-Status") != ngxInvalid {
			t.Fatalf("wrong password %d: %v", i, h)
		}
	}
	t0 := time.Now()
	_, h := ngxAsk(t, s.url, "imap", "bob@example.com", "right pw", "127.6.0.9", "1")
	if h.Get("Auth-Status") != ngxTemporary || h.Get("Auth-Wait") != "7" {
		t.Errorf("a login of the protected account: %v, want %q with Auth-Wait 7", h, ngxTemporary)
	}
	if e := time.Since(t0); e > 5*time.Second {
		t.Errorf("answered after %v, past decision_timeout", e)
	}
	if n := len(s.imap.asked()); n != 3 {
		t.Errorf("the backend was asked %d logins, want 3", n)
	}
}

// A backend that cannot be reached, or fails before the login is sent,
// is a temporary failure, uncounted; one that fails after the login was
// sent counts as a failed login, as inline (it may have checked it).
func TestNginxBackendDown(t *testing.T) {
	eng := newEngine(t, "")
	closed := listen(t)
	down := netip.MustParseAddrPort(closed.Addr().String())
	closed.Close()
	mute := netip.MustParseAddrPort(testserver.TCP(t, func(c net.Conn) {
		proxyClient(bufio.NewReader(c)) // reads the header, says nothing
	}))
	hangup := netip.MustParseAddrPort(testserver.TCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		proxyClient(r)
		c.Write([]byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n"))
		r.ReadString('\n') // the login, then nothing
	}))
	for k, tc := range []struct {
		name    string
		backend netip.AddrPort
		counted bool
	}{{"down", down, false}, {"mute", mute, false}, {"hangs up after the login", hangup, true}} {
		src := "127.5.0." + strconv.Itoa(k+1)
		n := NewNginx(eng, NginxOptions{IMAP: tc.backend, BackendProxy: "v1", BackendTimeout: time.Second})
		ln := listen(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Serve(ctx, ln) }()
		for i := range 5 {
			if _, h := ngxAsk(t, "http://"+ln.Addr().String()+"/", "imap", "bob@example.com", "pw"+strconv.Itoa(i), src, "1"); i < 4 && (h.Get("Auth-Status") != ngxTemporary || h.Get("Auth-Wait") == "") {
				t.Errorf("%s: %v", tc.name, h)
			}
		}
		if blocked(eng, src) != tc.counted {
			t.Errorf("%s: blocked after 5 tries %v, want %v", tc.name, blocked(eng, src), tc.counted)
		}
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestNginxBadRequests(t *testing.T) {
	s := newNginxSetup(t)
	good := func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, s.url, nil)
		for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": "bob@example.com", "Auth-Pass": "x", "Auth-Protocol": "imap", "Client-IP": "127.0.0.2"} {
			req.Header.Set(k, v)
		}
		return req
	}
	for name, mod := range map[string]func(*http.Request){
		"POST":         func(r *http.Request) { r.Method = http.MethodPost },
		"no user":      func(r *http.Request) { r.Header.Del("Auth-User") },
		"empty user":   func(r *http.Request) { r.Header.Set("Auth-User", "") },
		"no password":  func(r *http.Request) { r.Header.Del("Auth-Pass") },
		"two users":    func(r *http.Request) { r.Header.Add("Auth-User", "eve") },
		"cram-md5":     func(r *http.Request) { r.Header.Set("Auth-Method", "cram-md5") },
		"bad escape":   func(r *http.Request) { r.Header.Set("Auth-Pass", "a%zz") },
		"no client":    func(r *http.Request) { r.Header.Del("Client-IP") },
		"client host":  func(r *http.Request) { r.Header.Set("Client-IP", "client.example") },
		"bad attempt":  func(r *http.Request) { r.Header.Set("Auth-Login-Attempt", "-1") },
		"no protocol":  func(r *http.Request) { r.Header.Del("Auth-Protocol") },
		"zoned client": func(r *http.Request) { r.Header.Set("Client-IP", "fe80::1%eth0") },
		"two attempts": func(r *http.Request) {
			r.Header.Add("Auth-Login-Attempt", "1")
			r.Header.Add("Auth-Login-Attempt", "2")
		},
		"no auth method": func(r *http.Request) { r.Header.Del("Auth-Method") },
	} {
		req := good()
		mod(req)
		if code, h := ngxDo(t, req); code != http.StatusBadRequest || h.Get("Auth-Status") != "" {
			t.Errorf("%s: HTTP %d %v, want 400 without Auth-Status", name, code, h)
		}
	}
	// A protocol postern checks no logins for is refused.
	if code, h := ngxAsk(t, s.url, "sieve", "bob@example.com", "right pw", "127.0.0.2", "1"); code != 200 || h.Get("Auth-Status") != ngxProtocol || h.Get("Auth-Wait") != "" {
		t.Errorf("sieve: %d %v", code, h)
	}
	if len(s.imap.asked())+len(s.pop3.asked())+len(s.smtp.asked()) != 0 {
		t.Error("a bad request reached a backend")
	}
	// A login the inline gateway would not replay (a CR in the password, a
	// name with a control character, too long) is refused uncounted,
	// without asking the backend.
	for _, c := range [][2]string{{"bob@example.com", "a\rb"}, {"bob@example.com", "c\nd"}, {"bob@example.com", "a\x00b"}, {"bob\tx", "p"}, {"bob@example.com", strings.Repeat("p", 9000)}} {
		for _, proto := range []string{"imap", "pop3", "smtp"} {
			if _, h := ngxAsk(t, s.url, proto, c[0], c[1], "127.0.0.3", "1"); h.Get("Auth-Status") != ngxInvalid {
				t.Errorf("%s %q: %v", proto, c[0], h)
			}
		}
	}
	if len(s.imap.asked())+len(s.pop3.asked())+len(s.smtp.asked()) != 0 || blocked(s.eng, "127.0.0.3") {
		t.Error("a login not replayable reached a backend or was counted")
	}
	// A password with bytes nginx escapes arrives as the client typed it.
	s.imap.mu.Lock()
	s.imap.users["carol@example.com"] = "a b%c\"d"
	s.imap.mu.Unlock()
	if _, h := ngxAsk(t, s.url, "imap", "carol@example.com", "a b%c\"d", "127.0.0.2", "1"); h.Get("Auth-Status") != "OK" {
		t.Errorf("an escaped password: %v", h)
	}
}

// FuzzNginxRequest feeds raw HTTP requests to the auth_http reader: it
// never panics, and a request it accepts names an account and a client
// address and carries no header twice.
func FuzzNginxRequest(f *testing.F) {
	f.Add("GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\nAuth-User: bob%40example.com\r\nAuth-Pass: a%20b\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 192.0.2.42\r\nClient-Host: client.example.org\r\n\r\n")
	f.Add("GET /auth HTTP/1.0\r\nAuth-Method: apop\r\nAuth-User: u\r\nAuth-Salt: <1@x>\r\nAuth-Pass: x\r\nAuth-Protocol: pop3\r\nClient-IP: ::1\r\n\r\n")
	f.Add("GET /auth HTTP/1.0\r\nAuth-Method: plain\r\nAuth-User: u\r\nAuth-User: v\r\nAuth-Pass: %zz\r\nAuth-Protocol: smtp\r\nClient-IP: 1.2.3.4\r\nAuth-Login-Attempt: 99999999999999999999\r\n\r\n")
	f.Fuzz(func(t *testing.T, raw string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return
		}
		q, err := readNginx(req)
		if err != nil {
			return
		}
		if q.user == "" || !q.client.IsValid() || q.client.Is4In6() || q.attempt < 1 {
			t.Fatalf("accepted %+v", q)
		}
		for _, h := range []string{"Auth-User", "Auth-Pass", "Auth-Method", "Auth-Protocol", "Client-IP"} {
			if len(req.Header.Values(h)) != 1 {
				t.Fatalf("accepted %s given %d times", h, len(req.Header.Values(h)))
			}
		}
	})
}
