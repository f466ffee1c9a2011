package gateway

import (
	"io"
	"log/slog"

	"github.com/postern/postern/internal/snapshot"
)

// newLogger makes the gateway's logger; its level follows reloads, its
// format is fixed at start.
func newLogger(w io.Writer, s *snapshot.Snapshot) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(logLevel(s.Config))
	opts := &slog.HandlerOptions{Level: level}
	if s.Config.Log.Format.Value == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}
