package policyd

import (
	"context"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testserver"
)

func TestNginxSecret(t *testing.T) {
	users := map[string]string{"bob@example.com": "right pw"}
	imap := &fakeMail{users: users}
	addr := netip.MustParseAddrPort(testserver.TCP(t, imap.imap))
	const secret = "s3cret-token-0123456789"
	n := NewNginx(newEngine(t, ""), NginxOptions{IMAP: addr, BackendProxy: "v1", BackendTimeout: 5 * time.Second,
		Secret: []byte(secret), SecretHeader: "X-Mail-Key"})
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	u := "http://" + ln.Addr().String() + "/auth"
	ask := func(header string, keys ...string) (int, http.Header) {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Auth-Method", "plain")
		req.Header.Set("Auth-User", "bob@example.com")
		req.Header.Set("Auth-Pass", "right%20pw")
		req.Header.Set("Auth-Protocol", "imap")
		req.Header.Set("Client-IP", "127.8.8.8")
		for _, k := range keys {
			req.Header.Add(header, k)
		}
		return ngxDo(t, req)
	}
	for name, keys := range map[string][]string{
		"none":        nil,
		"wrong":       {"s3cret-token-0123456780"},
		"prefix":      {secret[:len(secret)-1]},
		"longer":      {secret + "x"},
		"empty":       {""},
		"given twice": {secret, secret},
	} {
		code, h := ask("X-Mail-Key", keys...)
		if code != http.StatusForbidden || h.Get("Auth-Status") != "" {
			t.Errorf("%s: HTTP %d %v, want 403 without Auth-Status", name, code, h)
		}
	}
	// The secret in another header than the configured one.
	if code, _ := ask(DefaultNginxSecretHeader, secret); code != http.StatusForbidden {
		t.Errorf("the secret in %s: HTTP %d, want 403", DefaultNginxSecretHeader, code)
	}
	if len(imap.asked()) != 0 {
		t.Error("a request without the secret reached the backend")
	}
	if n.Stats().Bad.Load() != 7 {
		t.Errorf("Bad = %d, want 7", n.Stats().Bad.Load())
	}
	if code, h := ask("X-Mail-Key", secret); code != 200 || h.Get("Auth-Status") != "OK" {
		t.Errorf("with the secret: %d %v", code, h)
	}
}

func TestReadNginxSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if s, err := ReadNginxSecret(write("ok", "abcdefghijklmnop-123\n")); err != nil || string(s) != "abcdefghijklmnop-123" {
		t.Errorf("ok: %q %v", s, err)
	}
	if s, err := ReadNginxSecret(write("crlf", "abcdefghijklmnop-123\r\n")); err != nil || string(s) != "abcdefghijklmnop-123" {
		t.Errorf("crlf: %q %v", s, err)
	}
	for name, content := range map[string]string{
		"short":    "abc\n",
		"space":    "abcdefgh ijklmnopq\n",
		"two":      "abcdefghijklmnopq\nrstuvwxyz\n",
		"nonascii": "abcdefghijklmnopqé\n",
		"empty":    "",
	} {
		if _, err := ReadNginxSecret(write(name, content)); err == nil || !strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: %v, want an error", name, err)
		}
	}
	if _, err := ReadNginxSecret(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was read")
	}
}
