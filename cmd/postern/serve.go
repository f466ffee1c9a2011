package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/snapshot"
)

func newServeCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Long: `serve loads the configuration and runs the gateway until SIGINT or SIGTERM.
SIGHUP reloads the configuration atomically: a bad new configuration is
rejected, logged, and the running one stays.

This build has no protocol front-ends yet (they come with the SMTP, IMAP/POP3
and web gateways); serve loads, validates and reloads the configuration only.`,
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

// serve runs until ctx is done, reloading the configuration whenever reload
// delivers.
func serve(ctx context.Context, path string, logw io.Writer, reload <-chan struct{}) error {
	snap, err := snapshot.Load(ctx, path, time.Now())
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	log := newLogger(logw, snap)
	holder := snapshot.NewHolder(snap)
	logLoaded(log, snap)
	log.Warn("no protocol front-ends in this build: configuration is loaded and reloaded only")
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			return nil
		case <-reload:
			s, err := holder.Reload(ctx, path, time.Now())
			if err != nil {
				log.Error("configuration reload failed", "err", err)
				continue
			}
			logLoaded(log, s)
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
