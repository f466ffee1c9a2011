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
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// DefaultStorePath is where blocks are kept when store.path is not set.
const DefaultStorePath = "/var/lib/postern/postern.db"

// sweepInterval is how often the engine's housekeeping runs.
const sweepInterval = time.Minute

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
}

// startGateway loads everything and binds the administration listener; run
// serves it.
func startGateway(ctx context.Context, path string, logw io.Writer) (_ *gateway, err error) {
	snap, err := snapshot.Load(ctx, path, time.Now())
	if err != nil {
		return nil, err
	}
	cfg := snap.Config
	g := &gateway{path: path, log: newLogger(logw, snap), holder: snapshot.NewHolder(snap)}
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
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-apiErr:
			if err != nil {
				err = fmt.Errorf("administration API: %w", err)
			}
			break loop
		case <-reload:
			s, rerr := g.holder.Reload(ctx, g.path, time.Now())
			if rerr != nil {
				g.log.Error("configuration reload failed", "err", rerr)
				continue
			}
			g.engine.Apply(s.Guard)
			logLoaded(g.log, s)
			g.reloadCerts()
		}
	}
	g.log.Info("stopping")
	wg.Wait()
	g.close()
	return err
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
	log.Info("configuration loaded", "file", s.Config.Path, "patterns", len(s.Patterns.Names()), "services", len(s.Config.Services))
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
