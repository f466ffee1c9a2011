package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "blocks.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(ctx, path)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	want := "store " + path + ": in use by another postern process (lock " + path +
		".lock held); stop it or use another store path"
	if err.Error() != want {
		t.Fatalf("second Open:\n got %q\nwant %q", err, want)
	}
	// The first DB is unharmed by the failed Open.
	if err := db.PutBlocks(ctx, []Block{block(addr(1), 1)}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	defer db.Close()
	if got, err := db.LoadBlocks(ctx); err != nil || len(got) != 1 {
		t.Fatalf("after reopen: %v, %v", got, err)
	}
	if _, err := os.Stat(path + ".lock"); err != nil {
		t.Fatal(err)
	}
}

func TestFileModes(t *testing.T) {
	db := openTest(t)
	if err := db.PutBlocks(context.Background(), []Block{block(addr(1), 1)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{db.Path(), db.Path() + ".lock", db.Path() + "-wal", db.Path() + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			t.Errorf("%s: mode %v, want 0600", p, m)
		}
	}
}

func TestOpenUnusualPath(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a b?c#d%20é")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "blocks?.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.PutBlocks(ctx, []Block{block(addr(1), 1)}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("store not at %q: %v", path, err)
	}
	// A relative path works too.
	t.Chdir(dir)
	db, err = Open(ctx, "blocks?.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, err := db.LoadBlocks(ctx); err != nil || len(got) != 1 || db.Path() != "blocks?.db" {
		t.Fatalf("relative path: %v, %v, %q", got, err, db.Path())
	}
}

func TestEmptyFileIsNewStore(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !db.Created() {
		t.Error("Created() = false for an empty file")
	}
	if err := db.PutBlocks(ctx, []Block{block(addr(1), 1)}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, _ := db.LoadBlocks(ctx); len(got) != 1 {
		t.Fatalf("%d blocks after reopen", len(got))
	}
}

// makeStore writes a real store with n blocks at path and closes it, so that
// everything is checkpointed into the main file.
func makeStore(t *testing.T, path string, n int) {
	t.Helper()
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	bs := make([]Block, n)
	for i := range bs {
		bs[i] = block(addr(i), i)
	}
	if err := db.PutBlocks(context.Background(), bs); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// rawExec runs SQL on path with a plain connection, bypassing Open.
func rawExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	for _, s := range stmts {
		if _, err := raw.Exec(s); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRefusesBadFiles(t *testing.T) {
	const pageSize = 4096
	randomBytes := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	cases := []struct {
		name  string
		make  func(t *testing.T, path string)
		kind  error
		words []string
	}{
		{"random bytes", func(t *testing.T, path string) {
			os.WriteFile(path, randomBytes(3*pageSize), 0o600)
		}, ErrCorrupt, []string{"is corrupt", "not a database", "move it aside", "will not overwrite"}},
		{"short random bytes", func(t *testing.T, path string) {
			os.WriteFile(path, randomBytes(37), 0o600)
		}, ErrCorrupt, []string{"is corrupt", "move it aside"}},
		{"text file", func(t *testing.T, path string) {
			os.WriteFile(path, []byte("listen: 0.0.0.0:25\nstore: /var/lib/postern/blocks.db\n"), 0o600)
		}, ErrCorrupt, []string{"is corrupt"}},
		{"truncated store", func(t *testing.T, path string) {
			makeStore(t, path, 1000)
			b, _ := os.ReadFile(path)
			if len(b) < 8*pageSize {
				t.Fatalf("store only %d bytes", len(b))
			}
			os.WriteFile(path, b[:len(b)/2], 0o600)
		}, ErrCorrupt, []string{"is corrupt", "move it aside"}},
		{"truncated mid-page", func(t *testing.T, path string) {
			makeStore(t, path, 1000)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, b[:len(b)/2+1234], 0o600)
		}, ErrCorrupt, []string{"is corrupt"}},
		{"damaged page", func(t *testing.T, path string) {
			makeStore(t, path, 1000)
			b, _ := os.ReadFile(path)
			copy(b[5*pageSize:], randomBytes(pageSize))
			os.WriteFile(path, b, 0o600)
		}, ErrCorrupt, []string{"is corrupt", "move it aside"}},
		{"damaged header", func(t *testing.T, path string) {
			makeStore(t, path, 10)
			b, _ := os.ReadFile(path)
			copy(b, "SQLite format 2\x00")
			os.WriteFile(path, b, 0o600)
		}, ErrCorrupt, []string{"is corrupt"}},
		{"unrelated database", func(t *testing.T, path string) {
			rawExec(t, path, "CREATE TABLE users (name TEXT, password TEXT)",
				"INSERT INTO users VALUES ('alice', 'x')")
		}, ErrNotStore, []string{"not a postern store", "users", "will not overwrite"}},
		{"unrelated database, same table names", func(t *testing.T, path string) {
			rawExec(t, path, "CREATE TABLE blocks (ip TEXT)", "CREATE TABLE audit (x)", "PRAGMA user_version = 1")
		}, ErrNotStore, []string{"not a postern store", "user_version 1", "audit, blocks"}},
		{"other application", func(t *testing.T, path string) {
			rawExec(t, path, "PRAGMA application_id = 1234", "CREATE TABLE t (x)")
		}, ErrNotStore, []string{"not a postern store", "0x4d2"}},
		{"newer schema", func(t *testing.T, path string) {
			makeStore(t, path, 10)
			rawExec(t, path, "PRAGMA user_version = 3")
		}, ErrSchemaTooNew, []string{"schema version 3", "newer than this postern supports (2)", "will not downgrade"}},
		{"tables missing", func(t *testing.T, path string) {
			makeStore(t, path, 10)
			rawExec(t, path, "DROP TABLE audit")
		}, ErrCorrupt, []string{"table audit is missing"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "blocks.db")
			c.make(t, path)
			before := fileHash(t, path)
			fi, _ := os.Stat(path)
			db, err := Open(context.Background(), path)
			if err == nil {
				db.Close()
				t.Fatal("Open accepted the file")
			}
			if !errors.Is(err, c.kind) {
				t.Errorf("error %q does not wrap %v", err, c.kind)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "store "+path) {
				t.Errorf("error %q does not start with the path", msg)
			}
			for _, w := range c.words {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			t.Log(msg)
			if after := fileHash(t, path); after != before {
				t.Error("Open changed the file")
			}
			if fi2, _ := os.Stat(path); fi2.Size() != fi.Size() {
				t.Errorf("size %d → %d", fi.Size(), fi2.Size())
			}
			// The lock was released: Open again gives the same verdict, not ErrLocked.
			if _, err := Open(context.Background(), path); !errors.Is(err, c.kind) {
				t.Errorf("second Open: %v", err)
			}
		})
	}
}

func TestOpenMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "blocks.db")
	_, err := Open(context.Background(), path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open: %v, want fs.ErrNotExist", err)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "directory must exist") {
		t.Fatalf("error %q should name the path and say the directory must exist", msg)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Open created the directory")
	}
}

func TestOpenDirectory(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(context.Background(), dir)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "must name a file") {
		t.Fatalf("Open of a directory: %v", err)
	}
}

func TestOpenPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores file permissions")
	}
	ctx := context.Background()
	// A store file the user may not write.
	dir := t.TempDir()
	path := filepath.Join(dir, "blocks.db")
	makeStore(t, path, 1)
	os.Chmod(path, 0o400)
	_, err := Open(ctx, path)
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "writable") {
		t.Errorf("read-only file: %v", err)
	}
	// Sound store and directory, but -wal and -shm left read-only.
	path = filepath.Join(t.TempDir(), "blocks.db")
	makeStore(t, path, 1)
	for _, f := range []string{path + "-wal", path + "-shm"} {
		if err := os.WriteFile(f, nil, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	if db, err := Open(ctx, path); err == nil {
		db.Close()
		t.Fatal("Open accepted a store whose -wal and -shm it cannot write")
	}
	_, err = Open(ctx, path)
	if !strings.Contains(err.Error(), path+"-shm") || !strings.Contains(err.Error(), "readonly") {
		t.Errorf("read-only -wal and -shm: %v", err)
	}
	// A directory the user may not write.
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o500)
	path = filepath.Join(ro, "blocks.db")
	_, err = Open(ctx, path)
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), path) ||
		!strings.Contains(err.Error(), "permission denied") {
		t.Errorf("read-only directory: %v", err)
	}
}
