package doctor

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/relay"
)

// Backend is how a gateway reaches the backend of one mail service, built
// from the configuration exactly as the gateways build it.
type Backend struct {
	// Dialer writes the PROXY header (none for XCLIENT, which follows the
	// greeting) and does the implicit TLS of a `backend_tls: tls` port.
	Dialer relay.Dialer
	// Proxy is the configured backend_proxy: v2, v1, xclient or none.
	Proxy config.ProxyMode
	// TLS is the configured backend_tls: none, starttls (SMTP) or tls.
	TLS config.TLSMode
	// TLSConfig is the client TLS configuration for starttls and tls.
	TLSConfig *tls.Config
	// Hostname is what postern says in EHLO (SMTP; default "postern").
	Hostname string
}

// BackendFor builds the Backend of the mail service name from svc.
func BackendFor(name string, svc *config.Service) (Backend, error) {
	b := Backend{Hostname: "postern"}
	switch {
	case svc.SMTP != nil:
		o := svc.SMTP
		b.Proxy, b.TLS = o.BackendProxy, o.BackendTLS
		if o.Hostname != "" {
			b.Hostname = string(o.Hostname)
		}
		b.Dialer = relay.Dialer{Addr: svc.Backend.Value, Proxy: string(o.BackendProxy), Timeout: o.Timeouts.Connect.D,
			Limit: relay.NewBackendLimit(o.MaxBackend, o.MaxBackendPerNetwork), Service: name}
	case svc.Mail != nil:
		o := svc.Mail
		b.Proxy, b.TLS = o.BackendProxy, o.BackendTLS
		b.Dialer = relay.Dialer{Addr: svc.Backend.Value, Proxy: string(o.BackendProxy), Timeout: o.Timeouts.Connect.D,
			Limit: relay.NewBackendLimit(o.MaxBackend, o.MaxBackendPerNetwork), Service: name}
	default:
		return b, fmt.Errorf("service %s has no mail backend", name)
	}
	if b.Proxy == "" {
		b.Proxy = config.ProxyV2
	}
	if b.Proxy == config.ProxyXClient {
		b.Dialer.Proxy = string(config.ProxyNone)
	}
	if b.TLS == "" {
		b.TLS = config.TLSNone
	}
	if b.TLS != config.TLSNone {
		host, _, err := net.SplitHostPort(b.Dialer.Addr)
		if err != nil {
			return b, fmt.Errorf("service %s: backend %q: %w", name, b.Dialer.Addr, err)
		}
		b.TLSConfig = &tls.Config{ServerName: host, InsecureSkipVerify: !svc.BackendTLSVerify, MinVersion: tls.VersionTLS12}
		if b.TLS == config.TLSImplicit {
			b.Dialer.TLS = b.TLSConfig
		}
	}
	return b, nil
}

// Hop is the backend connection as advice names it.
func (b Backend) Hop(conn net.Conn) relay.Hop {
	h := b.Dialer.Hop(conn)
	h.Proxy = string(b.Proxy)
	return h
}

// via says in a few words how postern connects.
func (b Backend) via() string {
	s := "no PROXY header"
	switch b.Proxy {
	case config.ProxyV1:
		s = "PROXY v1"
	case config.ProxyV2:
		s = "PROXY v2"
	case config.ProxyXClient:
		s = "XCLIENT"
	}
	switch b.TLS {
	case config.TLSStartTLS:
		s += ", STARTTLS"
	case config.TLSImplicit:
		s += ", TLS"
	}
	return s
}

// dialProblem is the advice for a failed dial: nothing listening, TLS
// refused, or the relay's own advice.
func dialProblem(h relay.Hop, example string, err error) string {
	var ae *relay.AdviceError
	switch {
	case errors.As(err, &ae):
		return ae.Advice
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens at %s: start %s there or correct services.%s.backend (see %s)", h.Addr, h.Server(), h.Service, example)
	case relay.TimedOut(err):
		return fmt.Sprintf("%s did not answer the connection in time: a firewall, or the wrong address in services.%s.backend", h.Addr, h.Service)
	}
	return fmt.Sprintf("cannot connect to %s at %s", h.Server(), h.Addr)
}
