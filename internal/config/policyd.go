package config

import (
	"net/netip"
	"strings"

	"github.com/postern/postern/internal/diag"
)

// PolicyServices configures the policy-service mode: postern answers
// Postfix's SMTP access policy delegation and Dovecot's authentication
// policy requests with the same engine the inline gateways use. A server
// whose listen is not set is off.
type PolicyServices struct {
	Postfix PolicyPostfix `yaml:"postfix"`
	Dovecot PolicyDovecot `yaml:"dovecot"`
	Nginx   PolicyNginx   `yaml:"nginx"`
}

// PolicyListener is what every policy server has: where it listens, which
// addresses it answers (the mail servers'; loopback when not set), how
// long a decision may take before it answers "no opinion", how long a
// connection may idle and how many requests it serves at once.
type PolicyListener struct {
	Listen         Text     `yaml:"listen"`
	Grant          Text     `yaml:"grant"`
	DecisionTime   Duration `yaml:"decision_timeout" default:"2s"`
	IdleTimeout    Duration `yaml:"idle_timeout" default:"330s"`
	MaxConnections int      `yaml:"max_connections" default:"200" min:"1"`
}

// PolicyPostfix is Postfix's check_policy_service server.
type PolicyPostfix struct {
	PolicyListener `yaml:",inline"`
}

// PolicyDovecot is Dovecot's auth_policy_server_url server.
// HashNonceFile holds Dovecot's auth_policy_hash_nonce, with which
// Dovecot hashes the passwords it reports.
type PolicyDovecot struct {
	PolicyListener `yaml:",inline"`
	HashNonceFile  Text `yaml:"hash_nonce_file"`
}

// PolicyNginx is nginx's mail auth_http server. nginx leaves the password
// check to it: postern logs in once to the protocol's backend, behind a
// PROXY header naming the client, and answers nginx with that backend.
type PolicyNginx struct {
	PolicyListener `yaml:",inline"`
	Backends       NginxBackends `yaml:"backends"`
	// BackendProxy is the PROXY header of the check's login: v2 or v1.
	BackendProxy Text `yaml:"backend_proxy"`
	// SMTPBackendProxy is how the SMTP check names the client: v2, v1 or
	// xclient. Default: BackendProxy.
	SMTPBackendProxy Text `yaml:"smtp_backend_proxy"`
	// SMTPBackendTLS is whether the SMTP check starts TLS (STARTTLS)
	// before the login: none or starttls; SMTPBackendTLSVerify whether
	// it verifies the backend's certificate (for its IP address).
	SMTPBackendTLS       Text `yaml:"smtp_backend_tls"`
	SMTPBackendTLSVerify bool `yaml:"smtp_backend_tls_verify" default:"true"`
	// BackendTimeout bounds the check's connection and each of its reads
	// and writes.
	BackendTimeout Duration `yaml:"backend_timeout" default:"10s"`
	// SecretFile holds a shared secret every request must carry in the
	// header SecretHeader (nginx: auth_http_header).
	SecretFile   Text `yaml:"secret_file"`
	SecretHeader Text `yaml:"secret_header"`
}

// NginxBackends are the backends nginx is sent to, per protocol: an IP
// address and port (nginx's Auth-Server takes no host name). A protocol
// without a backend is refused. The SMTP backend is a submission port
// that offers AUTH to postern (after STARTTLS with smtp_backend_tls).
type NginxBackends struct {
	IMAP Text `yaml:"imap"`
	POP3 Text `yaml:"pop3"`
	SMTP Text `yaml:"smtp"`
}

// On reports whether the server is configured.
func (l *PolicyListener) On() bool { return l.Listen.IsSet() }

func (f *File) validatePolicy(d *decoder) {
	check := func(name string, l *PolicyListener) {
		if !l.On() {
			if l.Grant.IsSet() {
				d.errs.Add(diag.Errorf(l.Grant.Pos, "policy.%s needs listen", name))
			}
			return
		}
		if err := parseListen(l.Listen.Value); err != nil {
			d.errs.Add(diag.Errorf(l.Listen.Pos, "policy.%s.listen: %v", name, err))
		}
		if l.DecisionTime.D <= 0 {
			d.errs.Add(diag.Errorf(l.DecisionTime.Pos, "policy.%s.decision_timeout must be positive", name))
		}
		if l.IdleTimeout.D <= 0 {
			d.errs.Add(diag.Errorf(l.IdleTimeout.Pos, "policy.%s.idle_timeout must be positive", name))
		}
	}
	check("postfix", &f.Policy.Postfix.PolicyListener)
	check("dovecot", &f.Policy.Dovecot.PolicyListener)
	check("nginx", &f.Policy.Nginx.PolicyListener)
	f.validateNginx(d)
	if f.Policy.Dovecot.HashNonceFile.IsSet() {
		f.resolve(&f.Policy.Dovecot.HashNonceFile)
	}
}

