package config

import (
	"github.com/postern/postern/internal/diag"
)

// PolicyServices configures the policy-service mode: postern answers
// Postfix's SMTP access policy delegation and Dovecot's authentication
// policy requests with the same engine the inline gateways use. A server
// whose listen is not set is off.
type PolicyServices struct {
	Postfix PolicyPostfix `yaml:"postfix"`
	Dovecot PolicyDovecot `yaml:"dovecot"`
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
	if f.Policy.Dovecot.HashNonceFile.IsSet() {
		f.resolve(&f.Policy.Dovecot.HashNonceFile)
	}
}
