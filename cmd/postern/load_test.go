package main

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// TestConcurrentAdminDuringEventLoad: administrators add and remove blocks
// through the API while sessions trip automatic blocks as fast as they can.
// Afterwards the engine's table, the API's list and the store agree exactly
// and nothing is lost.
func TestConcurrentAdminDuringEventLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, e2eConfig+stateConfig(t, dir))
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	g, err := startGateway(ctx, cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	token, err := admin.ReadToken(filepath.Join(dir, "state", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	cl := admin.NewClient(adminListen(t, cfg), token)

	const workers, perWorker = 4, 40
	var wg sync.WaitGroup
	// Event load: each worker trips D blocks for its own addresses.
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker * 5 {
				a := netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)})
				s, _ := g.Engine().Open(a, service.SMTP, nil)
				s.DNSBLListed("zen.example.org")
				s.Close()
			}
		}()
	}
	// Administrators: add perWorker blocks each, remove every other one.
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(w), byte(i), 0}), 24)
				if _, err := cl.AddBlock(ctx, p, time.Hour, fmt.Sprintf("w%d-%d", w, i), false); err != nil {
					t.Errorf("add %s: %v", p, err)
					return
				}
				if i%2 == 1 {
					if _, err := cl.RemoveBlocks(ctx, []netip.Prefix{p}); err != nil {
						t.Errorf("remove %s: %v", p, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()

	want := workers*perWorker*5 + workers*perWorker/2
	mem := g.Engine().Blocks()
	listed, err := cl.ListBlocks(ctx, admin.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(dir, "state", "postern.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	stored, err := db.LoadBlocks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(mem) != want || len(listed) != want || len(stored) != want {
		t.Fatalf("blocks: engine %d, API %d, store %d; want %d", len(mem), len(listed), len(stored), want)
	}
	inStore := make(map[netip.Prefix]store.Block, len(stored))
	for _, b := range stored {
		inStore[b.Prefix] = b
	}
	for _, b := range mem {
		s, ok := inStore[b.Prefix]
		if !ok || s.Reason != b.Reason || !s.Expires.Equal(b.Expires) || s.Comment != b.Comment {
			t.Fatalf("%s: engine %+v, store %+v", b.Prefix, b, s)
		}
	}
}

// TestStoreProblemsAtStartup: a corrupt or locked store stops serve with
// the path and what to do, and the file is left as it was.
func TestStoreProblemsAtStartup(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, e2eConfig+stateConfig(t, dir))
	dbPath := filepath.Join(dir, "state", "postern.db")
	if err := os.MkdirAll(filepath.Dir(dbPath), 0o750); err != nil {
		t.Fatal(err)
	}
	garbage := bytes.Repeat([]byte("not a database "), 500)
	if err := os.WriteFile(dbPath, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	err := serve(context.Background(), cfg, &logs, nil)
	if err == nil || !strings.Contains(err.Error(), dbPath) || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("corrupt store: %v", err)
	}
	if got, _ := os.ReadFile(dbPath); !bytes.Equal(got, garbage) {
		t.Fatal("a corrupt store must be left as it was")
	}
	os.Remove(dbPath)

	// Locked: a second gateway on the same store.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := startGateway(ctx, cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	err = serve(context.Background(), cfg, &logs, nil)
	if err == nil || !strings.Contains(err.Error(), "in use by another postern process") {
		t.Fatalf("locked store: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
