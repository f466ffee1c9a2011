// Package gateway runs postern: it loads the configuration into a
// snapshot, opens the block store, starts the intrusion prevention engine,
// the administration API and one front-end per configured service, and
// applies a reloaded configuration (SIGHUP) to all of them while they run.
//
// A reload builds everything from the new snapshot before it changes
// anything: a configuration that does not build is rejected and the
// running one stays whole. Then it swaps the snapshot, hands each
// listener over to a server built from the new configuration (sessions
// in flight finish on the configuration they started with), binds the
// listeners of new and moved services, closes those of removed ones, and
// logs which keys changed and which wait for a restart.
package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/autoreload"
	"github.com/postern/postern/internal/buildinfo"
	"github.com/postern/postern/internal/cluster"
	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/dnsbl"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/preflight"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
	"github.com/postern/postern/internal/tlsconf"
)

// DefaultStorePath is where blocks are kept when store.path is not set.
const DefaultStorePath = "/var/lib/postern/postern.db"

// Defaults of Options.
const (
	// DefaultReloadTimeout bounds a configuration reload: reading and
	// compiling every file, GeoIP databases and bypass host names
	// included. A reload that takes longer is abandoned and the running
	// configuration stays.
	DefaultReloadTimeout = 2 * time.Minute
	// DefaultDrain is how long live sessions may finish after a stop
	// signal.
	DefaultDrain = 30 * time.Second
)

// sweepInterval is how often the engine's housekeeping runs.
const sweepInterval = time.Minute

// reloadAbandonGrace is how long shutdown waits for an abandoned or
// cancelled reload to return before it closes the store anyway.
const reloadAbandonGrace = 2 * time.Second

// Options are what the command line gives a gateway beyond its
// configuration file.
type Options struct {
	// Log receives the structured log; nil: os.Stderr.
	Log io.Writer
	// Warnings lists configuration warnings beyond the snapshot's own
	// (the ones `postern check` prints); nil: none.
	Warnings func(*config.File) []error
	// Load builds a snapshot (nil: snapshot.Load); tests replace it.
	Load func(ctx context.Context, path string, now time.Time) (*snapshot.Snapshot, error)
	// OpenStore opens the block store (nil: store.Open); tests replace it.
	OpenStore func(ctx context.Context, path string) (*store.DB, error)
	// ReloadTimeout bounds a reload; 0: DefaultReloadTimeout.
	ReloadTimeout time.Duration
	// Drain is how long sessions get to finish at shutdown; 0:
	// DefaultDrain.
	Drain time.Duration
	// Build is the binary's build, for the status; zero: what the
	// toolchain recorded.
	Build buildinfo.Info
	// NftablesNetNS is an open network namespace file whose nftables
	// the nftables export writes; 0: postern's own. Tests set it.
	NftablesNetNS int
	// SizeProcessors lets the gateway set the Go runtime's processors
	// as the configuration's processors key says (processors.go): for
	// `postern serve`, which owns its process. False leaves them alone
	// (tests, several gateways in one process).
	SizeProcessors bool
	// ProcessorWindow is how often adaptive processors sample the CPU
	// use; 0: procs.DefaultWindow. Tests shorten it.
	ProcessorWindow time.Duration
	// ProcessorCeiling, when set, is read every
	// procs.DefaultCeilingEvery windows by adaptive processors for the
	// most processors postern may have now (procs.RuntimeDefault: the
	// machine's CPUs and the container's CPU limit, as they are now);
	// given the processors in use, it leaves the runtime with them. Nil:
	// the ceiling is the runtime's number at start, for good.
	ProcessorCeiling func(cur int) int
}

