package main

import (
	"context"

	"github.com/postern/postern/internal/explain"
)

// explain answers the administration API's GET /v1/explain from the
// running snapshot and the engine's live block table; internal/explain
// composes the answer.
func (g *gateway) explain(ctx context.Context, q explain.Query) (explain.Answer, error) {
	return explain.Func(g.holder.Load, g.engine)(ctx, q)
}
