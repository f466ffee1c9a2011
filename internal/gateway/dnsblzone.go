package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/postern/postern/internal/dnsblzone"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// exportKeys are the settings of the block exports (the DNSBL zone and the
// decision stream): read once at start, a change takes a restart.
var exportKeys = []string{"dnsbl_zone", "decision_stream"}

// exports are the block exports served from the engine's block table.
type exports struct {
	zone      *dnsblzone.Server // nil: dnsbl_zone off
	decisions *decisionServer   // nil: decision_stream off
}

// engineBlocks reads the gateway's engine, which exists once Start has
// opened the store (the exports bind before that, with privileges).
type engineBlocks struct{ g *Gateway }

func (e engineBlocks) BlockOf(a netip.Addr) (store.Block, bool) {
	if e.g.engine == nil {
		return store.Block{}, false
	}
	return e.g.engine.BlockOf(a)
}

func (e engineBlocks) Blocks() []store.Block {
	if e.g.engine == nil {
		return nil
	}
	return e.g.engine.Blocks()
}

// bindExports binds the listeners of the block exports, when configured;
// it runs before privileges drop (port 53 needs them).
func (g *Gateway) bindExports(snap *snapshot.Snapshot) error {
	if err := g.bindDNSBLZone(snap); err != nil {
		return err
	}
	return g.bindDecisions(snap)
}

func (g *Gateway) bindDNSBLZone(snap *snapshot.Snapshot) error {
	zc := snap.Config.DNSBLZone
	if !zc.On() {
		return nil
	}
	grant, err := grantOf(snap, "dnsbl_zone.grant", zc.Grant)
	if err != nil {
		return err
	}
	z, err := dnsblzone.New(dnsblzone.Options{Zone: zc.Zone.Value, Lookup: engineBlocks{g}, Grant: grant,
		TTL: zc.TTL.D, NS: zc.NS.Value, Mbox: zc.Hostmaster.Value})
	if err != nil {
		return err
	}
	if g.exp.zone, err = dnsblzone.Listen(zc.Listen.Value, z); err != nil {
		return fmt.Errorf("dnsbl_zone cannot listen on %s: %w", zc.Listen.Value, err)
	}
	g.log.Info("listening", "service", "dnsbl-zone", "addr", g.exp.zone.Addr().String(), "zone", z.Name())
	return nil
}

// DNSBLZoneAddr returns the DNSBL zone's address (UDP and TCP), or the
// zero value when it is off.
func (g *Gateway) DNSBLZoneAddr() netip.AddrPort {
	if g.exp.zone == nil {
		return netip.AddrPort{}
	}
	return g.exp.zone.Addr()
}

// serveExports serves the block exports until ctx ends; Run calls it.
func (g *Gateway) serveExports(ctx context.Context, wg *sync.WaitGroup) {
	if g.exp.zone != nil {
		wg.Go(func() {
			if err := g.exp.zone.Serve(ctx); err != nil {
				g.log.Error("dnsbl zone stopped", "err", err)
			}
		})
	}
	if g.exp.decisions != nil {
		wg.Go(func() {
			if err := g.exp.decisions.srv.Serve(ctx.Done()); err != nil {
				g.log.Error("decision stream stopped", "err", err)
			}
		})
	}
}

// closeExports closes the exports' listeners (Start failed, or shutdown).
func (g *Gateway) closeExports() {
	if g.exp.zone != nil {
		g.exp.zone.Close()
	}
	if g.exp.decisions != nil {
		_ = g.exp.decisions.srv.Close()
	}
}
