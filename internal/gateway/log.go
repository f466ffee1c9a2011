package gateway

import (
	"io"
	"log/slog"

	"github.com/postern/postern/internal/logline"
	"github.com/postern/postern/internal/snapshot"
)

// newLogger makes the gateway's logger; its level follows reloads, its
// format is fixed at start. When w batches its writes (logbatch.Writer:
// it has Flush), an error line is written at once, with what waits
// before it: the lines that explain a failure are out before whatever
// follows it (logline).
func newLogger(w io.Writer, s *snapshot.Snapshot) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(logLevel(s.Config))
	h := logline.New(w, logline.Options{JSON: s.Config.Log.Format.Value == "json", Level: level})
	return slog.New(h), level
}
