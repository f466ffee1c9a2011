package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/snapshot"
)

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

type reloadResult struct {
	snap *snapshot.Snapshot
	err  error
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

func (j *reloadJob) stop() {
	j.cancel()
	j.timer.Stop()
}

func deleteFinished(jobs []*reloadJob) []*reloadJob {
	return slices.DeleteFunc(jobs, (*reloadJob).finished)
}

// startReload loads the configuration in a goroutine bounded by the
// reload timeout and by ctx.
func (g *Gateway) startReload(ctx context.Context) *reloadJob {
	rctx, cancel := context.WithTimeout(ctx, g.opts.ReloadTimeout)
	j := &reloadJob{result: make(chan reloadResult, 1), cancel: cancel, timer: time.NewTimer(g.opts.ReloadTimeout)}
	go func() {
		s, err := g.opts.Load(rctx, g.path, time.Now())
		if err == nil {
			if cerr := rctx.Err(); cerr != nil {
				s, err = nil, cerr
			}
		}
		j.result <- reloadResult{snap: s, err: err}
	}()
	return j
}

// restartKeys are the settings a running gateway cannot change: they are
// read once at start (the store, the administration listener and token,
// the user to run as, the node name, the log format, the listeners of the
// console and the metrics, the cluster link, the login alerts, the
// processors).
var restartKeys = []string{"store", "admin.listen", "admin.token_file", "run_as", "node", "log.format", "processors",
	"console.listen", "console.tls", "console.idle_timeout", "console.users_file", "cluster", "metrics.listen", "nftables",
	"login_alerts"}

func needsRestart(key string) bool {
	for _, k := range slices.Concat(restartKeys, policyKeys, exportKeys) {
		if key == k || strings.HasPrefix(key, k+".") {
			return true
		}
	}
	return false
}

// finishReload puts a loaded configuration in service — every part of it
// — or logs why the running one stays.
func (g *Gateway) finishReload(r reloadResult) {
	err := r.err
	if err == nil {
		err = g.apply(r.snap)
	}
	if err != nil {
		err = fmt.Errorf("reload rejected, the running configuration stays: %w", err)
		g.log.Error("configuration reload failed", "err", err)
		g.noteReloadFailed(err)
	}
	g.reloadDone(err)
}

// apply builds the gateway's parts from snap and, if all of them build,
// puts them in service. It returns an error, having changed nothing, when
// something does not build.
func (g *Gateway) apply(snap *snapshot.Snapshot) error {
	old := g.holder.Load()
	if err := g.preflight(g.ctx, snap, false); err != nil {
		return err
	}
	grant, err := adminGrant(snap)
	if err != nil {
		return err
	}
	if _, err := metricsGrant(snap); err != nil {
		return err
	}
	policyGrants, err := g.policyGrants(snap)
	if err != nil {
		return err
	}
	plan, err := g.prepare(snap)
	if err != nil {
		return err
	}
	g.holder.Store(snap)
	g.fresh.Apply(snap)
	g.engine.Apply(snap.Guard)
	g.recompilePasses()
	g.grant.Store(&grant)
	policyGrants()
	g.level.Set(logLevel(snap.Config))
	problems := g.commit(plan)
	g.noteListeners()

	changed := config.Changed(old.Config, snap.Config)
	var applied, later []string
	for _, k := range changed {
		if needsRestart(k) {
			later = append(later, k)
		} else {
			applied = append(applied, k)
		}
	}
	g.logLoaded(snap)
	g.noteReloaded(applied, later, problems)
	attrs := []any{"applied", applied}
	if len(applied) == 0 {
		attrs = []any{"applied", "no settings changed; files re-read"}
	}
	g.log.Info("configuration reloaded", attrs...)
	if len(later) > 0 {
		g.log.Warn("configuration reloaded: these settings take effect at the next restart", "keys", later)
	}
	for _, p := range problems {
		g.log.Error("configuration reloaded with a problem", "err", p)
	}
	return nil
}

func (g *Gateway) logLoaded(s *snapshot.Snapshot) {
	for _, w := range s.Warnings {
		g.log.Warn("configuration", "warning", w.Error())
	}
	if g.opts.Warnings != nil {
		for _, w := range g.opts.Warnings(s.Config) {
			g.log.Warn("configuration", "warning", w.Error())
		}
	}
	g.noteLoaded(s)
	g.log.Info("configuration loaded", "file", s.Config.Path, "patterns", len(s.Patterns.Names()), "services", len(s.Config.Services))
}

func logLevel(f *config.File) slog.Level {
	var level slog.Level
	_ = level.UnmarshalText([]byte(orDefault(f.Log.Level.Value, "info"))) // validated by config
	return level
}
