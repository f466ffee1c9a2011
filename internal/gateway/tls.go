package gateway

import (
	"crypto/tls"

	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/tlsconf"
)

// serverTLS is the server configuration of a service serving certs: its
// session tickets are sealed with the service's keys, which the gateway
// keeps across reloads (g.tickets), so a client resumes its session after
// a reload as before it, and a ticket of one service never resumes on
// another.
func (g *Gateway) serverTLS(name service.Service, certs *tlsconf.Certs) *tls.Config {
	return g.tickets.For(name.String()).Apply(certs.ServerConfig())
}
