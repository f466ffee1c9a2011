package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// DefaultStorePath is where blocks are kept when store.path is not set.
const DefaultStorePath = "/var/lib/postern/postern.db"

// sweepInterval is how often the engine's housekeeping runs.
const sweepInterval = time.Minute

// reloadTimeout bounds a configuration reload (SIGHUP): reading and
// compiling every file, GeoIP databases and bypass host names included. A
// reload that takes longer is abandoned and the running configuration
// stays.
const reloadTimeout = 2 * time.Minute

// reloadAbandonGrace is how long shutdown waits for an abandoned or
// cancelled reload to return before it closes the store anyway.
const reloadAbandonGrace = 2 * time.Second

func newServeCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Long: `serve loads the configuration, opens the block store, starts the intrusion
prevention engine and the administration API, and runs until SIGINT or
SIGTERM. SIGHUP reloads the configuration atomically: a bad new configuration
is rejected, logged, and the running one stays; blocks and counters survive.

Every configured service is served: smtp, submission, smtps, imap, imaps,
pop3, pop3s and web (HTTP, or HTTPS with HTTP/2 when it has tls).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{})
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						select {
						case reload <- struct{}{}:
						case <-ctx.Done():
							return
						}
					}
				}
			}()
			return serve(ctx, path, cmd.ErrOrStderr(), reload)
		},
	}
	configFlag(cmd, &path)
	return cmd
}

// serve runs the gateway until ctx is done, reloading the configuration
// whenever reload delivers.
func serve(ctx context.Context, path string, logw io.Writer, reload <-chan struct{}) error {
	g, err := startGateway(ctx, path, logw)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return g.run(ctx, reload)
}

// gateway is a running postern: its configuration, store, engine and
// administration API.
type gateway struct {
	path    string
	log     *slog.Logger
	holder  *snapshot.Holder
	db      *store.DB
	engine  *guard.Engine
	api     *admin.Server
	apiLn   net.Listener
	adminAt string
	fronts  []*frontEnd

	// load builds a snapshot for a reload (snapshot.Load); reloadTimeout
	// bounds it. Tests replace them.
	load          func(ctx context.Context, path string, now time.Time) (*snapshot.Snapshot, error)
	reloadTimeout time.Duration
}

// startGateway loads everything and binds the administration listener; run
// serves it.
func startGateway(ctx context.Context, path string, logw io.Writer) (_ *gateway, err error) {
	snap, err := snapshot.Load(ctx, path, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := snap.Config
	g := &gateway{path: path, log: newLogger(logw, snap), holder: snapshot.NewHolder(snap),
		load: snapshot.Load, reloadTimeout: reloadTimeout}
	defer func() {
		if err != nil {
			g.close() // whatever was opened before the error
		}
	}()
	if g.fronts, err = bindFrontEnds(ctx, snap, g.holder, g.log); err != nil {
		return nil, err
	}
	if err := dropPrivileges(cfg.RunAs, g.log); err != nil {
		return nil, err
	}
	storePath := orDefault(cfg.Store.Path.Value, DefaultStorePath)
	if err := os.MkdirAll(filepath.Dir(storePath), 0o750); err != nil {
		return nil, fmt.Errorf("store directory: %w", err)
	}
	if g.db, err = store.Open(ctx, storePath); err != nil {
		return nil, err
	}
	if g.db.Created() {
		g.log.Info("created a new block store", "path", storePath)
	}
	node := cfg.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	if g.engine, err = guard.New(ctx, snap.Guard, guard.Options{Store: g.db, Logger: g.log, Node: node}); err != nil {
		return nil, err
	}
	tokenFile := orDefault(cfg.Admin.TokenFile.Value, admin.DefaultTokenFile)
	token, err := admin.LoadOrCreateToken(tokenFile)
	if err != nil {
		return nil, err
	}
	var grant func(netip.Addr) bool
	if cfg.Admin.Grant.IsSet() {
		set, err := snap.Patterns.Expr(patterns.Source{Text: cfg.Admin.Grant.Value, Pos: cfg.Admin.Grant.Pos, Quoted: cfg.Admin.Grant.Quoted})
		if err != nil {
			return nil, err
		}
		if set.HasHosts() {
			return nil, diag.Errorf(cfg.Admin.Grant.Pos, "admin.grant takes addresses and networks, not host masks: access to the API must not rest on DNS")
		}
		grant = set.Contains
	}
	g.api = admin.NewServer(g.engine, g.explain, token, g.log, grant)
	g.adminAt = orDefault(cfg.Admin.Listen.Value, admin.DefaultListen)
	if g.apiLn, err = g.api.Listen(ctx, g.adminAt); err != nil {
		return nil, err
	}
	logLoaded(g.log, snap)
	g.log.Info("postern running", "store", storePath, "blocks", len(g.engine.Blocks()), "admin", g.adminAt, "token_file", tokenFile, "node", node)
	return g, nil
}

// run serves until ctx is done, then shuts down in order: the API finishes
// its requests, the engine writes what is queued, the store closes.
//
// A reload runs in its own goroutine under a deadline (reloadTimeout), so a
// slow or stuck file never stops the loop: shutdown, the API and further
// signals are served meanwhile. Signals during a reload are coalesced into
// one more reload after it. A reload that fails or runs out of time keeps
// the running configuration and logs why; the store is never involved.
func (g *gateway) run(ctx context.Context, reload <-chan struct{}) error {
	var wg sync.WaitGroup
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
	if err := g.runFrontEnds(ctx, &wg); err != nil {
		g.log.Error("front-ends", "err", err)
		return err
	}
	var (
		err     error
		cur     *reloadJob // the reload in flight, nil when none
		pending bool       // a signal arrived while cur ran
		expired <-chan time.Time
		stale   []*reloadJob // reloads abandoned at their deadline, still running
	)
	start := func() {
		stale = slices.DeleteFunc(stale, (*reloadJob).finished)
		if len(stale) >= maxStaleReloads {
			g.log.Error("configuration reload failed", "err",
				fmt.Errorf("reload rejected, the running configuration stays: %d earlier reloads are still stuck reading their files", len(stale)))
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
			g.log.Error("configuration reload failed", "err",
				fmt.Errorf("reload rejected, the running configuration stays: not finished within %s", g.reloadTimeout))
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
	return err
}

// maxStaleReloads is how many reloads abandoned at their deadline may still
// be stuck (in a read that ignores cancellation, say on a hung network file
// system) before further reloads are refused rather than piled up.
const maxStaleReloads = 4

// reloadJob is one reload in flight.
type reloadJob struct {
	result chan reloadResult // receives exactly once, buffered
	cancel context.CancelFunc
	timer  *time.Timer
}

// finished reports whether an abandoned job has returned (its result is
// dropped).
func (j *reloadJob) finished() bool {
	select {
	case <-j.result:
		return true
	default:
		return false
	}
}

type reloadResult struct {
	snap *snapshot.Snapshot
	err  error
}

func (j *reloadJob) stop() {
	j.cancel()
	j.timer.Stop()
}

// startReload loads the configuration in a goroutine bounded by
// reloadTimeout and by ctx.
func (g *gateway) startReload(ctx context.Context) *reloadJob {
	rctx, cancel := context.WithTimeout(ctx, g.reloadTimeout)
	j := &reloadJob{result: make(chan reloadResult, 1), cancel: cancel, timer: time.NewTimer(g.reloadTimeout)}
	go func() {
		s, err := g.load(rctx, g.path, time.Now())
		if err == nil {
			if cerr := rctx.Err(); cerr != nil {
				s, err = nil, cerr
			}
		}
		j.result <- reloadResult{snap: s, err: err}
	}()
	return j
}

// finishReload puts a loaded configuration in service, or logs why the
// running one stays.
func (g *gateway) finishReload(r reloadResult) {
	if r.err != nil {
		g.log.Error("configuration reload failed", "err", fmt.Errorf("reload rejected, the running configuration stays: %w", r.err))
		return
	}
	g.holder.Store(r.snap)
	g.engine.Apply(r.snap.Guard)
	logLoaded(g.log, r.snap)
	g.reloadCerts()
}

// reloadCerts re-reads every service's certificate and key that changed on
// disk (SIGHUP; they are also watched every minute). A pair that fails to
// load is logged and the old one stays in service.
func (g *gateway) reloadCerts() {
	for _, fe := range g.fronts {
		if fe.certs == nil {
			continue
		}
		changed, err := fe.certs.ReloadIfChanged()
		switch {
		case err != nil:
			g.log.Error("certificate reload failed; the old certificate stays in service", "service", fe.name, "err", err)
		case changed:
			g.log.Info("certificate reloaded", "service", fe.name, "file", fe.certs.CertFile(), "not_after", fe.certs.NotAfter())
		}
	}
}

func (g *gateway) close() {
	for _, fe := range g.fronts {
		fe.ln.Close()
	}
	if g.engine != nil {
		g.engine.Close()
	}
	if g.db != nil {
		if err := g.db.Close(); err != nil {
			g.log.Error("closing the store", "err", err)
		}
	}
}

func newLogger(w io.Writer, s *snapshot.Snapshot) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(orDefault(s.Config.Log.Level.Value, "info")))
	opts := &slog.HandlerOptions{Level: level}
	if s.Config.Log.Format.Value == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func logLoaded(log *slog.Logger, s *snapshot.Snapshot) {
	for _, w := range s.Warnings {
		log.Warn("configuration", "warning", w.Error())
	}
	for _, w := range ipsWarnings(s.Config) {
		log.Warn("configuration", "warning", w.Error())
	}
	log.Info("configuration loaded", "file", s.Config.Path, "patterns", len(s.Patterns.Names()), "services", len(s.Config.Services))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
