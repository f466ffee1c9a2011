package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/policyd"
	"github.com/postern/postern/internal/snapshot"
)

// policyKeys are the policy settings a running gateway cannot change: the
// listeners and their limits are made at start. The grants follow a
// reload.
var policyKeys = []string{
	"policy.postfix.listen", "policy.postfix.decision_timeout", "policy.postfix.idle_timeout", "policy.postfix.max_connections",
	"policy.dovecot.listen", "policy.dovecot.decision_timeout", "policy.dovecot.idle_timeout", "policy.dovecot.max_connections",
	"policy.dovecot.hash_nonce_file",
	"policy.nginx.listen", "policy.nginx.decision_timeout", "policy.nginx.idle_timeout", "policy.nginx.max_connections",
	"policy.nginx.backends.imap", "policy.nginx.backends.pop3", "policy.nginx.backend_proxy", "policy.nginx.backend_timeout",
	"policy.nginx.backends.smtp", "policy.nginx.smtp_backend_proxy", "policy.nginx.smtp_backend_tls", "policy.nginx.smtp_backend_tls_verify", "policy.nginx.secret_file", "policy.nginx.secret_header",
}

// policyState is the gateway's policy servers (policy-service mode): their
// listeners, bound at start before privileges drop, and their grants,
// swapped on reload.
type policyState struct {
	postfixLn, dovecotLn, nginxLn          net.Listener
	postfixGrant, dovecotGrant, nginxGrant atomic.Pointer[func(netip.Addr) bool]
	postfix                                *policyd.Postfix
	dovecot                                *policyd.Dovecot
	nginx                                  *policyd.Nginx
	nginxSecret                            []byte // read at start
}

// policyGrant compiles a policy server's grant: addresses and networks
// only (the mail servers'), loopback when not set.
func policyGrant(snap *snapshot.Snapshot, name string, t config.Text) (func(netip.Addr) bool, error) {
	if !t.IsSet() {
		return netip.Addr.IsLoopback, nil
	}
	set, err := snap.Patterns.Expr(patternSource(t))
	if err != nil {
		return nil, err
	}
	if set.HasHosts() || set.HasMail() {
		return nil, diag.Errorf(t.Pos, "policy.%s.grant takes addresses and networks, not host or mail masks", name)
	}
	return set.Contains, nil
}

// bindPolicy compiles the policy servers' grants, creates Dovecot's hash
// nonce file when missing and binds the listeners (at start, before
// privileges drop).
func (g *Gateway) bindPolicy(snap *snapshot.Snapshot) error {
	p := &snap.Config.Policy
	commit, err := g.policyGrants(snap)
	if err != nil {
		return err
	}
	commit()
	bind := func(name string, l *config.PolicyListener) (net.Listener, error) {
		if !l.On() {
			return nil, nil
		}
		ln, err := net.Listen("tcp", l.Listen.Value)
		if err != nil {
			return nil, listenError("policy."+name, l.Listen.Value, err)
		}
		g.log.Info("listening", "policy", name, "addr", ln.Addr().String())
		return ln, nil
	}
	if g.policy.postfixLn, err = bind("postfix", &p.Postfix.PolicyListener); err != nil {
		return err
	}
	if p.Dovecot.On() && p.Dovecot.HashNonceFile.IsSet() {
		if err := policyd.EnsureNonce(p.Dovecot.HashNonceFile.Value); err != nil {
			return err
		}
	}
	if g.policy.dovecotLn, err = bind("dovecot", &p.Dovecot.PolicyListener); err != nil {
		return err
	}
	if p.Nginx.On() && p.Nginx.SecretFile.IsSet() {
		if g.policy.nginxSecret, err = policyd.ReadNginxSecret(p.Nginx.SecretFile.Value); err != nil {
			return err
		}
	}
	if g.policy.nginxLn, err = bind("nginx", &p.Nginx.PolicyListener); err != nil {
		return err
	}
	return nil
}

// policyGrants compiles the grants of snap; commit puts them in service.
func (g *Gateway) policyGrants(snap *snapshot.Snapshot) (commit func(), err error) {
	p := &snap.Config.Policy
	pf, err := policyGrant(snap, "postfix", p.Postfix.Grant)
	if err != nil {
		return nil, err
	}
	dc, err := policyGrant(snap, "dovecot", p.Dovecot.Grant)
	if err != nil {
		return nil, err
	}
	ng, err := policyGrant(snap, "nginx", p.Nginx.Grant)
	if err != nil {
		return nil, err
	}
	return func() {
		g.policy.postfixGrant.Store(&pf)
		g.policy.dovecotGrant.Store(&dc)
		g.policy.nginxGrant.Store(&ng)
	}, nil
}

