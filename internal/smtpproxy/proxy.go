// Package smtpproxy is postern's SMTP gateway (SMTP) for the smtp,
// submission and smtps services. It relays a client's session to the real
// MTA command by command: it sees every command and reply, reports what it
// sees to the intrusion prevention engine (package guard) and obeys its
// decisions, and relays the backend's replies unchanged — so a message is
// acknowledged to the client only with the backend's own final reply.
//
// Both sides are a purpose-built state machine over bufio rather than
// emersion/go-smtp: a transparent relay must send the backend's greeting
// and replies as they are, reply and close, pass through MAIL/RCPT
// parameters it does not know (DSN, SMTPUTF8, REQUIRETLS), talk XCLIENT to
// the backend, and stop reading a message the moment it grows too large.
package smtpproxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/netip"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
)

// Timeouts of one SMTP service.
type Timeouts struct {
	Command time.Duration // waiting for the client's next command (RFC 5321: 5 min)
	// FirstCommand is how long a client may stay silent after the
	// greeting: while it does, it holds a backend connection.
	FirstCommand time.Duration
	Data         time.Duration // waiting for the next chunk of a message
	Session      time.Duration // a whole connection
	Connect      time.Duration // connecting to the backend
	Backend      time.Duration // waiting for one backend reply
	DNSBL        time.Duration // DNSBL lookups at connect
}

// ContentRule is a regular expression on message headers or body (C).
type ContentRule struct {
	Name   string
	Header *regexp.Regexp // matched against each header line (unfolded continuation lines are separate)
	Body   *regexp.Regexp // matched against each body line
}

// Config is one SMTP service's configuration.
type Config struct {
	Service  service.Service // smtp, submission or smtps
	Observer Observer        // told messages and backend connections (metrics); nil: none
	Hostname string          // postern's name in its own replies
	// Watch judges and records successful logins (login_alerts); nil: none.
	Watch gate.LoginWatcher

	Backend          string              // host:port
	BackendLimit     *relay.BackendLimit // connections to the backend at once, in all and per client network; nil: no bound
	BackendNames     *relay.Names        // the backend host name's addresses, kept for a bounded time; nil: looked up on every dial
	BackendProxy     string              // v2 (default), v1, xclient or none
	BackendTLS       string              // none (default), starttls or tls
	BackendTLSConfig *tls.Config         // for BackendTLS

	TLS               *tls.Config // offered with STARTTLS (nil: not offered); for smtps the listener does TLS
	ImplicitTLS       bool
	RequireAuth       bool // submission: AUTH before MAIL
	AllowInsecureAuth bool // AUTH without TLS

	MaxLineLength    int // command lines
	MaxRecipients    int
	UnknownUserCodes []string // enhanced codes counted as unknown recipients (P)
	ContentRules     []ContentRule
	Scan             Scanning // Scan.Scanner nil: no scanning, messages stream through
	Timeouts         Timeouts

	// Loops, when set, runs the sessions of plain TCP connections on
	// these event loops (event_loops): a session leaves its loop
	// (evloop.MayBlock) before a tarpit delay, DNS list lookups, a TLS
	// handshake, spooling a message for the spam scanner, or an account
	// protection delay.
	Loops *evloop.Group
}

func (c *Config) defaults() {
	if c.Hostname == "" {
		c.Hostname = "postern"
	}
	if c.MaxLineLength <= 0 {
		c.MaxLineLength = 2048
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 1000
	}
	if c.Scan.Timeout <= 0 {
		c.Scan.Timeout = 10 * time.Second
	}
	if c.Scan.MemLimit <= 0 {
		c.Scan.MemLimit = 1 << 20
	}
	if len(c.UnknownUserCodes) == 0 {
		c.UnknownUserCodes = []string{"5.1.1"}
	}
	t := &c.Timeouts
	for _, v := range []struct {
		d   *time.Duration
		def time.Duration
	}{{&t.Command, 5 * time.Minute}, {&t.Data, 10 * time.Minute}, {&t.Session, time.Hour},
		{&t.Connect, 10 * time.Second}, {&t.Backend, 5 * time.Minute}, {&t.DNSBL, 3 * time.Second},
		{&t.FirstCommand, time.Minute}} {
		if *v.d <= 0 {
			*v.d = v.def
		}
	}
}

// Engine is what the gateway needs of the intrusion prevention engine.
type Engine interface {
	Accept(addr netip.Addr, svc service.Service, closer func()) (*guard.Session, guard.Verdict)
	PasswordFingerprint(account, password string) uint64
	Settings() *guard.Settings
}

// DNSBL looks an address up on blocklist or whitelist zones; a zone that
// fails or times out does not list it.
type DNSBL interface {
	Listed(ctx context.Context, addr netip.Addr, zones []string) (zone, reason string)
}

// Env is what the gateway reads from the running configuration on every
// connection, so that a reload takes effect at once.
type Env struct {
	Policy       *policy.Policy
	DNSBLZones   []string // blocklists (D)
	DNSWLZones   []string // whitelists (w: bypass)
	LocalDomains map[string]bool
}

// Proxy serves one SMTP service.
type Proxy struct {
	cfg   Config
	eng   Engine
	env   func() Env
	dnsbl DNSBL
	log   *slog.Logger

	authFail atomic.Pointer[reply]   // the backend's last 535 reply, for a refused login whose decoy the backend accepted
	logins   *gate.Logins            // the service's login gate
	ehlo     atomic.Pointer[ehloSet] // postern's answers to EHLO from the backend's last one
	replies  *replyCache             // the backend's replies, kept to be read again without a copy

	conns relay.Conns
	bufs  bufPools // the sessions' buffers, reused from one session to the next
}

// New returns a Proxy. env is called once per connection; dnsbl may be nil.
func New(cfg Config, eng Engine, env func() Env, dnsbl DNSBL, log *slog.Logger) *Proxy {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, eng: eng, env: env, dnsbl: dnsbl, log: log.With("service", cfg.Service.String()), logins: gate.NewLogins(eng), replies: newReplyCache()}
	p.conns.Log = p.log
	p.conns.Loops = cfg.Loops
	if cfg.Watch != nil {
		p.logins.Watch(cfg.Watch, cfg.Service.String())
	}
	p.bufs.lineSize = cfg.MaxLineLength + 2
	def := newReply(535, "5.7.8 Error: authentication failed: (reason unavailable)") // Postfix's wording until the backend says its own
	p.authFail.Store(&def)
	return p
}

// Acceptor is a listener of client connections with their real
// addresses.
type Acceptor = relay.Acceptor

// Serve handles connections from ln until ctx is done or ln fails; then it
// closes ln and waits for the live sessions, closing those still running
// after drain.
func (p *Proxy) Serve(ctx context.Context, ln Acceptor, drain time.Duration) error {
	return p.conns.Serve(ctx, ln, drain, p.Handle)
}

// Live returns the number of connections being served.
func (p *Proxy) Live() int { return p.conns.Live() }
