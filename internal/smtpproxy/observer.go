package smtpproxy

import (
	"time"

	"github.com/postern/postern/internal/service"
)

// Observer is told what an SMTP gateway relays, for metrics
// (*metrics.Metrics implements it). Nothing it is told names an address or
// an account.
type Observer interface {
	// BackendDial reports one connection to the backend (as configured):
	// its time and error.
	BackendDial(svc service.Service, backend string, d time.Duration, err error)
	// SMTPMessage reports a message at its end: relayed (the backend's
	// final reply accepted it; size in bytes) or refused (by the backend
	// or by postern).
	SMTPMessage(svc service.Service, relayed bool, size int64)
	// SMTPRelayed reports, when a backend connection closes, the bytes
	// written to the backend (the client's commands and messages, as
	// postern relays them) and read from it (its replies), after the
	// connection was set up and above TLS.
	SMTPRelayed(svc service.Service, toBackend, toClient int64)
}

// message reports a message's end to the observer.
func (p *Proxy) message(relayed bool, size int64) {
	if o := p.cfg.Observer; o != nil {
		o.SMTPMessage(p.cfg.Service, relayed, size)
	}
}