// policyOptions are a policy server's options from its configuration; its
// grant is read anew for every connection.
func (g *Gateway) policyOptions(l *config.PolicyListener, grant *atomic.Pointer[func(netip.Addr) bool], name string) policyd.Options {
	return policyd.Options{
		Grant:           func(a netip.Addr) bool { return (*grant.Load())(a) },
		DecisionTimeout: l.DecisionTime.D,
		IdleTimeout:     l.IdleTimeout.D,
		MaxConns:        l.MaxConnections,
		Log:             g.log.With("policy", name),
	}
}

// servePolicy serves the bound policy listeners until ctx ends.
func (g *Gateway) servePolicy(ctx context.Context, wg *sync.WaitGroup) {
	p := &g.holder.Load().Config.Policy
	serve := func(name string, ln net.Listener, run func(context.Context, net.Listener) error) {
		wg.Go(func() {
			if err := run(ctx, ln); err != nil {
				g.log.Error("policy server stopped", "policy", name, "err", fmt.Errorf("policy.%s: %w", name, err))
			}
		})
	}
	if ln := g.policy.postfixLn; ln != nil {
		g.policy.postfix = policyd.NewPostfix(g.engine, g.policyOptions(&p.Postfix.PolicyListener, &g.policy.postfixGrant, "postfix"))
		serve("postfix", ln, g.policy.postfix.Serve)
	}
	if ln := g.policy.dovecotLn; ln != nil {
		g.policy.dovecot = policyd.NewDovecot(g.engine, g.policyOptions(&p.Dovecot.PolicyListener, &g.policy.dovecotGrant, "dovecot"))
		serve("dovecot", ln, g.policy.dovecot.Serve)
	}
	if ln := g.policy.nginxLn; ln != nil {
		o := nginxOptions(&p.Nginx, g.policyOptions(&p.Nginx.PolicyListener, &g.policy.nginxGrant, "nginx"))
		o.Secret = g.policy.nginxSecret
		g.policy.nginx = policyd.NewNginx(g.engine, o)
		serve("nginx", ln, g.policy.nginx.Serve)
	}
}

// nginxOptions are the nginx auth_http server's options from its
// configuration (validated: the backends are IP addresses and ports).
func nginxOptions(c *config.PolicyNginx, o policyd.Options) policyd.NginxOptions {
	addr := func(t config.Text) netip.AddrPort {
		if !t.IsSet() {
			return netip.AddrPort{}
		}
		ap, _ := netip.ParseAddrPort(t.Value)
		return ap
	}
	smtp := addr(c.Backends.SMTP)
	var smtpTLS *tls.Config
	if c.SMTPBackendTLS.Value == string(config.TLSStartTLS) {
		smtpTLS = &tls.Config{ServerName: smtp.Addr().String(), InsecureSkipVerify: !c.SMTPBackendTLSVerify, MinVersion: tls.VersionTLS12}
	}
	return policyd.NginxOptions{Options: o, SMTPBackendTLS: smtpTLS, IMAP: addr(c.Backends.IMAP), POP3: addr(c.Backends.POP3), SMTP: smtp,
		BackendProxy: c.BackendProxy.Value, SMTPBackendProxy: c.SMTPBackendProxy.Value, BackendTimeout: c.BackendTimeout.D,
		SecretHeader: c.SecretHeader.Value}
}

// closePolicy closes the policy listeners (Serve closes them too when its
// context ends; this covers a Start that failed before Run).
func (g *Gateway) closePolicy() {
	for _, ln := range []net.Listener{g.policy.postfixLn, g.policy.dovecotLn, g.policy.nginxLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

// PolicyAddr returns the address the named policy server ("postfix", "nginx",
// "dovecot", "nginx") listens on, or nil.
func (g *Gateway) PolicyAddr(name string) net.Addr {
	var ln net.Listener
	switch name {
	case "postfix":
		ln = g.policy.postfixLn
	case "dovecot":
		ln = g.policy.dovecotLn
	case "nginx":
		ln = g.policy.nginxLn
	}
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// PolicyStats returns the counters of the named policy server ("postfix", "nginx",
// "dovecot", "nginx") — requests, "no opinion" answers, refused and bad
// connections — or nil when it does not run.
func (g *Gateway) PolicyStats(name string) *policyd.Stats {
	switch {
	case name == "postfix" && g.policy.postfix != nil:
		return g.policy.postfix.Stats()
	case name == "dovecot" && g.policy.dovecot != nil:
		return g.policy.dovecot.Stats()
	case name == "nginx" && g.policy.nginx != nil:
		return g.policy.nginx.Stats()
	}
	return nil
}
