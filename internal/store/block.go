// Package store keeps postern's blocked addresses and the audit log of
// administrator actions. The embedded store is a SQLite file; the
// engine's in-memory block table is the source of truth for lookups, and
// writes here before it reports a block as made.
package store

import (
	"net/netip"
	"time"

	"github.com/postern/postern/internal/reason"
)

// Block is one entry of the blocked-address queue: an address (a /32 or
// /128) or a whole prefix.
type Block struct {
	Prefix    netip.Prefix
	Reason    reason.Code
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
