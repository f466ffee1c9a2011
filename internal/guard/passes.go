package guard

import (
	"context"
	"net/netip"

	"github.com/postern/postern/internal/passes"
)

// SetPasses gives the engine the travel passes that extend login IP
// restrictions (nil: none). The table keeps its own clock.
func (e *Engine) SetPasses(t *passes.Table) { e.passes.Store(t) }

// Passes returns the travel passes set with SetPasses, or nil.
func (e *Engine) Passes() *passes.Table { return e.passes.Load() }

// LoginPass reports the travel pass that lets account (as the backend
// resolves it) log in from addr now, if any. It is asked only for a login
// its restriction refused; it is never on the accept path.
func (e *Engine) LoginPass(ctx context.Context, account string, addr netip.Addr) (passes.Pass, bool) {
	return e.passes.Load().Allow(ctx, account, addr)
}
