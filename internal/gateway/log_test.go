package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/logbatch"
	"github.com/postern/postern/internal/snapshot"
)

// With a batching writer, lines wait for their batch, but an error line
// goes out at once with the lines before it, in order — also from a
// logger with attributes of its own.
func TestLoggerFlushesErrorLines(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			var out syncBuffer
			w := logbatch.New(&out, time.Hour)
			defer w.Close()
			cfg := &config.File{}
			cfg.Log.Format.Value = format
			log, _ := newLogger(w, &snapshot.Snapshot{Config: cfg})
			log = log.With("service", "imap")
			log.Info("login", "account", "alice")
			log.Warn("blocked", "prefix", "192.0.2.1/32")
			if got := out.String(); got != "" {
				t.Fatalf("info and warn lines written before their batch: %q", got)
			}
			log.Error("store failed")
			got := out.String()
			i, j, k := strings.Index(got, "login"), strings.Index(got, "blocked"), strings.Index(got, "store failed")
			if i < 0 || j < i || k < j || !strings.Contains(got, "imap") {
				t.Fatalf("after an error line: %q; want the three lines in order", got)
			}
		})
	}
}