func (f *File) validateNginx(d *decoder) {
	n := &f.Policy.Nginx
	b := &n.Backends
	if !n.On() {
		for _, t := range []*Text{&b.IMAP, &b.POP3, &b.SMTP, &n.BackendProxy, &n.SMTPBackendProxy, &n.SMTPBackendTLS, &n.SecretFile, &n.SecretHeader} {
			if t.IsSet() {
				d.errs.Add(diag.Errorf(t.Pos, "policy.nginx needs listen"))
				return
			}
		}
		return
	}
	if !b.IMAP.IsSet() && !b.POP3.IsSet() && !b.SMTP.IsSet() {
		d.errs.Add(diag.Errorf(n.Listen.Pos, "policy.nginx needs backends (imap, pop3, smtp)"))
	}
	for name, t := range map[string]*Text{"imap": &b.IMAP, "pop3": &b.POP3, "smtp": &b.SMTP} {
		if !t.IsSet() {
			continue
		}
		if ap, err := netip.ParseAddrPort(t.Value); err != nil || ap.Port() == 0 {
			d.errs.Add(diag.Errorf(t.Pos, "policy.nginx.backends.%s: %q: want an IP address and port (nginx's Auth-Server takes no host name)", name, t.Value))
		}
	}
	if n.BackendProxy.IsSet() && n.BackendProxy.Value != string(ProxyV2) && n.BackendProxy.Value != string(ProxyV1) {
		d.errs.Add(diag.Errorf(n.BackendProxy.Pos, "policy.nginx.backend_proxy: %q: want v2 or v1", n.BackendProxy.Value))
	}
	if p := n.SMTPBackendProxy; p.IsSet() && p.Value != string(ProxyV2) && p.Value != string(ProxyV1) && p.Value != string(ProxyXClient) {
		d.errs.Add(diag.Errorf(p.Pos, "policy.nginx.smtp_backend_proxy: %q: want v2, v1 or xclient", p.Value))
	} else if p.IsSet() && !b.SMTP.IsSet() {
		d.errs.Add(diag.Errorf(p.Pos, "policy.nginx.smtp_backend_proxy needs backends.smtp"))
	}
	if t := n.SMTPBackendTLS; t.IsSet() && t.Value != string(TLSNone) && t.Value != string(TLSStartTLS) {
		d.errs.Add(diag.Errorf(t.Pos, "policy.nginx.smtp_backend_tls: %q: want none or starttls", t.Value))
	} else if t.IsSet() && !b.SMTP.IsSet() {
		d.errs.Add(diag.Errorf(t.Pos, "policy.nginx.smtp_backend_tls needs backends.smtp"))
	}
	if n.BackendTimeout.D <= 0 {
		d.errs.Add(diag.Errorf(n.BackendTimeout.Pos, "policy.nginx.backend_timeout must be positive"))
	}
	if h := n.SecretHeader; h.IsSet() {
		if !n.SecretFile.IsSet() {
			d.errs.Add(diag.Errorf(h.Pos, "policy.nginx.secret_header needs secret_file"))
		} else if !validHeaderName(h.Value) || strings.HasPrefix(strings.ToLower(h.Value), "auth-") || strings.EqualFold(h.Value, "client-ip") || strings.EqualFold(h.Value, "client-host") {
			d.errs.Add(diag.Errorf(h.Pos, "policy.nginx.secret_header: %q: want a header name of letters, digits and '-' that nginx does not send itself", h.Value))
		}
	}
	f.resolve(&n.SecretFile)
}

// validHeaderName reports whether s is a plain HTTP header name: letters,
// digits and '-', not starting with '-'.
func validHeaderName(s string) bool {
	if s == "" || s[0] == '-' || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