// Gateway is a running postern: its configuration, store, engine,
// administration API and front-ends.
type Gateway struct {
	path   string
	opts   Options
	log    *slog.Logger
	level  *slog.LevelVar
	holder *snapshot.Holder
	db     *store.DB
	engine *guard.Engine
	api    *admin.Server
	passes *passes.Manager // travel passes (passes.go)
	apiLn  net.Listener
	grant  atomic.Pointer[func(netip.Addr) bool] // the admin grant of the running configuration
	con    *consoleSide                          // the web console; nil when not configured

	// Set when Run starts; reloads use them from Run's goroutine only.
	ctx     context.Context
	wg      *sync.WaitGroup
	slots   map[service.Service]*slot
	checker *dnsbl.Checker
	dns     config.DNS // the settings checker was made with
	initial *plan      // built by Start, put in service by Run

	fresh *autoreload.Refresher // watches the files, downloads GeoIP databases
	auto  chan string           // the reloads fresh asks for

	status  statusState      // what Status reports (status.go)
	cluster *cluster.Cluster // links the engine to the other gateways (cluster mode)
	obs     observe          // metrics and service manager notifications (metrics.go)
	policy  policyState      // the policy servers (policyd.go)
	exp     exports          // the DNSBL zone and the decision stream (dnsblzone.go)
	nft     nftState         // the nftables export (nftables.go)
	hooks   webhookState     // webhooks (webhooks.go)
	logins  loginAlertState  // login history and alerts (loginalerts.go)

	tickets tlsconf.TicketStore // session ticket keys per service, kept across reloads (tls.go)

	passShare *cluster.PassShare // travel passes shared in cluster mode (passes_cluster.go)

	loops loopState // event loops of the mail gateways (evloop.go)
	procs procState // the Go runtime's processors (processors.go)
}

// Serve starts a gateway and runs it until ctx is done, reloading the
// configuration whenever reload delivers.
func Serve(ctx context.Context, path string, opts Options, reload <-chan struct{}) error {
	g, err := Start(ctx, path, opts)
	if err != nil {
		return err
	}
	return g.Run(ctx, reload)
}

