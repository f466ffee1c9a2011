package gateway

import (
	"context"

	"github.com/postern/postern/internal/passes"
)

// startPasses loads the travel passes from the store, hands them to the
// engine (the login gate asks it) and serves them on the admin API.
// A pass whose list no longer compiles is kept, never matching, and
// logged.
func (g *Gateway) startPasses(ctx context.Context) error {
	g.passes = passes.NewManager(passes.NewTable(g.engine.Now), g.db, g.currentPolicy)
	warns, err := g.passes.Load(ctx)
	if err != nil {
		return err
	}
	for _, w := range warns {
		g.log.Warn("travel pass allows nothing", "err", w)
	}
	g.engine.SetPasses(g.passes.Table())
	g.api.SetPasses(g.passes)
	if n := len(g.passes.List()); n > 0 {
		g.log.Info("travel passes loaded", "passes", n)
	}
	g.sharePasses()
	return nil
}

// recompilePasses compiles the passes' lists against a configuration
// just put in service (its patterns and GeoIP data), and drops the
// expired ones.
func (g *Gateway) recompilePasses() {
	if g.passes == nil {
		return
	}
	for _, w := range g.passes.Recompile() {
		g.log.Warn("travel pass allows nothing after the reload", "err", w)
	}
	if _, err := g.passes.Sweep(g.ctx); err != nil {
		g.log.Warn("could not delete expired travel passes", "err", err)
	}
}
