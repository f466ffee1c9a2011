package config

import (
	"strings"
	"testing"
	"time"
)

func TestPolicyConfig(t *testing.T) {
	f, err := Parse("/etc/postern/p.yaml", []byte(`
policy:
  postfix: { listen: "127.0.0.1:10040", grant: "127.0.0.1" }
  dovecot: { listen: "127.0.0.1:8084", grant: "127.0.0.1; ::1", hash_nonce_file: dovecot-nonce, max_connections: 10 }
`))
	if err != nil {
		t.Fatal(err)
	}
	p, d := f.Policy.Postfix, f.Policy.Dovecot
	if !p.On() || p.Listen.Value != "127.0.0.1:10040" || p.Grant.Value != "127.0.0.1" || p.DecisionTime.D != 2*time.Second || p.MaxConnections != 200 || p.IdleTimeout.D != 330*time.Second {
		t.Errorf("postfix: %+v", p)
	}
	if !d.On() || d.HashNonceFile.Value != "/etc/postern/dovecot-nonce" || d.MaxConnections != 10 {
		t.Errorf("dovecot: %+v", d)
	}
	f, err = Parse("/etc/postern/p.yaml", []byte(`
policy:
  nginx: { listen: "127.0.0.1:8085", backends: { imap: "127.0.0.1:10143", pop3: "[::1]:10110" }, decision_timeout: 5s }
`))
	if err != nil {
		t.Fatal(err)
	}
	if n := f.Policy.Nginx; !n.On() || n.Backends.IMAP.Value != "127.0.0.1:10143" || n.Backends.POP3.Value != "[::1]:10110" || n.DecisionTime.D != 5*time.Second || n.BackendTimeout.D != 10*time.Second || n.BackendProxy.IsSet() {
		t.Errorf("nginx: %+v", n)
	}
	f, err = Parse("/etc/postern/p.yaml", []byte(`
policy:
  nginx: { listen: "127.0.0.1:8085", backends: { smtp: "127.0.0.1:10587" }, smtp_backend_proxy: xclient, smtp_backend_tls: starttls, secret_file: nginx.key, secret_header: X-Mail-Key }
`))
	if err != nil {
		t.Fatal(err)
	}
	if n := f.Policy.Nginx; n.Backends.SMTP.Value != "127.0.0.1:10587" || n.SMTPBackendProxy.Value != "xclient" || n.SecretFile.Value != "/etc/postern/nginx.key" || n.SecretHeader.Value != "X-Mail-Key" || n.SMTPBackendTLS.Value != "starttls" || !n.SMTPBackendTLSVerify {
		t.Errorf("nginx smtp: %+v", n)
	}
	f, err = Parse("/etc/postern/p.yaml", []byte("services: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Policy.Postfix.On() || f.Policy.Dovecot.On() {
		t.Error("policy servers on without listen")
	}
}

func TestPolicyConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"policy: { postfix: { listen: \"127.0.0.1:x\" } }", "policy.postfix.listen"},
		{"policy: { postfix: { grant: \"127.0.0.1\" } }", "policy.postfix needs listen"},
		{"policy: { postfix: { listen: \":1\", hash_nonce_file: x } }", "hash_nonce_file"},
		{"policy: { dovecot: { listen: \":1\", decision_timeout: 0s } }", "decision_timeout must be positive"},
		{"policy: { dovecot: { listen: \":1\", max_connections: 0 } }", "max_connections"},
		{"policy: { exim: {} }", "exim"},
		{"policy: { nginx: { listen: \":1\" } }", "policy.nginx needs backends"},
		{"policy: { nginx: { backends: { imap: \"127.0.0.1:143\" } } }", "policy.nginx needs listen"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"mail.example:143\" } } }", "policy.nginx.backends.imap"},
		{"policy: { nginx: { listen: \":1\", backends: { pop3: \"127.0.0.1\" } } }", "policy.nginx.backends.pop3"},
		{"policy: { nginx: { listen: \":1\", backends: { smtp: \"localhost:587\" } } }", "policy.nginx.backends.smtp"},
		{"policy: { nginx: { listen: \":1\", backends: { smtp: \"127.0.0.1:587\" }, smtp_backend_proxy: none } }", "smtp_backend_proxy"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\" }, smtp_backend_proxy: xclient } }", "needs backends.smtp"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\" }, secret_header: X-Key } }", "secret_header needs secret_file"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\" }, secret_file: k, secret_header: \"X Key\" } }", "policy.nginx.secret_header"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\" }, secret_file: k, secret_header: Auth-Pass } }", "policy.nginx.secret_header"},
		{"policy: { nginx: { secret_file: k } }", "policy.nginx needs listen"},
		{"policy: { nginx: { listen: \":1\", backends: { smtp: \"127.0.0.1:587\" }, smtp_backend_tls: tls } }", "policy.nginx.smtp_backend_tls"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\" }, smtp_backend_tls: starttls } }", "smtp_backend_tls needs backends.smtp"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\", lmtp: \"127.0.0.1:24\" } } }", "lmtp"},
		{"policy: { nginx: { listen: \":1\", backends: { imap: \"127.0.0.1:143\" }, backend_proxy: xclient } }", "backend_proxy"},
	} {
		_, err := Parse("/etc/postern/p.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
