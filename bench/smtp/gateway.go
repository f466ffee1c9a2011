package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	rpprof "runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postern/postern/internal/dnsbl"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// runChildGateway is the in-process gateway (flag -child-gateway): the
// smtp service wired as `postern serve` wires it (snapshot, SQLite store,
// guard engine, netlisten listener, smtpproxy), plus a control server on
// ctrl with net/http/pprof, /cpu/start?file=, /cpu/stop and /memstats. It
// exists because postern serve has no profiling endpoint.
func runChildGateway(cfgPath, ctrl string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "child gateway:", err)
		return 1
	}
	snap, err := snapshot.Load(ctx, cfgPath, time.Now())
	if err != nil {
		return fail(err)
	}
	holder := snapshot.NewHolder(snap)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := store.Open(ctx, snap.Config.Store.Path.Value)
	if err != nil {
		return fail(err)
	}
	defer db.Close()
	eng, err := guard.New(ctx, snap.Guard, guard.Options{Store: db, Logger: log, Node: "bench"})
	if err != nil {
		return fail(err)
	}
	defer eng.Close()
	go eng.Run(ctx, time.Minute)
	svc := snap.Config.Services[service.SMTP]
	if svc == nil {
		return fail(fmt.Errorf("no smtp service in %s", cfgPath))
	}
	ln, err := netlisten.Listen(ctx, netlisten.Config{
		Listen:     svc.Listen.Value,
		Trusted:    func(a netip.Addr) bool { return holder.Load().Policy.TrustedUpstream(a) },
		MaxPerAddr: svc.MaxPerAddress,
		MaxConns:   svc.MaxConnections,
		Logger:     log,
	})
	if err != nil {
		return fail(err)
	}
	f := snap.Config
	cfg, err := smtpproxy.FromConfig(svc, f, nil)
	if err != nil {
		return fail(err)
	}
	checker := dnsbl.New(dnsbl.Options{Resolver: f.DNS.Resolver.Value, Timeout: f.DNS.Timeout.D, CacheTTL: f.DNS.Cache.D})
	env := func() smtpproxy.Env {
		s := holder.Load()
		return smtpproxy.Env{Policy: s.Policy, LocalDomains: s.Guard.LocalDomains}
	}
	p := smtpproxy.New(cfg, eng, env, checker, log)

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	var cpuFile *os.File
	var cpuMu sync.Mutex
	mux.HandleFunc("/cpu/start", func(w http.ResponseWriter, r *http.Request) {
		cpuMu.Lock()
		defer cpuMu.Unlock()
		fh, err := os.Create(r.URL.Query().Get("file"))
		if err == nil {
			if err = rpprof.StartCPUProfile(fh); err != nil {
				fh.Close()
			}
		}
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		cpuFile = fh
	})
	mux.HandleFunc("/cpu/stop", func(w http.ResponseWriter, r *http.Request) {
		cpuMu.Lock()
		defer cpuMu.Unlock()
		if cpuFile != nil {
			rpprof.StopCPUProfile()
			cpuFile.Close()
			cpuFile = nil
		}
	})
	mux.HandleFunc("/memstats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") == "1" {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		json.NewEncoder(w).Encode(map[string]any{
			"HeapInuse": ms.HeapInuse, "HeapAlloc": ms.HeapAlloc, "StackInuse": ms.StackInuse,
			"Sys": ms.Sys, "Goroutines": runtime.NumGoroutine(), "Live": p.Live(),
		})
	})
	cln, err := net.Listen("tcp", ctrl)
	if err != nil {
		return fail(err)
	}
	go http.Serve(cln, mux)
	fmt.Fprintln(os.Stderr, "child gateway listening on", ln.Addr())
	if err := p.Serve(ctx, acceptor{ln}, 5*time.Second); err != nil {
		return fail(err)
	}
	return 0
}

// acceptor adapts netlisten to smtpproxy as cmd/postern does.
type acceptor struct{ ln *netlisten.Listener }

func (a acceptor) Accept() (relay.Conn, error) {
	c, err := a.ln.Accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a acceptor) Close() error { return a.ln.Close() }

// childCtl talks to a running child gateway's control server.
type childCtl struct{ base string }

func (c childCtl) get(path string) ([]byte, error) {
	cl := http.Client{Timeout: 30 * time.Second}
	resp, err := cl.Get(c.base + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("%s: %s %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, err
}

func (c childCtl) memstats(gc bool) (map[string]float64, error) {
	q := "/memstats"
	if gc {
		q += "?gc=1"
	}
	b, err := c.get(q)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	return m, json.Unmarshal(b, &m)
}

func (c childCtl) saveHeap(file string) error {
	b, err := c.get("/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

func (c childCtl) cpuStart(file string) error {
	abs, _ := filepath.Abs(file)
	_, err := c.get("/cpu/start?file=" + abs)
	return err
}

func (c childCtl) cpuStop() error { _, err := c.get("/cpu/stop"); return err }

// fakeBackend is a minimal SMTP server for the idle-connection test: it
// takes postern's PROXY v2 header, greets, answers EHLO like Postfix (5
// extensions), and holds the connection. It lives in this process so that
// Postfix (default_process_limit 100) is not asked for 2,000 smtpd.
type fakeBackend struct {
	ln    net.Listener
	live  atomic.Int64
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startFakeBackend() (*fakeBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fb := &fakeBackend{ln: ln, conns: map[net.Conn]struct{}{}}
	fb.wg.Add(1)
	go func() {
		defer fb.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fb.mu.Lock()
			fb.conns[c] = struct{}{}
			fb.mu.Unlock()
			fb.wg.Add(1)
			go func() {
				defer fb.wg.Done()
				fb.serve(c)
				fb.mu.Lock()
				delete(fb.conns, c)
				fb.mu.Unlock()
			}()
		}
	}()
	return fb, nil
}

func (fb *fakeBackend) addr() string { return fb.ln.Addr().String() }

func (fb *fakeBackend) serve(c net.Conn) {
	defer c.Close()
	fb.live.Add(1)
	defer fb.live.Add(-1)
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	r := bufio.NewReaderSize(c, 512)
	// PROXY v2: 12-byte signature, version/command, family, 2-byte length.
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return
	}
	if _, err := r.Discard(int(binary.BigEndian.Uint16(hdr[14:16]))); err != nil {
		return
	}
	io.WriteString(c, "220 fake.bench.invalid ESMTP\r\n")
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(strings.SplitN(string(line), " ", 2)[0]))
		switch verb {
		case "EHLO":
			io.WriteString(c, "250-fake.bench.invalid\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n")
		case "QUIT":
			io.WriteString(c, "221 2.0.0 Bye\r\n")
			return
		default:
			io.WriteString(c, "250 2.0.0 Ok\r\n")
		}
	}
}

func (fb *fakeBackend) close() {
	fb.ln.Close()
	fb.mu.Lock()
	for c := range fb.conns {
		c.Close()
	}
	fb.mu.Unlock()
	fb.wg.Wait()
}
