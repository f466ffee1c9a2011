// Package imapproxy is postern's IMAP gateway (IMAP) for the imap and
// imaps services. postern speaks the pre-authentication dialogue itself —
// CAPABILITY, STARTTLS, ID, NOOP, LOGOUT, LOGIN and AUTHENTICATE PLAIN or
// LOGIN with SASL-IR — checks the login against the login IP restriction
// and the intrusion prevention engine, replays it to the backend (which sees
// the client's address through a PROXY header) and relays the backend's
// answer. After a successful login it copies bytes both ways untouched.
package imapproxy

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/decoy"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
)

// Config is one IMAP service's configuration.
type Config struct {
	Service     string // imap or imaps
	Backend     relay.Dialer
	TLS         *tls.Config // offered with STARTTLS (nil: not offered)
	ImplicitTLS bool
	// PlaintextLogin allows LOGIN/AUTHENTICATE before TLS from an address
	// (trusted networks); nil allows it from none.
	PlaintextLogin func(netip.Addr) bool
	PreAuthIdle    time.Duration // waiting for a command before login (default 1m)
	BackendTimeout time.Duration // waiting for the backend (default 30s)
	MaxErrors      int           // bad commands before the connection closes (default 10)
}

func (c *Config) defaults() {
	if c.PreAuthIdle <= 0 {
		c.PreAuthIdle = time.Minute
	}
	if c.BackendTimeout <= 0 {
		c.BackendTimeout = 30 * time.Second
	}
	if c.MaxErrors <= 0 {
		c.MaxErrors = 10
	}
}

// Engine is what the gateway needs of the intrusion prevention engine.
type Engine interface {
	Accept(addr netip.Addr, service string, closer func()) (*guard.Session, guard.Verdict)
	PasswordFingerprint(account, password string) uint64
}

// Proxy serves one IMAP service.
type Proxy struct {
	cfg    Config
	eng    Engine
	policy func() *policy.Policy
	log    *slog.Logger
	conns  relay.Conns

	// authFail is the backend's last failure text (after the tag), for
	// the one refusal the backend does not answer itself: a decoy
	// password it accepted.
	authFail atomic.Pointer[string]
	// decoys gives the password a refused login is replayed with.
	decoys *decoy.Passwords
}

// New returns a Proxy; policy is read on every login, so a reload takes
// effect at once.
func New(cfg Config, eng Engine, pol func() *policy.Policy, log *slog.Logger) *Proxy {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, eng: eng, policy: pol, log: log.With("service", cfg.Service), decoys: decoy.New()}
	p.conns.Log = p.log
	def := "NO [AUTHENTICATIONFAILED] Authentication failed."
	p.authFail.Store(&def)
	return p
}

// Serve handles connections from ln until ctx is done; live sessions get
// drain to finish.
func (p *Proxy) Serve(ctx context.Context, ln relay.Acceptor, drain time.Duration) error {
	return p.conns.Serve(ctx, ln, drain, p.Handle)
}

// Live returns the number of connections being served.
func (p *Proxy) Live() int { return p.conns.Live() }