// Start loads the configuration, binds every listener, drops privileges,
// opens the store, starts the engine and binds the administration API.
// Run serves them.
func Start(ctx context.Context, path string, opts Options) (_ *Gateway, err error) {
	if opts.Log == nil {
		opts.Log = os.Stderr
	}
	if opts.Load == nil {
		opts.Load = snapshot.Load
	}
	if opts.OpenStore == nil {
		opts.OpenStore = store.Open
	}
	if opts.ReloadTimeout <= 0 {
		opts.ReloadTimeout = DefaultReloadTimeout
	}
	if opts.Drain <= 0 {
		opts.Drain = DefaultDrain
	}
	if cfg, err := config.Load(path); err == nil {
		// GeoIP databases with a url that are not on disk yet: download
		// them before the snapshot needs them.
		log, _ := newLogger(opts.Log, &snapshot.Snapshot{Config: cfg})
		autoreload.FetchMissing(ctx, cfg, nil, log)
	}
	snap, err := opts.Load(ctx, path, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := snap.Config
	g := &Gateway{path: path, opts: opts, holder: snapshot.NewHolder(snap), slots: map[service.Service]*slot{}}
	g.log, g.level = newLogger(opts.Log, snap)
	g.fresh = autoreload.New(snap, autoreload.Options{Logger: g.log})
	g.auto = make(chan string, 1)
	g.setProcessors(cfg)
	defer func() {
		if err != nil {
			g.close() // whatever was opened before the error
		}
	}()
	grant, err := adminGrant(snap)
	if err != nil {
		return nil, err
	}
	g.grant.Store(&grant)
	if err := g.preflight(ctx, snap, true); err != nil {
		return nil, err
	}
	if err := g.startMetrics(ctx, snap); err != nil {
		return nil, err
	}
	if err := g.bindAll(ctx, snap); err != nil {
		return nil, err
	}
	if err := g.bindConsole(ctx, snap); err != nil {
		return nil, err
	}
	if err := g.bindPolicy(snap); err != nil {
		return nil, err
	}
	if err := g.bindExports(snap); err != nil {
		return nil, err
	}
	if err := g.openNftables(snap); err != nil {
		return nil, err
	}
	if err := dropPrivileges(cfg.RunAs, g.log); err != nil {
		return nil, err
	}
	storePath := orDefault(cfg.Store.Path.Value, DefaultStorePath)
	if err := os.MkdirAll(filepath.Dir(storePath), 0o750); err != nil {
		return nil, storeError(storePath, err)
	}
	if g.db, err = opts.OpenStore(ctx, storePath); err != nil {
		return nil, storeError(storePath, err)
	}
	if g.db.Created() {
		g.log.Info("created a new block store", "path", storePath)
	}
	node := cfg.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	gopts := guard.Options{Store: g.db, Logger: g.log, Node: node, Observer: g.observer()}
	if gopts.Notifier, err = g.startWebhooks(cfg, node); err != nil {
		return nil, err
	}
	if err := g.startLoginAlerts(cfg, node); err != nil {
		return nil, err
	}
	if err := g.clusterOptions(cfg, node, storePath, &gopts); err != nil {
		return nil, err
	}
	if g.engine, err = guard.New(ctx, snap.Guard, gopts); err != nil {
		g.closeCluster()
		return nil, err
	}
	g.startCluster()
	if err := g.startNftables(snap); err != nil {
		return nil, err
	}
	if g.initial, err = g.prepare(snap); err != nil {
		return nil, err
	}
	tokenFile := orDefault(cfg.Admin.TokenFile.Value, admin.DefaultTokenFile)
	token, err := admin.LoadOrCreateToken(tokenFile)
	if err != nil {
		return nil, err
	}
	g.api = admin.NewServer(g.engine, explain.Func(g.holder.Load, g.engine), token, g.log, func(a netip.Addr) bool { return (*g.grant.Load())(a) })
	g.noteStarted(node)
	g.api.SetStatus(g)
	if err := g.startPasses(ctx); err != nil {
		return nil, err
	}
	adminAt := orDefault(cfg.Admin.Listen.Value, admin.DefaultListen)
	if g.apiLn, err = g.api.Listen(ctx, adminAt); err != nil {
		return nil, err
	}
	if err := g.newConsole(token); err != nil {
		return nil, err
	}
	g.logLoaded(snap)
	g.log.Info("postern running", "store", storePath, "blocks", len(g.engine.Blocks()), "admin", adminAt, "token_file", tokenFile, "node", node)
	return g, nil
}

// Engine returns the gateway's intrusion prevention engine.
func (g *Gateway) Engine() *guard.Engine { return g.engine }

// Snapshot returns the running configuration.
func (g *Gateway) Snapshot() *snapshot.Snapshot { return g.holder.Load() }

// Addr returns the address a service listens on, or nil if it has no
// listener.
func (g *Gateway) Addr(svc service.Service) net.Addr {
	if sl := g.slots[svc]; sl != nil {
		return sl.ln.Addr()
	}
	return nil
}

// Run serves until ctx is done, then shuts down in order: the listeners
// stop accepting, sessions get the drain time to finish, the API finishes
// its requests, the engine writes what is queued, the store closes.
//
// A reload runs in its own goroutine under a deadline (ReloadTimeout), so
// a slow or stuck file never stops the loop: shutdown, the API and
// further signals are served meanwhile. Signals during a reload are
// coalesced into one more reload after it. A reload that fails or runs out
// of time keeps the running configuration and logs why; the store is never
// involved.
func (g *Gateway) Run(ctx context.Context, reload <-chan struct{}) error {
	var wg sync.WaitGroup
	g.ctx, g.wg = ctx, &wg
	g.runLoginAlerts(ctx, &wg)
	apiErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		apiErr <- g.api.ServeListener(ctx, g.apiLn)
	}()
	go func() {
		defer wg.Done()
		g.engine.Run(ctx, sweepInterval)
	}()
	g.startAll()
	if g.con != nil {
		g.noteListeners()
		wg.Go(func() { g.serveConsole(ctx) })
	}
	g.runMetrics(ctx, &wg)
	g.runProcessors(ctx, &wg)
	g.servePolicy(ctx, &wg)
	g.serveExports(ctx, &wg)
	g.runNftables(ctx, &wg)
	wg.Go(func() {
		g.fresh.Run(ctx, func(why string) {
			select {
			case g.auto <- why:
			default: // a reload is asked for already
			}
		})
	})
	var (
		err     error
		cur     *reloadJob // the reload in flight, nil when none
		pending bool       // a signal arrived while cur ran
		expired <-chan time.Time
		stale   []*reloadJob // reloads abandoned at their deadline, still running
	)
	start := func() {
		g.reloadStarted()
		stale = deleteFinished(stale)
		if len(stale) >= maxStaleReloads {
			err := fmt.Errorf("reload rejected, the running configuration stays: %d earlier reloads are still stuck reading their files", len(stale))
			g.log.Error("configuration reload failed", "err", err)
			g.noteReloadFailed(err)
			g.reloadDone(err)
			return
		}
		cur = g.startReload(ctx)
		expired = cur.timer.C
	}
loop:
	for {
		var results <-chan reloadResult
		if cur != nil {
			results = cur.result
		}
		select {
		case <-ctx.Done():
			break loop
		case err = <-apiErr:
			if err != nil {
				err = fmt.Errorf("administration API: %w", err)
			}
			break loop
		case why := <-g.auto:
			g.log.Info("configuration reload", "why", why)
			if cur != nil {
				pending = true
				continue
			}
			start()
		case <-reload:
			if cur != nil {
				pending = true
				continue
			}
			start()
		case r := <-results:
			cur.stop()
			cur, expired = nil, nil
			g.finishReload(r)
			if pending {
				pending = false
				start()
			}
		case <-expired:
			err := fmt.Errorf("reload rejected, the running configuration stays: not finished within %s", g.opts.ReloadTimeout)
			g.log.Error("configuration reload failed", "err", err)
			g.noteReloadFailed(err)
			g.reloadDone(err)
			cur.stop()
			stale = append(stale, cur)
			cur, expired = nil, nil
			if pending {
				pending = false
				start()
			}
		}
	}
	g.log.Info("stopping")
	g.stopping()
	g.closeListeners()
	if cur != nil {
		cur.stop()
		stale = append(stale, cur)
	}
	// A reload only reads files; it is cancelled above. Give it a moment
	// to return, but never let it hold up shutdown.
	grace := time.NewTimer(reloadAbandonGrace)
wait:
	for _, j := range stale {
		select {
		case <-j.result:
		case <-grace.C:
			g.log.Warn("a configuration reload is still reading its files; stopping without it")
			break wait
		}
	}
	grace.Stop()
	wg.Wait()
	g.close()
	g.closeLoops()
	return err
}

