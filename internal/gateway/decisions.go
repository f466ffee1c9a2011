package gateway

import (
	"fmt"

	"github.com/postern/postern/internal/decisions"
	"github.com/postern/postern/internal/snapshot"
)

// decisionServer is the decision stream for CrowdSec firewall bouncers.
type decisionServer struct {
	srv *decisions.Server
}

func (g *Gateway) bindDecisions(snap *snapshot.Snapshot) error {
	dc := snap.Config.DecisionStream
	if !dc.On() {
		return nil
	}
	grant, err := grantOf(snap, "decision_stream.grant", dc.Grant)
	if err != nil {
		return err
	}
	// the keys file is read before privileges drop: it may be root's alone.
	keys, err := decisions.LoadKeys(dc.KeysFile.Value)
	if err != nil {
		return err
	}
	h, err := decisions.New(decisions.Options{Source: engineBlocks{g}, Keys: keys, Grant: grant})
	if err != nil {
		return err
	}
	srv, err := decisions.Listen(dc.Listen.Value, h)
	if err != nil {
		return fmt.Errorf("decision_stream cannot listen on %s: %w", dc.Listen.Value, err)
	}
	g.exp.decisions = &decisionServer{srv: srv}
	g.log.Info("listening", "service", "decision-stream", "addr", srv.Addr().String(), "keys", len(keys))
	return nil
}

// DecisionStreamAddr returns the decision stream's address, or "" when it
// is off.
func (g *Gateway) DecisionStreamAddr() string {
	if g.exp.decisions == nil {
		return ""
	}
	return g.exp.decisions.srv.Addr().String()
}
