package webproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

// rawPage is the answer of the raw benchmark backend: a 1 KiB page.
var rawPage = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("x", 1024)

// serveRaw answers every request on c with rawPage; it reads only the
// head (GETs, no bodies), so its own cost stays small next to postern's.
func serveRaw(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	for {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
		}
		if _, err := io.WriteString(c, rawPage); err != nil {
			return
		}
	}
}

// BenchmarkProxyRaw: keep-alive GETs of a 1 KiB page through the gateway
// (path rules and a login form configured), with a client and a backend
// that are loops over raw connections, so that a CPU profile and the
// cpu-µs/op figure (process CPU time per request) show mostly postern.
func BenchmarkProxyRaw(b *testing.B) {
	beLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer beLn.Close()
	go func() {
		for {
			c, err := beLn.Accept()
			if err != nil {
				return
			}
			go serveRaw(c)
		}
	}()
	addr, _ := startProxy(b, beLn.Addr().String(), true)
	req := []byte("GET /webmail/inbox HTTP/1.1\r\nHost: mail.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	b.SetParallelism(4)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 8192)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			n, err := readRawResponse(br)
			if err != nil || n != 1024 {
				b.Errorf("response: %d bytes, %v", n, err)
				return
			}
		}
	})
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}

// readRawResponse reads a 200 response with a Content-Length and returns
// the length of its body.
func readRawResponse(br *bufio.Reader) (int, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return 0, fmt.Errorf("status line %q", line)
	}
	n := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(k), "Content-Length") {
			n, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return 0, err
			}
		}
	}
	if n < 0 {
		return 0, errors.New("no Content-Length")
	}
	_, err = br.Discard(n)
	return n, err
}

// startProxy serves a web gateway (baseCfg) in front of backend until the
// test ends; direct false keeps every request on the ReverseProxy path.
// Each opt is called with the configuration before New (p nil) and with
// the Proxy before it serves (c nil).
func startProxy(tb testing.TB, backend string, direct bool, opts ...func(c *Config, p *Proxy)) (string, *Proxy) {
	tb.Helper()
	return startProxyConfig(tb, baseCfg, backend, direct, opts...)
}

// startProxyConfig is startProxy with the configuration text conf.
func startProxyConfig(tb testing.TB, conf, backend string, direct bool, opts ...func(c *Config, p *Proxy)) (string, *Proxy) {
	tb.Helper()
	dir := tb.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := FromConfig(snap.Config.Services[service.Web], nil)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Backends = []*url.URL{{Scheme: "http", Host: backend}}
	cfg.BackendTimeout = 5 * time.Second
	for _, o := range opts {
		o(&cfg, nil)
	}
	p, err := New(cfg, eng, func() *policy.Policy { return snap.Policy }, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if !direct {
		p.dc = nil
	} else if p.dc == nil {
		tb.Skip("no direct path on this platform")
	}
	for _, o := range opts {
		o(nil, p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Serve(ctx, ln, time.Second) }()
	tb.Cleanup(func() { cancel(); <-done; eng.Close() })
	return ln.Addr().String(), p
}
