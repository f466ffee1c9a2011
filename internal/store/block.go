// Package store keeps postern's blocked addresses and the audit log of
// administrator actions (§10). The embedded store is a SQLite file; the
// engine's in-memory block table is the source of truth for lookups, and
// writes here before it reports a block as made.
package store

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Reason is an intrusion-prevention reason code (§6), as in IceWarp's
// Blocked IPs queue.
type Reason byte

// The reason codes.
const (
	ReasonTarpitAccount     Reason = 'A' // mail to a tarpit account
	ReasonContent           Reason = 'C' // tarpit by content rule
	ReasonDNSBL             Reason = 'D' // listed on a DNSBL
	ReasonConnections       Reason = 'I' // connections in one minute
	ReasonLogin             Reason = 'L' // failed logins
	ReasonSize              Reason = 'M' // oversized message
	ReasonUnknownRecipients Reason = 'P' // deliveries to unknown users
	ReasonRSET              Reason = 'R' // RSET commands
	ReasonSpam              Reason = 'S' // spam score
	ReasonManual            Reason = 'U' // blocked manually
	ReasonRelay             Reason = 'Y' // relay denials
)

var reasonNames = map[Reason]string{
	ReasonTarpitAccount:     "tarpit account",
	ReasonContent:           "content rule",
	ReasonDNSBL:             "DNSBL listing",
	ReasonConnections:       "connections per minute",
	ReasonLogin:             "failed logins",
	ReasonSize:              "message size",
	ReasonUnknownRecipients: "unknown recipients",
	ReasonRSET:              "RSET count",
	ReasonSpam:              "spam score",
	ReasonManual:            "manual",
	ReasonRelay:             "relay denials",
}

// Reasons lists every reason code in alphabetical order.
var Reasons = []Reason{
	ReasonTarpitAccount, ReasonContent, ReasonDNSBL, ReasonConnections, ReasonLogin,
	ReasonSize, ReasonUnknownRecipients, ReasonRSET, ReasonSpam, ReasonManual, ReasonRelay,
}

// Valid reports whether r is a known reason code.
func (r Reason) Valid() bool { _, ok := reasonNames[r]; return ok }

// Name returns the reason's name, e.g. "failed logins" for L.
func (r Reason) Name() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%q)", byte(r))
}

// String returns the one-letter code.
func (r Reason) String() string { return string(rune(r)) }

// ParseReason accepts a code letter (either case) or a reason name.
func ParseReason(s string) (Reason, error) {
	s = strings.TrimSpace(s)
	if len(s) == 1 {
		r := Reason(strings.ToUpper(s)[0])
		if r.Valid() {
			return r, nil
		}
	}
	for r, n := range reasonNames {
		if strings.EqualFold(s, n) {
			return r, nil
		}
	}
	return 0, fmt.Errorf("unknown reason %q: want one of A C D I L M P R S U Y", s)
}

// Block is one entry of the blocked-address queue: an address (a /32 or
// /128) or a whole prefix.
type Block struct {
	Prefix    netip.Prefix
	Reason    Reason
	Service   string    // the service it was seen on ("smtp", "imap", …; "" for manual blocks)
	Detail    string    // what was seen: the account tried, the size, the DNSBL zone, …
	FirstSeen time.Time // first event of the offence
	LastSeen  time.Time // last event or refused connection
	Hits      int64     // events counted, plus connections refused while blocked
	Expires   time.Time // zero: never expires
	Node      string    // the node that made the block
	By        string    // "engine" or "admin:<who>"
	Comment   string
	Level     int // escalation level: 0 for a first offence, n for the (n+1)th
}

// Expired reports whether the block has expired at now.
func (b *Block) Expired(now time.Time) bool {
	return !b.Expires.IsZero() && !now.Before(b.Expires)
}

// AuditEntry records one administrator action.
type AuditEntry struct {
	Time   time.Time
	Actor  string // who: "cli", "api:<token name>", "console:<user>"
	Action string // "block", "unblock", "purge-expired", "unblock-all", "import", …
	Target string // the address or prefix, or "" for bulk actions
	Detail string // free text: duration, comment, counts
}
