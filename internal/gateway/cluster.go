package gateway

import (
	"fmt"
	"path/filepath"

	"github.com/postern/postern/internal/cluster"
	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/guard"
)

// clusterOptions sets the engine options of cluster mode: the link to the
// other gateways, their addresses and the shared fingerprint key (opts is
// unchanged when cluster mode is off). The stream position is kept next to
// the block store. Nothing is asked of Redis here: the link connects when
// it starts, and a gateway starts (and enforces its stored blocks) whether
// Redis answers or not.
func (g *Gateway) clusterOptions(cfg *config.File, node, storePath string, opts *guard.Options) error {
	key, err := cluster.FingerprintKey(&cfg.Cluster)
	if err != nil {
		return err
	}
	cl, peers, err := cluster.FromConfig(&cfg.Cluster, node, filepath.Join(filepath.Dir(storePath), "cluster.state"), g.log)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if cl == nil {
		return nil
	}
	g.cluster = cl
	cluster.RouteClientLog(g.log)
	opts.Cluster, opts.Peers, opts.FingerprintKey = cl, peers, key
	g.log.Info("cluster mode: sharing blocks and counters", "node", node, "key_prefix", cfg.Cluster.KeyPrefix,
		"shared_fingerprints", key != nil)
	return nil
}

// startCluster starts the link once the engine runs.
func (g *Gateway) startCluster() {
	if g.cluster != nil {
		g.cluster.Start(g.engine)
	}
}

// closeCluster stops the link (before the engine closes).
func (g *Gateway) closeCluster() {
	g.closePassShare()
	if g.cluster != nil {
		if err := g.cluster.Close(); err != nil {
			g.log.Warn("closing the cluster link", "err", err)
		}
		g.cluster = nil
	}
}
