package smtpproxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/relay"
)

// IsService reports whether name is an SMTP service.
func IsService(name string) bool {
	return name == "smtp" || name == "submission" || name == "smtps"
}

// FromConfig builds the Config of SMTP service name from the configuration
// file. serverTLS is the service's certificate configuration (nil without
// tls:); smtps needs one.
func FromConfig(name string, svc *config.Service, f *config.File, serverTLS *tls.Config) (Config, error) {
	c := Config{
		Service:           name,
		Hostname:          svc.Hostname,
		Backend:           svc.Backend.Value,
		BackendProxy:      svc.BackendProxy.Value,
		BackendTLS:        svc.BackendTLS.Value,
		AllowInsecureAuth: svc.AllowInsecureAuth,
		MaxLineLength:     svc.MaxLineLength,
		MaxRecipients:     svc.MaxRecipients,
		BackendLimit:      relay.NewBackendLimit(svc.MaxBackend, svc.MaxBackendPerNetwork),
		Timeouts: Timeouts{
			FirstCommand: svc.Timeouts.FirstCommand.D,
			Command:      svc.Timeouts.Command.D, Data: svc.Timeouts.Data.D, Session: svc.Timeouts.Session.D,
			Connect: svc.Timeouts.Connect.D, Backend: svc.Timeouts.Backend.D, DNSBL: f.DNS.Timeout.D,
		},
	}
	if c.BackendProxy == "" {
		c.BackendProxy = "v2"
	}
	if c.BackendTLS == "none" {
		c.BackendTLS = ""
	}
	if c.BackendTLS != "" {
		host, _, err := net.SplitHostPort(c.Backend)
		if err != nil {
			return c, fmt.Errorf("service %s: backend %q: %w", name, c.Backend, err)
		}
		verify := svc.BackendTLSVerify == nil || *svc.BackendTLSVerify
		c.BackendTLSConfig = &tls.Config{ServerName: host, InsecureSkipVerify: !verify, MinVersion: tls.VersionTLS12}
	}
	switch name {
	case "smtps":
		if serverTLS == nil {
			return c, fmt.Errorf("service smtps needs tls: { cert, key }")
		}
		c.ImplicitTLS = true
	default:
		c.TLS = serverTLS
	}
	c.RequireAuth = name == "submission"
	if svc.RequireAuth != nil {
		c.RequireAuth = *svc.RequireAuth
	}
	for _, u := range svc.UnknownUserCodes {
		c.UnknownUserCodes = append(c.UnknownUserCodes, strings.TrimSpace(u.Value))
	}
	for _, r := range f.ContentRules {
		cr := ContentRule{Name: r.Name.Value}
		var err error
		if r.Header.IsSet() {
			if cr.Header, err = regexp.Compile(r.Header.Value); err != nil {
				return c, fmt.Errorf("content rule %q: %w", r.Name.Value, err)
			}
		}
		if r.Body.IsSet() {
			if cr.Body, err = regexp.Compile(r.Body.Value); err != nil {
				return c, fmt.Errorf("content rule %q: %w", r.Name.Value, err)
			}
		}
		c.ContentRules = append(c.ContentRules, cr)
	}
	return c, nil
}
