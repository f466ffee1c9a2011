package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeCPUProfile runs `postern serve --cpu-profile` until it stops and
// checks the file holds a profile in pprof's format (a gzipped protocol
// buffer naming the sample type "cpu").
func TestServeCPUProfile(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, scenario+stateConfig(t, dir))
	prof := filepath.Join(dir, "cpu.pprof")

	var logs syncBuffer
	root := newRoot(io.Discard, &logs)
	root.SetArgs([]string{"serve", "-c", cfg, "--cpu-profile", prof})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	waitFor(t, &logs, "configuration loaded", 1)
	stopServe(t, cancel, done)

	raw, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("the profile is not gzipped: %v", err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("the profile does not decompress: %v", err)
	}
	// The sample type's strings are in the profile's string table.
	for _, want := range []string{"samples", "cpu", "nanoseconds"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("the profile's string table lacks %q", want)
		}
	}
	if fi, err := os.Stat(prof); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the profile's mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

// TestServeCPUProfileBadPath refuses to start when the profile cannot be
// written, naming the file, before anything is served.
func TestServeCPUProfileBadPath(t *testing.T) {
	dir := scenarioDir(t)
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, scenario+stateConfig(t, dir))
	bad := filepath.Join(dir, "no-such-dir", "cpu.pprof")
	var stderr bytes.Buffer
	code := run([]string{"serve", "-c", cfg, "--cpu-profile", bad}, io.Discard, &stderr)
	if code != exitError || !strings.Contains(stderr.String(), "cpu profile") || !strings.Contains(stderr.String(), bad) {
		t.Fatalf("exit %d, stderr %q; want %d and an error naming %s", code, stderr.String(), exitError, bad)
	}
	if strings.Contains(stderr.String(), "configuration loaded") {
		t.Fatal("serve started although its profile could not be written")
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "postern.db")); err == nil {
		t.Fatal("serve opened the store although its profile could not be written")
	}
}
