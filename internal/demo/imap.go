package demo

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"github.com/postern/postern/internal/pop3mem"
)

// imapBackend is go-imap v2's in-memory server with the demo users,
// behind a mandatory PROXY header.
type imapBackend struct {
	b     *Backends
	srv   *imapserver.Server
	users map[string]*imapmemserver.User // key: lower-case address; fixed after start
	addr  netip.AddrPort
	done  chan struct{}
}

func startIMAP(b *Backends, ln net.Listener) (*imapBackend, error) {
	s := &imapBackend{b: b, users: make(map[string]*imapmemserver.User), addr: addrPort(ln), done: make(chan struct{})}
	for _, u := range Users() {
		mu := imapmemserver.NewUser(u.Name, u.Password)
		if err := mu.Create("INBOX", nil); err != nil {
			ln.Close()
			return nil, fmt.Errorf("demo imap backend: %w", err)
		}
		s.users[strings.ToLower(u.Name)] = mu
	}
	s.srv = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &imapSession{s: s, client: remoteAddr(c.NetConn())}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapSASLIR: {}, imap.CapLiteralPlus: {}, imap.CapIdle: {}, imap.CapUIDPlus: {}, imap.CapMove: {}},
		InsecureAuth: true, // postern is in front; the demo is loopback only
		Logger:       discardLogger{},
	})
	pl := requireProxy(ln)
	go func() {
		defer close(s.done)
		s.srv.Serve(pl)
	}()
	return s, nil
}

func (s *imapBackend) close() error {
	err := s.srv.Close()
	<-s.done
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// append adds a message to a demo user's INBOX.
func (s *imapBackend) append(user string, data []byte) error {
	u := s.users[strings.ToLower(user)]
	if u == nil {
		return fmt.Errorf("demo imap backend: no user %q", user)
	}
	_, err := u.Append("INBOX", literal{bytes.NewReader(data)}, &imap.AppendOptions{Time: time.Now()})
	if err != nil {
		return fmt.Errorf("demo imap backend: delivering to %s: %w", user, err)
	}
	return nil
}

// literal is an in-memory imap.LiteralReader.
type literal struct{ *bytes.Reader }

func (l literal) Size() int64 { return l.Reader.Size() }

// imapSession is imapmemserver's user session with a Login that records
// the attempt and the client address postern passed on.
type imapSession struct {
	*imapmemserver.UserSession // nil until logged in

	s      *imapBackend
	client netip.Addr
}

func (ss *imapSession) Login(username, password string) error {
	u := ss.s.users[strings.ToLower(username)]
	var err error = imapserver.ErrAuthFailed
	if u != nil {
		err = u.Login(username, password)
	}
	ss.s.b.recordLogin(Login{Backend: "imap", User: username, Client: ss.client, OK: err == nil})
	if err != nil {
		return err
	}
	ss.UserSession = imapmemserver.NewUserSession(u)
	return nil
}

// pop3Backend is pop3mem with the demo users, behind a mandatory PROXY
// header.
type pop3Backend struct {
	srv  *pop3mem.Server
	addr netip.AddrPort
	done chan struct{}
}

func startPOP3(b *Backends, ln net.Listener) *pop3Backend {
	srv := pop3mem.New(pop3mem.Options{
		Hostname:           "mail." + Domain,
		RequireProxyHeader: true,
		AllowPlaintextAuth: true, // postern is in front; the demo is loopback only
		Logger:             b.log.With(slog.String("backend", "pop3")),
		IdleTimeout:        2 * time.Minute,
	})
	for _, u := range Users() {
		srv.AddUser(u.Name, u.Password)
	}
	s := &pop3Backend{srv: srv, addr: addrPort(ln), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		srv.Serve(ln)
	}()
	return s
}

func (s *pop3Backend) close() error {
	err := s.srv.Close()
	<-s.done
	return err
}
