package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

func start(t *testing.T) *Backends {
	t.Helper()
	b, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// dialAs connects to a backend and sends the PROXY v2 header postern
// would send for a client at src.
func dialAs(t *testing.T, backend netip.AddrPort, src string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", backend.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(backend))
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func smtpClient(t *testing.T, b *Backends, src string) *smtp.Client {
	t.Helper()
	c := smtp.NewClient(dialAs(t, b.SMTP(), src))
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	return c
}

func smtpCode(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestSMTPDeliversToIMAPAndPOP3(t *testing.T) {
	b := start(t)
	alice := Users()[0]

	c := smtpClient(t, b, "198.51.100.7:40000")
	if err := c.Mail("carol@example.org", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("nobody@"+Domain, nil); smtpCode(err) != 550 || !strings.Contains(err.Error(), "User unknown") {
		t.Fatalf("unknown local user: want 550 User unknown (Postfix's wording, counted as P), got %v", err)
	}
	if err := c.Rcpt("someone@elsewhere.example", nil); smtpCode(err) != 554 || !strings.Contains(err.Error(), "Relay access denied") {
		t.Fatalf("relay without AUTH: want 554 Relay access denied (counted as Y), got %v", err)
	}
	if err := c.Rcpt(alice.Name, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: demo test\r\n\r\nHello Alice.\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	d := b.Deliveries()
	if len(d) != 1 || d[0].Client != netip.MustParseAddr("198.51.100.7") || d[0].To[0] != alice.Name {
		t.Fatalf("deliveries: %+v", d)
	}
	if !bytes.Contains(d[0].Data, []byte("Received: from [198.51.100.7]")) {
		t.Fatalf("the Received header must name the PROXY client:\n%s", d[0].Data)
	}

	// IMAP: the welcome message and the new one, through go-imap's client.
	ic := imapclient.New(dialAs(t, b.IMAP(), "198.51.100.8:40001"), nil)
	defer ic.Close()
	if err := ic.Login(alice.Name, alice.Password).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := ic.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := ic.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{Envelope: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Envelope.Subject != "Welcome to the postern demo" || msgs[1].Envelope.Subject != "demo test" {
		t.Fatalf("IMAP INBOX: %d messages", len(msgs))
	}
	if got := msgs[1].FindBodySection(&imap.FetchItemBodySection{}); !bytes.Equal(got, d[0].Data) {
		t.Fatalf("IMAP body differs from the delivered message:\n%q\n%q", got, d[0].Data)
	}
	ic.Logout().Wait()

	// POP3: raw commands.
	pc := dialAs(t, b.POP3(), "198.51.100.9:40002")
	r := bufio.NewReader(pc)
	expect := func(prefix string) string {
		t.Helper()
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(l, prefix) {
			t.Fatalf("POP3: want %q, got %q (%v)", prefix, l, err)
		}
		return l
	}
	expect("+OK")
	io.WriteString(pc, "USER "+alice.Name+"\r\nPASS "+alice.Password+"\r\n")
	expect("+OK")
	expect("+OK")
	io.WriteString(pc, "RETR 2\r\n")
	expect("+OK")
	var body bytes.Buffer
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == ".\r\n" {
			break
		}
		body.WriteString(strings.TrimPrefix(l, "."))
	}
	if !bytes.Equal(body.Bytes(), d[0].Data) {
		t.Fatalf("POP3 RETR differs from the delivered message:\n%q", body.String())
	}
	io.WriteString(pc, "QUIT\r\n")
	expect("+OK")

	// Every backend recorded the client address from the PROXY header.
	want := map[string]netip.Addr{"imap": netip.MustParseAddr("198.51.100.8"), "pop3": netip.MustParseAddr("198.51.100.9")}
	for _, l := range b.Logins() {
		if a, ok := want[l.Backend]; ok && l.OK && l.User == alice.Name && l.Client == a {
			delete(want, l.Backend)
		}
	}
	if len(want) > 0 {
		t.Fatalf("logins not recorded with the PROXY client address: %v in %+v", want, b.Logins())
	}
}

func TestSMTPAuth(t *testing.T) {
	b := start(t)
	alice, bob := Users()[0], Users()[1]
	c := smtpClient(t, b, "192.0.2.10:1000")
	if err := c.Auth(sasl.NewPlainClient("", alice.Name, "wrong")); smtpCode(err) != 535 {
		t.Fatalf("wrong password: want 535, got %v", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", alice.Name, alice.Password)); err != nil {
		t.Fatal(err)
	}
	// Authenticated: relaying is allowed (and the mail dropped).
	if err := c.Mail(alice.Name, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("someone@elsewhere.example", nil); err != nil {
		t.Fatalf("authenticated relay: %v", err)
	}
	if err := c.Rcpt(bob.Name, nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: to bob\r\n\r\nHi.\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	var fails, oks int
	for _, l := range b.Logins() {
		if l.Backend == "smtp" && l.Client == netip.MustParseAddr("192.0.2.10") {
			if l.OK {
				oks++
			} else {
				fails++
			}
		}
	}
	if fails != 1 || oks != 1 {
		t.Fatalf("SMTP logins: %d failed, %d ok; want 1 and 1", fails, oks)
	}
	if got := b.pop3.srv.Messages(bob.Name); len(got) != 2 {
		t.Fatalf("bob's mailbox: %d messages, want the welcome and the new one", len(got))
	}
}

func TestMailBackendsRequireProxyHeader(t *testing.T) {
	b := start(t)
	for name, ap := range map[string]netip.AddrPort{"smtp": b.SMTP(), "imap": b.IMAP(), "pop3": b.POP3()} {
		c, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "HELLO without a PROXY header\r\n")
		got, _ := io.ReadAll(c)
		c.Close()
		if bytes.Contains(got, []byte("OK")) || bytes.HasPrefix(got, []byte("220")) {
			t.Errorf("%s: a connection without a PROXY header must get no greeting, got %q", name, got)
		}
	}
}

func TestWebmail(t *testing.T) {
	b := start(t)
	alice := Users()[0]
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, cookie *http.Cookie) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", b.Web()+path, nil)
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	login := func(user, pass string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", b.Web()+LoginPath, strings.NewReader(url.Values{UserField: {user}, PasswordField: {pass}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	resp, body := get("/", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="`+UserField+`"`) || !strings.Contains(body, `name="`+PasswordField+`"`) || !strings.Contains(body, `action="`+LoginPath+`"`) {
		t.Fatalf("GET /: %d\n%s", resp.StatusCode, body)
	}
	resp, body = login(alice.Name, "wrong")
	if resp.StatusCode != LoginFailedStatus || !strings.Contains(body, "Login failed") {
		t.Fatalf("wrong password: %d\n%s", resp.StatusCode, body)
	}
	resp, _ = login(alice.Name, alice.Password)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/inbox" || len(resp.Cookies()) != 1 {
		t.Fatalf("right password: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body = get("/inbox", resp.Cookies()[0])
	if resp.StatusCode != 200 || !strings.Contains(body, "Welcome to the postern demo") || !strings.Contains(body, "203.0.113.9") {
		t.Fatalf("inbox: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := get("/inbox", nil); resp.StatusCode != http.StatusFound {
		t.Fatalf("inbox without a session: %d, want a redirect to the form", resp.StatusCode)
	}
	if resp, body := get("/admin", nil); resp.StatusCode != 200 || !strings.Contains(body, "Admins") {
		t.Fatalf("/admin: %d\n%s", resp.StatusCode, body)
	}
	var web []Login
	for _, l := range b.Logins() {
		if l.Backend == "web" {
			web = append(web, l)
		}
	}
	if len(web) != 2 || web[0].OK || !web[1].OK || web[0].Client != netip.MustParseAddr("203.0.113.9") {
		t.Fatalf("web logins: %+v", web)
	}
}

func TestConfigLoadsAndMeansWhatItSays(t *testing.T) {
	b := start(t)
	dir := t.TempDir()
	path, err := WriteConfig(dir, Listen{SMTP: "127.0.0.1:0", Submission: "127.0.0.1:0", IMAP: "127.0.0.1:0", POP3: "127.0.0.1:0", Web: "127.0.0.1:0"}, b)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range snap.Warnings {
		t.Errorf("warning: %v", w)
	}
	p := snap.Policy
	for _, svc := range []service.Service{service.IMAP, service.POP3, service.Web} {
		if !p.AllowService(svc, You) || !p.AllowService(svc, Guesser) || p.AllowService(svc, Abroad) {
			t.Errorf("%s: the demo GeoIP grant must admit 127.0.0.x and refuse %s", svc, Abroad)
		}
	}
	if !p.AllowService(service.SMTP, Abroad) {
		t.Error("smtp must stay open to everyone")
	}
	if !p.AllowPath(service.Web, "/admin", You) || p.AllowPath(service.Web, "/admin", Colleague) || p.AllowPath(service.Web, "/%61dmin", Colleague) {
		t.Error("/admin must be for Admins only")
	}
	alice, bob := Users()[0], Users()[1]
	if !p.AllowLogin(alice.Name, Colleague) || !p.AllowLogin(bob.Name, You) || p.AllowLogin(bob.Name, Colleague) {
		t.Error("login restrictions: alice from the country, bob from Admins only")
	}
	text, _ := os.ReadFile(path)
	for _, want := range []string{b.SMTP().String(), b.IMAP().String(), b.POP3().String(), b.Web()} {
		if !bytes.Contains(text, []byte(want)) {
			t.Errorf("config does not name backend %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "zones", "my.zone")); err != nil {
		t.Fatal(err)
	}
	// Without web the configuration still loads.
	path, err = WriteConfig(t.TempDir(), Listen{SMTP: "127.0.0.1:0", Submission: "127.0.0.1:0", IMAP: "127.0.0.1:0", POP3: "127.0.0.1:0"}, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.Load(context.Background(), path, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestStepsUseTheGivenAddresses(t *testing.T) {
	g := Gateway{
		SMTP: netip.MustParseAddrPort("127.0.0.1:40025"), Submission: netip.MustParseAddrPort("127.0.0.1:40587"),
		IMAP: netip.MustParseAddrPort("127.0.0.1:40143"), POP3: netip.MustParseAddrPort("127.0.0.1:40110"),
		Web: "http://127.0.0.1:40080", Config: "/tmp/my demo/postern.yaml", Postern: "go run ./cmd/postern",
	}
	allowed := map[string]bool{"40025": true, "40587": true, "40143": true, "40110": true, "40080": true}
	port := regexp.MustCompile(`127\.0\.[01]\.\d+:(\d+)`)
	var buf bytes.Buffer
	Print(&buf, g, "/tmp/my demo")
	for _, m := range port.FindAllStringSubmatch(buf.String(), -1) {
		if !allowed[m[1]] {
			t.Errorf("printed port %s is not one of the gateway's", m[1])
		}
	}
	steps := Steps(g)
	seen := map[string]bool{}
	for _, st := range steps {
		for _, m := range port.FindAllStringSubmatch(st.Command, -1) {
			seen[m[1]] = true
		}
		if st.Postern != nil {
			if !strings.HasPrefix(st.Command, "go run ./cmd/postern ") || !strings.Contains(st.Command, "'/tmp/my demo/postern.yaml'") {
				t.Errorf("postern step not runnable as printed: %s", st.Command)
			}
		}
		if st.Title == "" || st.Expect == "" {
			t.Errorf("step without title or expectation: %+v", st)
		}
	}
	if len(seen) != len(allowed) {
		t.Errorf("the steps use ports %v, want every service's", seen)
	}
	if last := steps[len(steps)-2]; !slicesEqual(last.Postern, []string{"blocks", "list", "-c", g.Config}) {
		t.Errorf("the block is listed with blocks list: %+v", last)
	}
	// Without web, no web step.
	g.Web = ""
	for _, st := range Steps(g) {
		if strings.Contains(st.Command, "http://") {
			t.Errorf("web step without a web service: %s", st.Command)
		}
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "\x00") == strings.Join(b, "\x00") }

func TestOrdinalAndQuote(t *testing.T) {
	for n, want := range map[int]string{1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 11: "11th", 12: "12th", 13: "13th", 21: "21st", 22: "22nd", 103: "103rd"} {
		if got := ordinal(n); got != want {
			t.Errorf("ordinal(%d) = %q, want %q", n, got, want)
		}
	}
	for in, want := range map[string]string{"/tmp/a.yaml": "/tmp/a.yaml", "/tmp/a b": "'/tmp/a b'", "it's": `'it'\''s'`, "": "''", "$HOME": "'$HOME'"} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}
