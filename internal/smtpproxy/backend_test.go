package smtpproxy

import (
	"github.com/postern/postern/internal/gwtest"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	proxyproto "github.com/pires/go-proxyproto"
)

// testMTA is an in-process mail server standing in for Postfix: it takes a
// PROXY v2 header, knows two local users, refuses relaying, checks AUTH
// PLAIN, and keeps the messages it accepted.
type testMTA struct {
	addr string
	mu   sync.Mutex
	msgs []testMsg
	seen []netip.Addr // client addresses from PROXY headers
	srv  *smtp.Server
	auth gwtest.Arrivals // logins that reached the MTA
}

type testMsg struct {
	From   string
	To     []string
	Data   []byte
	Client netip.Addr
	Opts   *smtp.MailOptions
}

var localUsers = map[string]string{"alice@example.test": "alice-pass-1", "bob@example.test": "bob-pass-2"}

func startMTA(t *testing.T, withProxy bool) *testMTA {
	t.Helper()
	m := &testMTA{}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		ap, _ := netip.ParseAddrPort(c.Conn().RemoteAddr().String())
		m.mu.Lock()
		m.seen = append(m.seen, ap.Addr())
		m.mu.Unlock()
		return &mtaSession{m: m, client: ap.Addr()}, nil
	})
	s := smtp.NewServer(be)
	s.Domain = "mx.example.test"
	s.AllowInsecureAuth = true
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	s.EnableREQUIRETLS = true
	s.MaxMessageBytes = 10 << 20
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	m.srv = s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var l net.Listener = ln
	if withProxy {
		l = &proxyproto.Listener{Listener: ln, ConnPolicy: func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			return proxyproto.REQUIRE, nil
		}, ReadHeaderTimeout: 5 * time.Second}
	}
	m.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(l) }()
	// The listener is closed too: Close before Serve has taken it would
	// leave Serve accepting.
	t.Cleanup(func() { s.Close(); ln.Close(); <-done })
	return m
}

func (m *testMTA) messages() []testMsg {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]testMsg(nil), m.msgs...)
}

type mtaSession struct {
	m      *testMTA
	client netip.Addr
	authed bool
	from   string
	opts   *smtp.MailOptions
	to     []string
}

func (s *mtaSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *mtaSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		s.m.auth.Arrive()
		if p, ok := localUsers[user]; ok && p == pass {
			s.authed = true
			return nil
		}
		return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed: (reason unavailable)"}
	}), nil
}
func (s *mtaSession) Mail(from string, opts *smtp.MailOptions) error {
	s.from, s.opts = from, opts
	return nil
}
func (s *mtaSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	dom := to[strings.LastIndexByte(to, '@')+1:]
	if dom != "example.test" && !s.authed {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}
	if _, ok := localUsers[to]; dom == "example.test" && !ok {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: Recipient address rejected: User unknown in virtual mailbox table"}
	}
	s.to = append(s.to, to)
	return nil
}
func (s *mtaSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.m.mu.Lock()
	s.m.msgs = append(s.m.msgs, testMsg{From: s.from, To: s.to, Data: b, Client: s.client, Opts: s.opts})
	n := len(s.m.msgs)
	s.m.mu.Unlock()
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as TEST" + strings.Repeat("X", n)}
}
func (s *mtaSession) Reset()        { s.from, s.to = "", nil }
func (s *mtaSession) Logout() error { return nil }
