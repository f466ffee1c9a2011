package gateway

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// plaintext_login lists match host masks like the other lists.
func TestPlaintextLoginByHostMask(t *testing.T) {
	z := fcrdnstest.Start(t,
		fcrdnstest.PTR(t, "127.0.0.2", "pc.lan.example."), "pc.lan.example. 300 IN A 127.0.0.2",
	)
	cfg := filepath.Join(t.TempDir(), "postern.yaml")
	if err := os.WriteFile(cfg, []byte(`dns: { resolver: "`+z.Addr+`" }
services:
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:1", plaintext_login: "*.lan.example; 10.0.0.0/8" }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, plain, err := mailDialer(snap, snap.Config.Services[service.IMAP])
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{"127.0.0.2": true, "127.0.0.3": false, "10.1.1.1": true} {
		if got := plain(netip.MustParseAddr(addr)); got != want {
			t.Errorf("plaintext login from %s: %v, want %v", addr, got, want)
		}
	}
}
