package spamscan

import (
	"cmp"
	"context"
	"errors"
	"io"
	"math"
	"net/netip"
	"slices"
)

// MaxSymbols caps Verdict.Symbols.
const MaxSymbols = 50

// ErrTooLarge is returned, without contacting the scanner, for a message
// larger than the scanner's configured maximum size.
var ErrTooLarge = errors.New("message too large to scan")

// Scanner scores a message. Implementations must never lose or block mail:
// on error the caller accepts the message and reports the error.
type Scanner interface {
	// Scan scores msg. It reads msg.Body but never keeps or changes it.
	Scan(ctx context.Context, msg Message) (Verdict, error)
	// Name names the scanner in logs, e.g. "rspamd".
	Name() string
}

// Message is a message to scan, with its SMTP envelope.
type Message struct {
	// Body is the whole message as received: headers and body, CRLF line
	// ends, dot-unstuffed. Scan reads Size bytes from offset 0.
	Body io.ReaderAt
	// Size is the length of the message in bytes.
	Size int64
	// From is the envelope sender; "" is the null sender of a bounce.
	From string
	// Rcpt are the envelope recipients.
	Rcpt []string
	// IP is the client address; the zero Addr if unknown.
	IP netip.Addr
	// Helo is the name the client gave in HELO/EHLO.
	Helo string
	// User is the authenticated user, if any.
	User string
	// QueueID identifies the message in logs, optional.
	QueueID string
}

// Verdict is what a scanner thinks of a message.
type Verdict struct {
	// Score is the message's spam score.
	Score float64
	// Threshold is the scanner's own reject threshold, if it says
	// (rspamd's "required_score", spamd's threshold); 0 otherwise.
	Threshold float64
	// Action is rspamd's recommended action: "no action", "add header",
	// "rewrite subject", "reject", "greylist" or "soft reject"; "" from a
	// scanner without actions.
	Action string
	// Symbols are the names of the rules that fired, sorted by name. At
	// most MaxSymbols are kept: those with the largest absolute scores.
	Symbols []string
}

// symbolScore is a fired rule and its score, for capping.
type symbolScore struct {
	name  string
	score float64
}

// topSymbols returns the names of syms sorted by name, keeping the
// MaxSymbols with the largest absolute scores (ties: by name).
func topSymbols(syms []symbolScore) []string {
	if len(syms) > MaxSymbols {
		slices.SortFunc(syms, func(a, b symbolScore) int {
			if c := cmp.Compare(math.Abs(b.score), math.Abs(a.score)); c != 0 {
				return c
			}
			return cmp.Compare(a.name, b.name)
		})
		syms = syms[:MaxSymbols]
	}
	names := make([]string, len(syms))
	for i, s := range syms {
		names[i] = s.name
	}
	slices.Sort(names)
	return names
}
