package demo

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// The demo's client addresses. Every 127.0.0.0/8 address is the local
// machine on Linux, so one machine can play several clients: curl
// --interface and swaks --local-interface pick the source address.
var (
	// You is the address an ordinary client connects from; it is in the
	// Admins pattern.
	You = netip.MustParseAddr("127.0.0.1")
	// Colleague is another address inside the granted "country", not an
	// admin.
	Colleague = netip.MustParseAddr("127.0.0.2")
	// Guesser guesses passwords until postern blocks it.
	Guesser = netip.MustParseAddr("127.0.0.66")
	// Abroad is outside the granted "country".
	Abroad = netip.MustParseAddr("127.0.1.1")
)

// FailedLogins is the demo's failed_logins threshold for every protocol:
// the FailedLogins-th wrong password from one address blocks it.
const FailedLogins = 3

// Listen holds the gateway's listen addresses ("host:port", port 0 for
// any free port). Web empty leaves the web service out.
type Listen struct {
	SMTP, Submission, IMAP, POP3, Web string
}

// ConfigFile is the name WriteConfig gives the configuration.
const ConfigFile = "postern.yaml"

// zoneMY is the demo's GeoIP data.
const zoneMY = `# Demo GeoIP data for 'postern demo' — NOT real country data.
# It places 127.0.0.0/24 (and ::1) in Malaysia so that the country rules of
# the demo configuration can be tried on one machine: 127.0.0.x is "in
# Malaysia", 127.0.1.x is "abroad". A real gateway loads a real country
# database instead (see examples/postern.yaml).
127.0.0.0/24
::1
`

// WriteConfig writes the demo configuration for the backends b into dir
// (postern.yaml, zones/my.zone; state/ is created by postern) and returns
// the configuration's path.
func WriteConfig(dir string, l Listen, b *Backends) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "zones"), 0o755); err != nil {
		return "", fmt.Errorf("demo config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zones", "my.zone"), []byte(zoneMY), 0o644); err != nil {
		return "", fmt.Errorf("demo config: %w", err)
	}
	path := filepath.Join(dir, ConfigFile)
	if err := os.WriteFile(path, []byte(Config(l, b)), 0o644); err != nil {
		return "", fmt.Errorf("demo config: %w", err)
	}
	return path, nil
}

// Config returns the demo configuration's text.
func Config(l Listen, b *Backends) string {
	var web string
	if l.Web != "" {
		web = fmt.Sprintf(`  # The webmail: its /admin page only for the Admins pattern; its login form
  # is recognised so that wrong passwords count (reason L).
  web:
    listen: %q
    backend: %q
    grant: "[GeoIP_MY]"
    paths:
      - { prefix: /admin, grant: "[Admins]" }
    login_forms:
      - { method: POST, path: %s, user_field: %s, password_field: %s, fail_status: %d }
`, l.Web, b.Web(), LoginPath, UserField, PasswordField, LoginFailedStatus)
	}
	users := Users()
	return fmt.Sprintf(`# postern demo configuration — written by 'postern demo'. Everything runs
# on loopback: the gateway below and, behind it, the demo's in-process mail
# backends (SMTP, IMAP, POP3, webmail), which take postern's PROXY v2
# header as Postfix and Dovecot do. Try it with the commands the demo
# prints; every key is explained in docs/CONFIGURATION.md and a production
# configuration is in examples/postern.yaml.

geoip:
  databases:
    - path: zones/my.zone          # demo data: 127.0.0.0/24 is "in Malaysia"

patterns:
  GeoIP_MY: "country:MY"           # every address the GeoIP data places in MY
  Admins: "%s"               # you: the only address that reaches /admin
  Office: "203.0.113.0/24; 2001:db8:10::/48"

local_domains: "%s"

services:
  # Port 25's job: mail from anyone to the local domain. No grant list.
  smtp:       { listen: %q, backend: %q, backend_proxy: v2 }
  # Submission: only authenticated users may send (AUTH without TLS is
  # allowed here because the demo is loopback only).
  submission: { listen: %q, backend: %q, backend_proxy: v2, allow_insecure_auth: true }
  # Reading mail: only from "Malaysia"; passwords without TLS only from
  # loopback.
  imap:       { listen: %q, backend: %q, backend_proxy: v2, grant: "[GeoIP_MY]", plaintext_login: "127.0.0.0/8; ::1" }
  pop3:       { listen: %q, backend: %q, backend_proxy: v2, grant: "[GeoIP_MY]", plaintext_login: "127.0.0.0/8; ::1" }
%s
# Login IP restrictions: everyone from "Malaysia"; %s only from Admins.
# A refused login looks like a wrong password and counts as one.
login_restrictions:
  - "*=[GeoIP_MY]"
  - "%s=[Admins]"

# Intrusion prevention: %d failed logins from one address block it for
# 10 minutes (reason L); the other triggers at demo-sized thresholds.
intrusion_prevention:
  block_minutes: 10
  refuse_blocked: true
  close_blocked_connection: true
  cross_session: true
  smtp:      { connections_per_minute: 600, failed_logins: %d, unknown_recipients: 3, relay_denials: 3,
               rset_count: 10, message_size: 10MB }
  imap_pop3: { connections_per_minute: 600, failed_logins: %d }
  web:       { connections_per_minute: 600, failed_logins: %d }

node: demo
store:
  path: state/postern.db
admin:
  listen: "unix:state/admin.sock"
  token_file: state/admin.token
log:
  level: info
  format: text
`, You, Domain,
		l.SMTP, b.SMTP(), l.Submission, b.SMTP(), l.IMAP, b.IMAP(), l.POP3, b.POP3(),
		web, users[1].Name, users[1].Name,
		FailedLogins, FailedLogins, FailedLogins, FailedLogins)
}

// quote returns s as one shell word.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@=,+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
