package gateway

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/postern/postern/internal/cluster"
	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/guard"
)

// openCluster makes the link to the other gateways when the configuration
// asks for cluster mode (nil otherwise). The stream position is kept next
// to the block store. Nothing is asked of Redis here: the link connects
// when it starts, and a gateway starts (and enforces its stored blocks)
// whether Redis answers or not.
func (g *Gateway) openCluster(cfg *config.File, node, storePath string) (guard.Cluster, []netip.Prefix, error) {
	cl, peers, err := cluster.FromConfig(&cfg.Cluster, node, filepath.Join(filepath.Dir(storePath), "cluster.state"), g.log)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %w", err)
	}
	if cl == nil {
		return nil, nil, nil
	}
	g.cluster = cl
	cluster.RouteClientLog(g.log)
	g.log.Info("cluster mode: sharing blocks and counters", "node", node, "key_prefix", cfg.Cluster.KeyPrefix)
	return cl, peers, nil
}

// startCluster starts the link once the engine runs.
func (g *Gateway) startCluster() {
	if g.cluster != nil {
		g.cluster.Start(g.engine)
	}
}

// closeCluster stops the link (before the engine closes).
func (g *Gateway) closeCluster() {
	if g.cluster != nil {
		if err := g.cluster.Close(); err != nil {
			g.log.Warn("closing the cluster link", "err", err)
		}
		g.cluster = nil
	}
}
