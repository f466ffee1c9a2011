package spamscan

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/postern/postern/internal/spamscan/rspamdtest"
)

// readMessage reads a testdata message with CRLF line ends, whatever the
// checkout did to them.
func readMessage(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// TestRspamdEndToEnd scans GTUBE and a clean message with a real rspamd.
func TestRspamdEndToEnd(t *testing.T) {
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("set POSTERN_E2E=1 to run against a real rspamd")
	}
	url := rspamdtest.Start(t, nil)
	s := NewRspamd(url, RspamdOptions{Timeout: 20 * time.Second, MaxSize: 10 << 20})
	scan := func(name, from string, viaSpool bool) Verdict {
		t.Helper()
		msg := readMessage(t, name)
		m := Message{
			Body: bytes.NewReader(msg), Size: int64(len(msg)),
			From: from, Rcpt: []string{"rcpt@example.com", "bob@example.com"},
			IP: netip.MustParseAddr("203.0.113.7"), Helo: "mail.example.org", QueueID: "E2E1",
		}
		if viaSpool {
			sp := NewSpool(t.TempDir(), 64)
			defer sp.Close()
			sp.Write(msg)
			m.Body, m.Size = sp, sp.Size()
		}
		start := time.Now()
		v, err := s.Scan(context.Background(), m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s (from %q): score %.2f / %.2f, action %q, %v, in %v", name, from, v.Score, v.Threshold, v.Action, v.Symbols, time.Since(start).Round(time.Millisecond))
		return v
	}

	v := scan("gtube.eml", "sender@example.org", false)
	// rspamd answers GTUBE with action reject and the reject threshold as
	// the score (15 with the stock actions).
	if v.Score < 15 || v.Action != "reject" || !slices.Contains(v.Symbols, "GTUBE") || v.Threshold != 15 {
		t.Errorf("GTUBE: %+v, want score >= 15, action reject, symbol GTUBE", v)
	}
	v = scan("gtube.eml", "sender@example.org", true)
	if v.Score < 15 || v.Action != "reject" {
		t.Errorf("GTUBE from a spool: %+v", v)
	}

	for _, from := range []string{"alice@example.org", ""} {
		v = scan("clean.eml", from, false)
		if v.Score >= 5 || v.Action != "no action" || v.Threshold != 15 {
			t.Errorf("clean message from %q: %+v, want score < 5, no action", from, v)
		}
	}

	// rspamd's own error answer comes back as an error, not a verdict.
	bad := NewRspamd(url+"/nonexistent", RspamdOptions{Timeout: 5 * time.Second})
	msg := readMessage(t, "clean.eml")
	if _, err := bad.Scan(context.Background(), Message{Body: bytes.NewReader(msg), Size: int64(len(msg))}); err == nil {
		t.Error("no error for an unknown rspamd path")
	} else {
		t.Logf("unknown path: %v", err)
	}

	// A scan that rspamd cannot finish in time is a timeout error.
	slow := NewRspamd(url, RspamdOptions{Timeout: time.Nanosecond})
	if _, err := slow.Scan(context.Background(), Message{Body: bytes.NewReader(msg), Size: int64(len(msg))}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("1ns timeout: %v", err)
	}
}
