package smtpproxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/relay"
)

// FromConfig builds the Config of SMTP service svc from the configuration
// file. serverTLS is the service's certificate configuration (nil without
// tls:); smtps needs one.
func FromConfig(svc *config.Service, f *config.File, serverTLS *tls.Config) (Config, error) {
	o := svc.SMTP
	if o == nil {
		return Config{}, fmt.Errorf("service %s is not an SMTP service", svc.Name)
	}
	c := Config{
		Service:           svc.Name,
		Hostname:          string(o.Hostname),
		Backend:           svc.Backend.Value,
		BackendProxy:      string(o.BackendProxy),
		AllowInsecureAuth: o.AllowInsecureAuth,
		MaxLineLength:     o.MaxLineLength,
		MaxRecipients:     o.MaxRecipients,
		RequireAuth:       o.RequireAuth,
		BackendLimit:      relay.NewBackendLimit(o.MaxBackend, o.MaxBackendPerNetwork),
		BackendNames:      &relay.Names{},
		Timeouts: Timeouts{
			FirstCommand: o.Timeouts.FirstCommand.D,
			Command:      o.Timeouts.Command.D, Data: o.Timeouts.Data.D, Session: o.Timeouts.Session.D,
			Connect: o.Timeouts.Connect.D, Backend: o.Timeouts.Backend.D, DNSBL: f.DNS.Timeout.D,
		},
	}
	if o.BackendTLS != config.TLSNone {
		c.BackendTLS = string(o.BackendTLS)
	}
	if c.BackendTLS != "" {
		host, _, err := net.SplitHostPort(c.Backend)
		if err != nil {
			return c, fmt.Errorf("service %s: backend %q: %w", svc.Name, c.Backend, err)
		}
		c.BackendTLSConfig = &tls.Config{ServerName: host, InsecureSkipVerify: !svc.BackendTLSVerify, MinVersion: tls.VersionTLS12}
	}
	if svc.Name.ImplicitTLS() {
		if serverTLS == nil {
			return c, fmt.Errorf("service %s needs tls: { cert, key }", svc.Name)
		}
		c.ImplicitTLS = true
	} else {
		c.TLS = serverTLS
	}
	for _, u := range o.UnknownUserCodes {
		c.UnknownUserCodes = append(c.UnknownUserCodes, strings.TrimSpace(u.Value))
	}
	for _, r := range f.ContentRules {
		// Compiled once, when the configuration was decoded.
		c.ContentRules = append(c.ContentRules, ContentRule{Name: r.Name.Value, Header: r.Header.Re, Body: r.Body.Re})
	}
	return c, nil
}
