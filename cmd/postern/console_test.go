package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConsolePasswdWritesUsersFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfg, []byte("services:\n  imap: { listen: \":143\", backend: \"127.0.0.1:1\" }\nconsole:\n  listen: \"127.0.0.1:8444\"\n  users_file: console-users\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetIn(strings.NewReader("s3cret pass\n"))
	root.SetArgs([]string{"console", "passwd", "alice", "-c", cfg})
	if err := root.Execute(); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	data, err := os.ReadFile(filepath.Join(dir, "console-users"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "alice:$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("users file: %q", data)
	}
	root = newRoot(&out, &errb)
	root.SetIn(strings.NewReader(""))
	root.SetArgs([]string{"console", "passwd", "bob", "-f", filepath.Join(dir, "other")})
	if err := root.Execute(); err == nil {
		t.Fatal("an empty password was accepted")
	}
}
