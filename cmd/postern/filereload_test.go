package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/gateway"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
	"github.com/postern/postern/internal/tlsconf"
)

// A reload (SIGHUP) that names a device, a FIFO or a directory where a
// file belongs is refused at once with the path and the place that names
// it; the running configuration stays, and shutdown is never held up.
// Before, an include of /dev/zero read until the gateway ran out of
// memory, and a FIFO hung the reload and with it shutdown.
func TestServeReloadRefusesSpecialFiles(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	state := stateConfig(t, dir)
	writeFile(t, cfg, scenario+state)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero-link")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, &logs, reload) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	waitFor(t, &logs, "postern running", 1)

	good := scenario + state
	sub := func(old, new string) string {
		t.Helper()
		if !strings.Contains(good, old) {
			t.Fatalf("scenario has no %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	cases := []struct {
		name, config string
		want         []string // all in the one rejection
	}{
		{"include of /dev/zero", sub(`"{sg.zone}"`, `"{/dev/zero}"`),
			[]string{cfg + ":6:14:", "include {/dev/zero}", "a character device"}},
		{"include of a symbolic link to /dev/zero", sub(`"{sg.zone}"`, `"{zero-link}"`),
			[]string{cfg + ":6:14:", "zero-link", "a character device"}},
		{"include of a FIFO", sub(`"{sg.zone}"`, `"{fifo}"`),
			[]string{cfg + ":6:14:", "include {" + fifo + "}", "a FIFO"}},
		{"include of a directory", sub(`"{sg.zone}"`, `"{.}"`),
			[]string{cfg + ":6:14:", "a directory"}},
		{"GeoIP database that is a FIFO", sub("path: country.mmdb", "path: fifo"),
			[]string{cfg + ":3:", fifo, "a FIFO"}},
		{"GeoIP zone file of /dev/zero", sub("path: country.mmdb", "path: /dev/zero\n      format: zone\n      country: MY"),
			[]string{cfg + ":3:", "/dev/zero", "a character device"}},
		{"bypass file that is a FIFO", good + "intrusion_prevention: { bypass_file: fifo }\n",
			[]string{cfg + ":14:38:", "bypass file: open " + fifo + ": not a regular file: it is a FIFO"}},
	}
	n := 0
	for _, c := range cases {
		writeFile(t, cfg, c.config)
		reload <- struct{}{}
		n++
		waitFor(t, &logs, "reload rejected, the running configuration stays", n)
		last := logs.String()
		last = last[strings.LastIndex(last, "reload rejected"):]
		last = last[:strings.IndexByte(last, '\n')]
		for _, w := range c.want {
			if !strings.Contains(last, w) {
				t.Errorf("%s: the rejection does not say %q:\n%s", c.name, w, last)
			}
		}
	}

	// The configuration file itself replaced by a FIFO.
	if err := os.Rename(cfg, cfg+".good"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	n++
	waitFor(t, &logs, "reload rejected, the running configuration stays", n)
	if !strings.Contains(logs.String(), cfg+": not a regular file: it is a FIFO") {
		t.Errorf("the rejection of a FIFO configuration does not say so:\n%s", logs.String())
	}
	if err := os.Rename(cfg+".good", cfg); err != nil {
		t.Fatal(err)
	}

	// The gateway still runs and reloads a good file.
	writeFile(t, cfg, good)
	reload <- struct{}{}
	waitFor(t, &logs, "configuration loaded", 2)

	// Shutdown is prompt, and leaves the store unlocked.
	stopServe(t, cancel, done)
	done <- nil // for the cleanup
	db, err := store.Open(context.Background(), filepath.Join(dir, "state", "postern.db"))
	if err != nil {
		t.Fatalf("store after shutdown: %v", err)
	}
	db.Close()
}

// A reload that does not finish within its deadline is abandoned: the
// running configuration stays, the gateway goes on serving signals, and
// shutdown neither waits for the stuck reload nor keeps the store locked.
func TestServeReloadDeadline(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, scenario+stateConfig(t, dir))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	stuck := make(chan struct{})
	defer close(stuck)
	calls := make(chan struct{}, 10)
	opts := gatewayOptions(&logs)
	opts.ReloadTimeout = 50 * time.Millisecond
	var loads atomic.Int32 // stuck reloads run at once
	opts.Load = func(ctx context.Context, path string, now time.Time) (*snapshot.Snapshot, error) {
		if loads.Add(1) == 1 {
			return snapshot.Load(ctx, path, now) // at start
		}
		calls <- struct{}{}
		<-stuck // ignores its context, like a read from a hung file system
		return nil, nil
	}
	g, err := gateway.Start(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	first := g.Snapshot()
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, reload) }()
	waitFor(t, &logs, "listening", 1)

	reload <- struct{}{}
	waitFor(t, &logs, "not finished within 50ms", 1)
	reload <- struct{}{} // the loop still takes signals
	waitFor(t, &logs, "not finished within 50ms", 2)
	if len(calls) != 2 {
		t.Fatalf("%d reloads started, want 2", len(calls))
	}
	// Stuck reloads do not pile up: after four, new ones are refused
	// until the stuck ones return.
	const maxStaleReloads = 4
	for n := 3; n <= maxStaleReloads; n++ {
		reload <- struct{}{}
		waitFor(t, &logs, "not finished within 50ms", n)
	}
	reload <- struct{}{}
	waitFor(t, &logs, "4 earlier reloads are still stuck reading their files", 1)
	if len(calls) != maxStaleReloads {
		t.Fatalf("%d reloads started, want %d", len(calls), maxStaleReloads)
	}
	if g.Snapshot() != first {
		t.Fatal("a timed-out reload replaced the configuration")
	}
	start := time.Now()
	stopServe(t, cancel, done)
	if d := time.Since(start); d > 7*time.Second {
		t.Fatalf("shutdown took %s: it waited for the stuck reload", d)
	}
	db, err := store.Open(context.Background(), filepath.Join(dir, "state", "postern.db"))
	if err != nil {
		t.Fatalf("store after shutdown: %v", err)
	}
	db.Close()
}

// A certificate file replaced by a FIFO is refused on SIGHUP instead of
// hanging the reload (and with it shutdown); the old pair stays in service.
func TestServeReloadCertificateFIFO(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, err := tlsconf.SelfSigned(dir, []string{"old.example.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, fmt.Sprintf(`services:
  smtps: { listen: "127.0.0.1:0", backend: "127.0.0.1:1", tls: { cert: %s, key: %s } }
`, certFile, keyFile)+stateConfig(t, dir))
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan struct{})
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, &logs, reload) }()
	waitFor(t, &logs, "postern running", 1)
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(certFile, 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	// The file watcher may reload first, between the removal and the
	// mkfifo, and log "not found"; the reload after the mkfifo must say why
	// the FIFO is refused.
	waitFor(t, &logs, "not a regular file", 1)
	stopServe(t, cancel, done)
}
