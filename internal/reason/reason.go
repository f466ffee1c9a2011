// Package reason is the vocabulary of intrusion prevention: the one-letter
// reason codes of a block, as in IceWarp's Blocked IPs queue, and their
// names. Front-ends, the engine, the store and the CLI share it; it
// imports nothing of postern.
package reason

import (
	"fmt"
	"strings"
)

// Code is a block's reason code.
type Code byte

// The reason codes.
const (
	TarpitAccount     Code = 'A' // mail to a tarpit account
	Content           Code = 'C' // tarpit by content rule
	DNSBL             Code = 'D' // listed on a DNSBL
	Connections       Code = 'I' // connections in one minute
	Login             Code = 'L' // failed logins
	Size              Code = 'M' // oversized message
	UnknownRecipients Code = 'P' // deliveries to unknown users
	RSET              Code = 'R' // RSET commands
	Spam              Code = 'S' // spam score
	Manual            Code = 'U' // blocked manually
	Relay             Code = 'Y' // relay denials
)

var names = map[Code]string{
	TarpitAccount:     "tarpit account",
	Content:           "content rule",
	DNSBL:             "DNSBL listing",
	Connections:       "connections per minute",
	Login:             "failed logins",
	Size:              "message size",
	UnknownRecipients: "unknown recipients",
	RSET:              "RSET count",
	Spam:              "spam score",
	Manual:            "manual",
	Relay:             "relay denials",
}

// All lists every reason code in alphabetical order.
var All = []Code{
	TarpitAccount, Content, DNSBL, Connections, Login,
	Size, UnknownRecipients, RSET, Spam, Manual, Relay,
}

// Valid reports whether r is a known reason code.
func (r Code) Valid() bool { _, ok := names[r]; return ok }

// Name returns the reason's name, e.g. "failed logins" for L.
func (r Code) Name() string {
	if n, ok := names[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%q)", byte(r))
}

// String returns the one-letter code.
func (r Code) String() string { return string(rune(r)) }

// Parse accepts a code letter (either case) or a reason name.
func Parse(s string) (Code, error) {
	s = strings.TrimSpace(s)
	if len(s) == 1 {
		r := Code(strings.ToUpper(s)[0])
		if r.Valid() {
			return r, nil
		}
	}
	for r, n := range names {
		if strings.EqualFold(s, n) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown reason %q: want one of A C D I L M P R S U Y", s)
}
