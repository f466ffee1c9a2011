package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// Passes survive a restart, replace by ID and delete by ID.
func TestPassesRoundTrip(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "blocks.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	p := Pass{ID: "00aa", Account: "alice@example.com", From: "country:TH", Created: now, Until: now.Add(14 * 24 * time.Hour), By: "uid:0", Comment: "Thailand"}
	if err := db.PutPass(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := db.PutPass(ctx, Pass{ID: "", Account: "x@y", From: "1.2.3.4", Until: now}); err == nil {
		t.Error("pass without ID stored")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.LoadPasses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != p.ID || got[0].Account != p.Account || got[0].From != p.From ||
		!got[0].Created.Equal(p.Created) || !got[0].Until.Equal(p.Until) || got[0].By != p.By || got[0].Comment != p.Comment {
		t.Fatalf("after reopen: %+v, want %+v", got, p)
	}
	n, err := db.DeletePasses(ctx, []string{"00aa", "nope"})
	if err != nil || n != 1 {
		t.Fatalf("DeletePasses = %d, %v", n, err)
	}
	if got, _ := db.LoadPasses(ctx); len(got) != 0 {
		t.Errorf("after delete: %v", got)
	}
}

// A store of schema 1 (before passes) is migrated: its blocks stay and
// the passes table is created.
func TestMigrateToPasses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "blocks.db")
	makeStore(t, path, 10)
	rawExec(t, path, "DROP TABLE passes", "PRAGMA user_version = 1")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	blocks, err := db.LoadBlocks(ctx)
	if err != nil || len(blocks) != 10 {
		t.Fatalf("blocks after migration: %d, %v", len(blocks), err)
	}
	if err := db.PutPass(ctx, Pass{ID: "1", Account: "@example.com", From: "192.0.2.0/24", Until: time.Now().Add(time.Hour)}); err != nil {
		t.Fatalf("put pass after migration: %v", err)
	}
}
