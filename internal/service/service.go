// Package service names the services postern fronts (smtp, submission,
// smtps, imap, imaps, pop3, pop3s, web), and postern's own web console,
// and what follows from the name:
// the protocol spoken, implicit TLS and the standard port. The
// configuration, the access policy, the engine, the gateways and the CLI
// share it; it imports nothing of postern.
package service

import (
	"fmt"
	"strings"
)

// Service is one of the services postern fronts. The zero value is no
// service; a Service is compared and used as an index without allocation.
type Service uint8

// The services, in the order the configuration shows them.
const (
	SMTP       Service = iota + 1 // smtp: mail exchange, port 25
	Submission                    // submission: mail submission, port 587
	SMTPS                         // smtps: submission over implicit TLS, port 465
	IMAP                          // imap: port 143
	IMAPS                         // imaps: IMAP over implicit TLS, port 993
	POP3                          // pop3: port 110
	POP3S                         // pop3s: POP3 over implicit TLS, port 995
	Web                           // web: the webmail gateway, port 443
	// Console is postern's own web console: its sign-ins are logins the
	// engine counts (in the web protocol group), so wrong console
	// passwords block an address with service "console". It is not a
	// service of the configuration: it has no entry under services, no
	// grant list of the access policy (console.grant is its own) and no
	// standard port, and is not in All.
	Console

	// Count is one more than the last service: an array of Count
	// elements is indexed by every Service.
	Count = int(Console) + 1
)

// All lists every service of the configuration in the order it shows
// them (Console is not one).
var All = []Service{SMTP, Submission, SMTPS, IMAP, IMAPS, POP3, POP3S, Web}

var names = [Count]string{"", "smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "web", "console"}

var ports = [Count]int{0, 25, 587, 465, 143, 993, 110, 995, 443, 0}

// Names is every service's name in the order of All, separated by ", ",
// for messages.
var Names = strings.Join(names[SMTP:Console], ", ")

// Parse returns the service of the configuration named name (exactly, in
// lower case); "console" is not one.
func Parse(name string) (Service, bool) {
	for _, s := range All {
		if names[s] == name {
			return s, true
		}
	}
	return 0, false
}

// Valid reports whether s is one of the services, Console included.
func (s Service) Valid() bool { return s >= SMTP && s <= Console }

// String returns the service's name as the configuration writes it,
// e.g. "submission".
func (s Service) String() string {
	if s.Valid() {
		return names[s]
	}
	return fmt.Sprintf("service(%d)", uint8(s))
}

// Protocol is the protocol a service speaks.
type Protocol uint8

// The protocols.
const (
	ProtocolSMTP Protocol = iota + 1 // smtp, submission, smtps
	ProtocolMail                     // imap, imaps, pop3, pop3s
	ProtocolWeb                      // web
)

// String returns "smtp", "mail" or "web".
func (p Protocol) String() string {
	switch p {
	case ProtocolSMTP:
		return "smtp"
	case ProtocolMail:
		return "mail"
	case ProtocolWeb:
		return "web"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Protocol returns the protocol s speaks; 0 when s is not valid.
func (s Service) Protocol() Protocol {
	switch s {
	case SMTP, Submission, SMTPS:
		return ProtocolSMTP
	case IMAP, IMAPS, POP3, POP3S:
		return ProtocolMail
	case Web, Console:
		return ProtocolWeb
	}
	return 0
}

// ImplicitTLS reports whether s speaks TLS from the first byte (smtps,
// imaps, pop3s).
func (s Service) ImplicitTLS() bool { return s == SMTPS || s == IMAPS || s == POP3S }

// DefaultPort returns the standard port of s; 0 when s is not valid or
// has none (Console).
func (s Service) DefaultPort() int {
	if s.Valid() {
		return ports[s]
	}
	return 0
}

// MarshalText writes the service's name; the zero Service is refused.
func (s Service) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("service: invalid service %d", uint8(s))
	}
	return []byte(names[s]), nil
}

// UnmarshalText reads a service's name as Parse does, and "console".
func (s *Service) UnmarshalText(b []byte) error {
	v, ok := Parse(string(b))
	if !ok && string(b) == names[Console] {
		v, ok = Console, true
	}
	if !ok {
		return fmt.Errorf("unknown service %q: want one of %s", b, Names)
	}
	*s = v
	return nil
}
