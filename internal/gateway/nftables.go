package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/postern/postern/internal/nftexport"
	"github.com/postern/postern/internal/snapshot"
)

// nftState is the nftables export: the netlink target, opened at start
// before privileges drop, and the exporter, made once the engine runs.
// The nftables keys are read at start (see restartKeys).
type nftState struct {
	target *nftexport.Netlink
	x      *nftexport.Exporter
}

// openNftables opens netlink and finds (or makes) the table and sets of the
// nftables export, at start while postern still holds its privileges: a
// refusal of the kernel or a missing set stops the start with what to do.
func (g *Gateway) openNftables(snap *snapshot.Snapshot) error {
	n := snap.Config.Nftables
	if !n.Enabled {
		return nil
	}
	t, err := nftexport.Open(nftexport.Config{
		Family: n.Family.Value, Table: n.Table.Value, Set4: n.SetV4.Value, Set6: n.SetV6.Value,
		Create: n.Create, Chain: n.DropChain.Value,
	}, g.opts.NftablesNetNS)
	if err != nil {
		return err
	}
	g.nft.target = t
	g.log.Info("nftables export ready", "family", n.Family.Value, "table", n.Table.Value, "set_v4", n.SetV4.Value, "set_v6", n.SetV6.Value, "drop_chain", n.DropChain.Value)
	return nil
}

// startNftables writes the block table into the sets once (after the
// privilege drop: if the process lost CAP_NET_ADMIN, the start fails here
// and says so).
func (g *Gateway) startNftables(snap *snapshot.Snapshot) error {
	if g.nft.target == nil {
		return nil
	}
	n := snap.Config.Nftables
	g.nft.x = nftexport.New(nftexport.Options{
		Blocks:  g.engine.Blocks,
		Exclude: g.nftExcluded,
		Target:  g.nft.target,
		Log:     g.log,
		Poll:    n.Poll.D,
		Resync:  n.Resync.D,
	})
	err := g.nft.x.Reconcile()
	if errors.Is(err, nftexport.ErrPermission) && snap.Config.RunAs != "" {
		return fmt.Errorf("%w; run_as %q dropped it: the kernel checks the capability at every write, even on a netlink socket opened before; run postern as that user with systemd's User= and AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE instead of run_as", err, snap.Config.RunAs)
	}
	return err
}

// nftExcluded keeps out of the sets what must never be refused by the
// kernel: loopback, trusted upstreams and bypassed addresses (a network
// block is checked at its first and last address).
func (g *Gateway) nftExcluded(p netip.Prefix) bool {
	if p.Overlaps(netip.PrefixFrom(netip.AddrFrom4([4]byte{127}), 8)) || p.Contains(netip.IPv6Loopback()) {
		return true
	}
	r := nftexport.RangeOf(p)
	st := g.engine.Settings()
	for _, a := range []netip.Addr{r.From, r.To} {
		if st.Bypass.Addr(a) || (st.Policy != nil && st.Policy.TrustedUpstream(a)) {
			return true
		}
	}
	return false
}

// runNftables keeps the sets in step until ctx ends.
func (g *Gateway) runNftables(ctx context.Context, wg *sync.WaitGroup) {
	if g.nft.x != nil {
		wg.Go(func() { g.nft.x.Run(ctx) })
	}
}

// closeNftables closes the netlink connection; the sets keep their
// elements, which lapse by themselves.
func (g *Gateway) closeNftables() {
	if g.nft.target != nil {
		if err := g.nft.target.Close(); err != nil {
			g.log.Warn("nftables export: closing netlink", "err", err)
		}
		g.nft.target = nil
	}
}
