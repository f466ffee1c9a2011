package guard

import (
	"net/netip"

	"github.com/postern/postern/internal/service"
)

// Attach opens a session for addr on svc without counting a connection
// toward connections per minute (I): for the policy services
// (internal/policyd), which see a mail server's questions about a client —
// one per login or per recipient — not the client's connections. The
// caller closes the session when it is done with it.
func (e *Engine) Attach(addr netip.Addr, svc service.Service) *Session {
	g, ok := GroupOf(svc)
	if !ok {
		g = GroupSMTP
	}
	s := &Session{e: e, addr: addr.Unmap(), service: svc, group: g, dead: make(chan struct{})}
	e.live.add(s)
	return s
}

// AdmitBlocks is Admit without the access policy's grant and deny lists:
// the block table alone decides (refuse, tarpit or allow, as Admit does).
// The policy services use it for a service postern does not serve itself,
// where Postfix or Dovecot owns the port and postern has no grant for it.
// It takes no lock and does not allocate.
func (e *Engine) AdmitBlocks(addr netip.Addr, svc service.Service) Verdict {
	return e.admitBlocks(e.settings.Load(), addr.Unmap(), svc)
}
