package webproxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
)

// BenchmarkProxy: keep-alive GETs of a 1 KiB page through the gateway
// (path rules and a login form configured) from parallel clients.
func BenchmarkProxy(b *testing.B) {
	page := strings.Repeat("x", 1024)
	beLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, page)
	})}
	go be.Serve(beLn)
	defer be.Close()
	dir := b.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	os.WriteFile(path, []byte(baseCfg), 0o644)
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer eng.Close()
	cfg, err := FromConfig(snap.Config.Services[service.Web], nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Backends = []*url.URL{{Scheme: "http", Host: beLn.Addr().String()}}
	p, err := New(cfg, eng, func() *policy.Policy { return snap.Policy }, nil)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ctx, ln, time.Second) }()
	defer func() { cancel(); <-done }()
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	u := "http://" + ln.Addr().String() + "/webmail/inbox"
	_ = netip.Addr{}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(u)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
