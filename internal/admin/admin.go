// Package admin is postern's administration API: an HTTP/1.1 + JSON
// API under /v1 for the Blocked IPs queue, the audit log and explanations,
// served on a unix socket (the CLI's default) or a TCP listener, and the
// client the `postern blocks` commands use. docs/openapi.yaml describes the
// API; docs/ADMIN.md shows it in use.
//
// The package knows nothing of how blocks are made or stored: it talks to
// the intrusion-prevention engine through the small Engine interface.
package admin

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/store"
)

// Defaults used when the configuration has no admin.listen or
// admin.token_file; `postern serve` and `postern blocks` share them.
const (
	DefaultListen    = "unix:/run/postern/admin.sock"
	DefaultTokenFile = "/var/lib/postern/admin.token"
)

// Actors recorded in the audit log for API calls. A call over the unix
// socket is recorded under the name of the OS user at the other end (from
// the socket's peer credentials), or "uid N" when the user has no name;
// ActorUnix only when the credentials cannot be read.
const (
	ActorTCP  = "token" // a TCP listener: whoever holds the token
	ActorUnix = "cli"   // the unix socket, peer credentials unknown
)

// ErrBadRequest marks an engine error that is the caller's fault (a bad
// import row, a prefix the engine refuses, …); the API answers it with 400
// and the error's text. Engines wrap it: fmt.Errorf("%w: …", ErrBadRequest).
var ErrBadRequest = errors.New("bad request")

// Engine is what the API needs of the intrusion-prevention engine.
type Engine interface {
	// Blocks returns every block, expired ones included, with current
	// counters.
	Blocks() []store.Block
	// BlockManual blocks a prefix for d (0: the configured block time),
	// reason U, by actor. It writes the store before returning.
	BlockManual(ctx context.Context, p netip.Prefix, d time.Duration, comment, actor string) (store.Block, error)
	// Unblock removes the blocks of exactly these prefixes and returns how
	// many existed.
	Unblock(ctx context.Context, prefixes []netip.Prefix, actor string) (int, error)
	// PurgeExpired removes the expired blocks and returns how many.
	PurgeExpired(ctx context.Context, actor string) (int, error)
	// UnblockAll removes every block and returns how many.
	UnblockAll(ctx context.Context, actor string) (int, error)
	// Import adds or replaces blocks, all or nothing.
	Import(ctx context.Context, blocks []store.Block, actor string) (int, error)
	// Audit returns up to limit audit entries at or after since.
	Audit(ctx context.Context, since time.Time, limit int) ([]store.AuditEntry, error)
	// Now is the engine's clock; "expired" is decided against it.
	Now() time.Time
}

// Explainer answers "why is this address allowed or not" from the running
// configuration and the engine's live blocks (explain.Func makes one).
// Errors wrapping explain.ErrQuery or ErrBadRequest (an unknown service,
// say) are answered with 400.
type Explainer func(ctx context.Context, q explain.Query) (explain.Answer, error)
