package clientlog

import (
	"bytes"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/postern/postern/internal/logline"
)

// timeRE takes the time out of text and JSON lines.
var timeRE = regexp.MustCompile(`time=\S+ |"time":"[^"]+",`)

// TestSameAsWith writes the same lines through a logger made by Init and
// one made by With("client", addr), for slog's text and JSON handlers,
// with attributes and groups added afterwards: the output is the same.
// Over postern's own handler (logline), which takes the address itself,
// the lines are still those of With over slog's.
func TestSameAsWith(t *testing.T) {
	addr := netip.MustParseAddr("2001:db8::7")
	for _, kind := range []string{"text", "json", "logline text", "logline json"} {
		t.Run(kind, func(t *testing.T) {
			json := strings.HasSuffix(kind, "json")
			mk := func(buf *bytes.Buffer, ours bool) *slog.Logger {
				opts := &slog.HandlerOptions{Level: slog.LevelInfo}
				switch {
				case ours:
					return slog.New(logline.New(buf, logline.Options{JSON: json})).With("service", "imap")
				case json:
					return slog.New(slog.NewJSONHandler(buf, opts)).With("service", "imap")
				}
				return slog.New(slog.NewTextHandler(buf, opts)).With("service", "imap")
			}
			var want, got bytes.Buffer
			var l Logger
			loggers := [2]*slog.Logger{mk(&want, false).With(Key, addr.String()), l.Init(mk(&got, strings.HasPrefix(kind, "logline")), addr)}
			for _, log := range loggers {
				log.Info("login", "account", "alice@example.test", "result", "ok")
				log.Debug("not written")
				log.Warn("a warning with a space", "err", "x y")
				log.With("extra", 1).Info("with")
				log.WithGroup("g").Info("grouped", "k", "v")
				log.Info("many", "a", 1, "b", 2, "c", 3, "d", 4, "e", 5, "f", 6)
			}
			w, g := timeRE.ReplaceAllString(want.String(), ""), timeRE.ReplaceAllString(got.String(), "")
			if w != g {
				t.Errorf("Init's lines differ from With's:\n got: %s\nwant: %s", g, w)
			}
			if !bytes.Contains(got.Bytes(), []byte("2001:db8::7")) || bytes.Contains(got.Bytes(), []byte("not written")) {
				t.Errorf("lines: %s", got.String())
			}
		})
	}
}

// TestInitAllocs: making a session's logger allocates at most once (the
// Logger slog.New returns, copied), where With allocates several times.
func TestInitAllocs(t *testing.T) {
	base := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)).With("service", "imap")
	addr := netip.MustParseAddr("192.0.2.1")
	l := new(Logger)
	n := testing.AllocsPerRun(100, func() { l.Init(base, addr) })
	if n > 1 {
		t.Errorf("Init allocates %v times, want at most 1", n)
	}
}
