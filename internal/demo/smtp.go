package demo

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	proxyproto "github.com/pires/go-proxyproto"
)

// maxMessage is the largest message the demo SMTP backend takes.
const maxMessage = 10 << 20

// smtpBackend is a small MTA: mail for the demo users is stored, mail for
// other domains needs AUTH (and is accepted and dropped), unknown local
// users and relay attempts get Postfix's replies, so postern's P and Y
// triggers count them.
type smtpBackend struct {
	b    *Backends
	srv  *smtp.Server
	addr netip.AddrPort
	done chan struct{}
}

func startSMTP(b *Backends, ln net.Listener) *smtpBackend {
	s := &smtpBackend{b: b, addr: addrPort(ln), done: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &smtpSession{s: s, client: remoteAddr(c.Conn())}, nil
	}))
	srv.Domain = "mail." + Domain
	srv.AllowInsecureAuth = true // postern is in front; the demo is loopback only
	srv.MaxMessageBytes = maxMessage
	srv.MaxRecipients = 100
	srv.ReadTimeout, srv.WriteTimeout = 2*time.Minute, 2*time.Minute
	srv.ErrorLog = discardLogger{}
	s.srv = srv
	pl := requireProxy(ln)
	go func() {
		defer close(s.done)
		srv.Serve(pl)
	}()
	return s
}

func (s *smtpBackend) close() error {
	err := s.srv.Close()
	<-s.done
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// smtpSession is one SMTP connection.
type smtpSession struct {
	s      *smtpBackend
	client netip.Addr
	authed bool
	from   string
	to     []string
}

func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		want, known := password(user)
		if !known {
			want = "\x00unknown user"
		}
		ok := known && (identity == "" || identity == user) && subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
		ss.s.b.recordLogin(Login{Backend: "smtp", User: user, Client: ss.client, OK: ok})
		if !ok {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed: authentication failure"}
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	at := strings.LastIndexByte(to, '@')
	local := at >= 0 && strings.EqualFold(to[at+1:], Domain)
	switch {
	case local && !isDemoUser(to):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: Recipient address rejected: User unknown in virtual mailbox table"}
	case !local && !ss.authed:
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	body, err := io.ReadAll(io.LimitReader(r, maxMessage+1))
	if err != nil {
		return err
	}
	if len(body) > maxMessage {
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds fixed limit"}
	}
	received := fmt.Sprintf("Received: from [%s] (client address from postern's PROXY header)\r\n\tby mail.%s (postern demo backend); %s\r\n",
		ss.client, Domain, time.Now().UTC().Format(time.RFC1123Z))
	msg := append([]byte(received), body...)
	if err := ss.s.b.deliver(ss.client, ss.from, ss.to, msg); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: queue file write error"}
	}
	return nil
}

func (ss *smtpSession) Reset() {
	ss.from, ss.to = "", nil
}

func (ss *smtpSession) Logout() error { return nil }

// requireProxy wraps ln so that every connection must start with a PROXY
// header (v1 or v2), as Postfix and Dovecot expect behind postern.
func requireProxy(ln net.Listener) net.Listener {
	return &proxyproto.Listener{
		Listener:          ln,
		ConnPolicy:        func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
		ReadHeaderTimeout: 5 * time.Second,
	}
}

// discardLogger silences the libraries' own error logs (a client that
// hangs up is not news in a demo).
type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}
