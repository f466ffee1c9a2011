package benchkit

import (
	"bytes"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
)

// TestBigMessage: about the size asked, LF line ends only, no line that
// starts with a dot, and vsize its size with CRLF line ends.
func TestBigMessage(t *testing.T) {
	m, vsize := BigMessage("postern benchmark", 100_000)
	if n := len(m); n < 100_000 || n > 100_000+80 {
		t.Errorf("%d bytes, want about 100000", n)
	}
	if bytes.Contains(m, []byte("\r")) || bytes.Contains(m, []byte("\n.")) {
		t.Error("a CR, or a line that starts with a dot")
	}
	crlf := bytes.ReplaceAll(m, []byte("\n"), []byte("\r\n"))
	if int64(len(crlf)) != vsize {
		t.Errorf("vsize %d, the CRLF form has %d bytes", vsize, len(crlf))
	}
	if !bytes.Contains(m, []byte("\nSubject: postern benchmark\n")) || !bytes.Contains(m, []byte("\n\n")) {
		t.Error("no subject line or no end of the header")
	}
}

// TestStoreMaildir: the message alone in cur/, seen, named with its sizes
// as Dovecot names delivered mail; a second store replaces the first.
func TestStoreMaildir(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Skip(err)
	}
	home := filepath.Join(t.TempDir(), "example.test", "bob")
	for i, body := range []string{"first\n", "second message\n"} {
		msg := []byte(body)
		vsize := int64(len(msg) + 1)
		md, err := StoreMaildir(home, msg, vsize, me.Username)
		if err != nil {
			t.Fatal(err)
		}
		if md != filepath.Join(home, "Maildir") {
			t.Errorf("Maildir %s", md)
		}
		for _, sub := range []string{"new", "tmp"} {
			if ents, err := os.ReadDir(filepath.Join(md, sub)); err != nil || len(ents) != 0 {
				t.Errorf("%s/: %d entries (%v)", sub, len(ents), err)
			}
		}
		ents, err := os.ReadDir(filepath.Join(md, "cur"))
		if err != nil || len(ents) != 1 {
			t.Fatalf("store %d: cur/ holds %d files (%v)", i, len(ents), err)
		}
		name := ents[0].Name()
		if want := fmt.Sprintf(",S=%d,W=%d:2,S", len(msg), vsize); !strings.HasSuffix(name, want) {
			t.Errorf("store %d: name %q, want the suffix %q", i, name, want)
		}
		if got, err := os.ReadFile(filepath.Join(md, "cur", name)); err != nil || string(got) != body {
			t.Errorf("store %d: %q (%v)", i, got, err)
		}
	}
	if _, err := StoreMaildir(home, nil, 0, "no-such-user-postern-bench"); err == nil {
		t.Error("an unknown owner was accepted")
	}
}
