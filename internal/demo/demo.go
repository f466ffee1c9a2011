// Package demo runs the in-process mail backends of "postern demo": an SMTP
// server (emersion/go-smtp), an IMAP server (go-imap v2's imapmemserver), a
// POP3 server (pop3mem) and a small HTTP "webmail", all on loopback, all
// sharing one in-memory mail store with fixed demo users. The mail servers
// expect a PROXY protocol v2 header in front of every connection, as
// Postfix (smtpd_upstream_proxy_protocol) and Dovecot (haproxy listeners)
// do behind postern, so they log the real client address postern passes
// on. The webmail reads the client address from X-Forwarded-For.
//
// The package also writes the demo configuration (WriteConfig) and the
// "what to try" steps printed for the ports in use (Steps).
package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Domain is the demo mail domain.
const Domain = "example.com"

// User is a demo mailbox and its password.
type User struct {
	Name     string // full address, e.g. alice@example.com
	Password string
}

// Users returns the fixed demo users. Alice may log in from any address
// the demo's GeoIP data places in Malaysia; Bob only from the Admins
// pattern (127.0.0.1), to show a per-account login restriction.
func Users() []User {
	return []User{
		{Name: "alice@" + Domain, Password: "alice-demo-pw"},
		{Name: "bob@" + Domain, Password: "bob-demo-pw"},
	}
}

// Options configures Start.
type Options struct {
	// Host is the address the backends listen on (port 0); default
	// 127.0.0.1.
	Host netip.Addr
	// Logger receives one line per delivery and login; nil discards.
	Logger *slog.Logger
}

// Login is one login attempt as a backend saw it.
type Login struct {
	Backend string     // smtp, imap, pop3 or web
	User    string     // as the client sent it
	Client  netip.Addr // from the PROXY header (web: X-Forwarded-For)
	OK      bool
}

// Delivery is one message the SMTP backend accepted.
type Delivery struct {
	Client netip.Addr // from the PROXY header
	From   string
	To     []string
	Data   []byte // as stored, with the backend's Received header
}

// Backends are the running demo backends.
type Backends struct {
	log  *slog.Logger
	smtp *smtpBackend
	imap *imapBackend
	pop3 *pop3Backend
	web  *webBackend

	mu         sync.Mutex
	logins     []Login
	deliveries []Delivery
}

// maxRecords bounds the logins and deliveries a Backends keeps.
const maxRecords = 10000