func (g *Gateway) close() {
	g.closeListeners()
	g.closeConsole()
	g.closeCluster()
	g.closeMetrics()
	g.closePolicy()
	g.closeExports()
	g.closeNftables()
	if g.engine != nil {
		g.engine.Close()
	}
	g.closeWebhooks()
	g.closeLoginAlerts()
	if g.db != nil {
		if err := g.db.Close(); err != nil {
			g.log.Error("closing the store", "err", err)
		}
	}
}

// preflight runs the checks `postern check` shares with serve: what would
// fail once serving (files the run_as user cannot read, two services on one
// port, a certificate that does not load, …). Its warnings are logged. At
// start its errors refuse the configuration; on a reload they are logged
// (what cannot be built is refused by the build itself: a certificate that
// does not load keeps the old one in service). Ports are not probed: the
// bind says why it fails, with the fix (listenError).
func (g *Gateway) preflight(ctx context.Context, snap *snapshot.Snapshot, start bool) error {
	diags := preflight.Check(ctx, snap, preflight.Options{Mode: preflight.ModeServe})
	for _, d := range diags {
		if d.Severity == preflight.Warning {
			g.log.Warn("configuration", "warning", d.Error())
		} else if !start {
			g.log.Error("configuration", "problem", d.Error())
		}
	}
	if start {
		return preflight.Err(diags)
	}
	return nil
}

// grantOf compiles the grant key of a surface (the admin API, the
// console, the metrics, the block exports): loopback when not set,
// addresses and networks only, since access to them must not rest on DNS.
func grantOf(snap *snapshot.Snapshot, key string, gr config.Text) (func(netip.Addr) bool, error) {
	if !gr.IsSet() {
		return netip.Addr.IsLoopback, nil
	}
	set, err := snap.Patterns.Expr(patternSource(gr))
	if err != nil {
		return nil, err
	}
	if set.HasHosts() {
		return nil, diag.Errorf(gr.Pos, "%s takes addresses and networks, not host masks: access must not rest on DNS", key)
	}
	return set.Contains, nil
}

// adminGrant compiles the administration API's grant: the addresses that
// may reach it over TCP (loopback when not configured).
func adminGrant(snap *snapshot.Snapshot) (func(netip.Addr) bool, error) {
	return grantOf(snap, "admin.grant", snap.Config.Admin.Grant)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
