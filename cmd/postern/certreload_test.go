package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// SIGHUP (the reload channel) puts a renewed certificate in service at
// once, without a restart and without waiting for the minute's watch.
func TestServeReloadsCertificatesOnSIGHUP(t *testing.T) {
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
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	})
	waitFor(t, &logs, "postern running", 1)
	m := regexp.MustCompile(`msg=listening service=smtps addr=(\S+)`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no smtps address in the log:\n%s", logs.String())
	}
	served := func() string {
		t.Helper()
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", m[1], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS to smtps: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].DNSNames[0]
	}
	if got := served(); got != "old.example.test" {
		t.Fatalf("served %s before the renewal", got)
	}

	// Renew: a new pair written over the old files, as certbot's deploy
	// hook or a copy would.
	newDir := t.TempDir()
	nc, nk, err := tlsconf.SelfSigned(newDir, []string{"new.example.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]string{{nc, certFile}, {nk, keyFile}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p[1], string(b))
	}
	reload <- struct{}{}
	waitFor(t, &logs, "certificate reloaded", 1)
	if got := served(); got != "new.example.test" {
		t.Fatalf("served %s after SIGHUP, want the renewed certificate", got)
	}

	// A broken renewal keeps the pair in service.
	writeFile(t, keyFile, "not a key\n")
	reload <- struct{}{}
	waitFor(t, &logs, "certificate reload failed", 1)
	if got := served(); got != "new.example.test" {
		t.Fatalf("served %s after a failed reload", got)
	}
}
