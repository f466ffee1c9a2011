// Package pop3proxy is postern's POP3 gateway (POP3) for the pop3 and
// pop3s services. postern speaks the authorization state itself — CAPA,
// STLS, USER/PASS, AUTH PLAIN and LOGIN (with initial response), QUIT —
// checks the login against the login IP restriction and the intrusion
// prevention engine, replays it to the backend (which sees the client's
// address through a PROXY header), relays the backend's answer, and after
// a successful login copies bytes both ways untouched.
package pop3proxy

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

// Config is one POP3 service's configuration.
type Config struct {
	Service     string // pop3 or pop3s
	Backend     relay.Dialer
	TLS         *tls.Config // offered with STLS (nil: not offered)
	ImplicitTLS bool
	// PlaintextLogin allows USER/PASS and AUTH before TLS from an address
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

// Proxy serves one POP3 service.
type Proxy struct {
	cfg    Config
	eng    Engine
	policy func() *policy.Policy
	log    *slog.Logger
	conns  relay.Conns

	authFail atomic.Pointer[string] // the backend's last -ERR for a failed login
	decoys   *decoy.Passwords       // the password a refused login is replayed with
}

// New returns a Proxy; policy is read on every login.
func New(cfg Config, eng Engine, pol func() *policy.Policy, log *slog.Logger) *Proxy {
	cfg.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{cfg: cfg, eng: eng, policy: pol, log: log.With("service", cfg.Service), decoys: decoy.New()}
	p.conns.Log = p.log
	def := "-ERR [AUTH] Authentication failed."
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
