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
	"log/slog"
	"time"

	"github.com/postern/postern/internal/mailgate"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
)

// Config is one POP3 service's configuration (pop3 or pop3s).
type Config = mailgate.Config

// Engine is what the gateway needs of the intrusion prevention engine.
type Engine = mailgate.Engine

// wording is the gateway's fixed answers.
var wording = mailgate.Wording{
	Refuse:      "-ERR [SYS/PERM] ",
	Unavailable: "-ERR [SYS/TEMP] Server temporarily unavailable, try again later",
	AuthFailed:  "-ERR [AUTH] Authentication failed.",
	ReadBuffer:  maxLine + 2,
	WriteBuffer: 2048,
}

// Proxy serves one POP3 service.
type Proxy struct {
	g *mailgate.Gate
}

// New returns a Proxy; policy is read on every login.
func New(cfg Config, eng Engine, pol func() *policy.Policy, log *slog.Logger) *Proxy {
	return &Proxy{g: mailgate.New(cfg, wording, eng, pol, log)}
}

// Handle serves one client connection to its end.
func (p *Proxy) Handle(ctx context.Context, conn relay.Conn) {
	p.g.Handle(ctx, conn, func() (*mailgate.Session, mailgate.Protocol) {
		s := new(session)
		s.Session = &s.ms
		return s.Session, s
	})
}

// Serve handles connections from ln until ctx is done; live sessions get
// drain to finish.
func (p *Proxy) Serve(ctx context.Context, ln relay.Acceptor, drain time.Duration) error {
	return p.g.Serve(ctx, ln, drain, p.Handle)
}

// Live returns the number of connections being served.
func (p *Proxy) Live() int { return p.g.Live() }