// Start starts every backend on Host with port 0. Close stops them.
func Start(ctx context.Context, opts Options) (_ *Backends, err error) {
	if !opts.Host.IsValid() {
		opts.Host = netip.MustParseAddr("127.0.0.1")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Backends{log: log}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	listen := func(name string) (net.Listener, error) {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(opts.Host, 0).String())
		if err != nil {
			return nil, fmt.Errorf("demo %s backend: %w", name, err)
		}
		return ln, nil
	}
	var ln net.Listener
	if ln, err = listen("pop3"); err != nil {
		return nil, err
	}
	b.pop3 = startPOP3(b, ln)
	if ln, err = listen("imap"); err != nil {
		return nil, err
	}
	if b.imap, err = startIMAP(b, ln); err != nil {
		return nil, err
	}
	if ln, err = listen("smtp"); err != nil {
		return nil, err
	}
	b.smtp = startSMTP(b, ln)
	if ln, err = listen("web"); err != nil {
		return nil, err
	}
	b.web = startWeb(b, ln)
	for _, u := range Users() {
		if err := b.deliver(netip.Addr{}, "postmaster@"+Domain, []string{u.Name}, welcome(u.Name)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// welcome is the message every demo mailbox starts with.
func welcome(user string) []byte {
	return []byte("From: postern demo <postmaster@" + Domain + ">\r\n" +
		"To: <" + user + ">\r\n" +
		"Subject: Welcome to the postern demo\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: <welcome." + strings.ReplaceAll(user, "@", ".") + "@" + Domain + ">\r\n" +
		"\r\n" +
		"This mailbox lives in memory inside 'postern demo'.\r\n" +
		"You read it through postern, which checked your address and password first.\r\n")
}

// SMTP is the SMTP backend's address (PROXY v2 required).
func (b *Backends) SMTP() netip.AddrPort { return b.smtp.addr }

// IMAP is the IMAP backend's address (PROXY v2 required).
func (b *Backends) IMAP() netip.AddrPort { return b.imap.addr }

// POP3 is the POP3 backend's address (PROXY v2 required).
func (b *Backends) POP3() netip.AddrPort { return b.pop3.addr }

// Web is the webmail backend's URL, http://host:port.
func (b *Backends) Web() string { return "http://" + b.web.addr.String() }

// Logins returns the login attempts the backends saw, oldest first.
func (b *Backends) Logins() []Login {
	b.mu.Lock()
	out := append([]Login(nil), b.logins...)
	b.mu.Unlock()
	for _, r := range b.pop3.srv.Logins() {
		out = append(out, Login{Backend: "pop3", User: r.User, Client: r.Client.Addr(), OK: r.OK})
	}
	return out
}

// Deliveries returns the messages the SMTP backend accepted, oldest
// first (the welcome messages are not included).
func (b *Backends) Deliveries() []Delivery {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Delivery(nil), b.deliveries...)
}

// recordLogin keeps a login attempt and logs it (never the password).
func (b *Backends) recordLogin(l Login) {
	b.mu.Lock()
	if len(b.logins) >= maxRecords {
		b.logins = append(b.logins[:0:0], b.logins[len(b.logins)-maxRecords+1:]...)
	}
	b.logins = append(b.logins, l)
	b.mu.Unlock()
	b.log.Info("demo backend login", "backend", l.Backend, "user", l.User, "client", l.Client.String(), "ok", l.OK)
}

// deliver stores a message in the mailboxes of the local recipients known
// to the demo (IMAP INBOX, POP3 maildrop and webmail share it).
func (b *Backends) deliver(client netip.Addr, from string, to []string, data []byte) error {
	var errs []error
	for _, rcpt := range to {
		if !isDemoUser(rcpt) {
			continue
		}
		if err := b.imap.append(rcpt, data); err != nil {
			errs = append(errs, err)
		}
		if err := b.pop3.srv.AddMessage(rcpt, data); err != nil {
			errs = append(errs, err)
		}
	}
	if client.IsValid() {
		b.mu.Lock()
		if len(b.deliveries) >= maxRecords {
			b.deliveries = append(b.deliveries[:0:0], b.deliveries[len(b.deliveries)-maxRecords+1:]...)
		}
		b.deliveries = append(b.deliveries, Delivery{Client: client, From: from, To: append([]string(nil), to...), Data: data})
		b.mu.Unlock()
		b.log.Info("demo backend delivery", "backend", "smtp", "client", client.String(), "from", from, "to", strings.Join(to, ","), "bytes", len(data))
	}
	return errors.Join(errs...)
}

// Close stops every backend and waits for their goroutines.
func (b *Backends) Close() error {
	var errs []error
	if b.web != nil {
		errs = append(errs, b.web.close())
	}
	if b.smtp != nil {
		errs = append(errs, b.smtp.close())
	}
	if b.imap != nil {
		errs = append(errs, b.imap.close())
	}
	if b.pop3 != nil {
		errs = append(errs, b.pop3.close())
	}
	return errors.Join(errs...)
}

// isDemoUser reports whether addr names a demo mailbox.
func isDemoUser(addr string) bool {
	_, ok := password(addr)
	return ok
}

// password returns the demo user's password.
func password(user string) (string, bool) {
	for _, u := range Users() {
		if strings.EqualFold(u.Name, user) {
			return u.Password, true
		}
	}
	return "", false
}

// addrPort returns a listener's address.
func addrPort(ln net.Listener) netip.AddrPort {
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// remoteAddr returns the client address of a connection (after a PROXY
// header, the address it announced).
func remoteAddr(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
