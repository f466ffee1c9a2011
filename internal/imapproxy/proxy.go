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
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/mailgate"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/relay"
)

// Config is one IMAP service's configuration (imap or imaps).
type Config = mailgate.Config

// Engine is what the gateway needs of the intrusion prevention engine.
type Engine = mailgate.Engine

// wording is the gateway's fixed answers.
var wording = mailgate.Wording{
	Refuse:      "* BYE ",
	Unavailable: "* BYE [UNAVAILABLE] Server temporarily unavailable, try again later",
	AuthFailed:  "NO [AUTHENTICATIONFAILED] Authentication failed.",
	ReadBuffer:  maxLine + 2,
	WriteBuffer: 4096,
}

// Proxy serves one IMAP service.
type Proxy struct {
	g *mailgate.Gate
	// caps is what the backend's last greeting said, reused while its
	// greeting is the same.
	caps atomic.Pointer[capSet]
}

// New returns a Proxy; policy is read on every login, so a reload takes
// effect at once.
func New(cfg Config, eng Engine, pol func() *policy.Policy, log *slog.Logger) *Proxy {
	return &Proxy{g: mailgate.New(cfg, wording, eng, pol, log)}
}

// Handle serves one client connection to its end.
func (p *Proxy) Handle(ctx context.Context, conn relay.Conn) {
	p.g.Handle(ctx, conn, func() (*mailgate.Session, mailgate.Protocol) {
		s := &session{p: p}
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
