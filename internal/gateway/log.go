package gateway

import (
	"context"
	"io"
	"log/slog"

	"github.com/postern/postern/internal/snapshot"
)

// newLogger makes the gateway's logger; its level follows reloads, its
// format is fixed at start. When w batches its writes (logbatch.Writer:
// it has Flush), an error line is written at once, with what waits
// before it: the lines that explain a failure are out before whatever
// follows it.
func newLogger(w io.Writer, s *snapshot.Snapshot) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(logLevel(s.Config))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if s.Config.Log.Format.Value == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	if f, ok := w.(flusher); ok {
		h = flushOnError{h, f}
	}
	return slog.New(h), level
}

// flusher is a log writer that holds lines back (logbatch.Writer).
type flusher interface{ Flush() error }

// flushOnError flushes its writer after every record at level error.
type flushOnError struct {
	slog.Handler
	f flusher
}

func (h flushOnError) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelError {
		h.f.Flush()
	}
	return err
}

func (h flushOnError) WithAttrs(attrs []slog.Attr) slog.Handler {
	return flushOnError{h.Handler.WithAttrs(attrs), h.f}
}

func (h flushOnError) WithGroup(name string) slog.Handler {
	return flushOnError{h.Handler.WithGroup(name), h.f}
}
