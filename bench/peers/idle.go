package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/bench/internal/mailclient"
	"github.com/postern/postern/bench/internal/procstat"
)

// idleResult is one proxy's memory per idle logged-in IMAP connection.
type idleResult struct {
	Side         string
	Asked, Held  int
	RSS0, RSSN   int64 // KiB, the proxy's processes together
	FDs          int   // the proxy's open descriptors with Held connections
	StoppedBy    string
	NoopChecked  int
	NoFileLimit  int
	ProcessCount int
}

// perConn returns the RSS growth per held connection in KiB.
func (i idleResult) perConn() float64 {
	if i.Held == 0 {
		return 0
	}
	return float64(i.RSSN-i.RSS0) / float64(i.Held)
}

func (i idleResult) cell() string {
	s := fmt.Sprintf("%.1f KiB<br>%d of %d held", i.perConn(), i.Held, i.Asked)
	if i.StoppedBy != "" {
		s += " (" + i.StoppedBy + ")"
	}
	return s
}

// ---- the backend child ------------------------------------------------------------

// serveIMAPD is the idle test's IMAP backend (this program re-run with
// -child-imapd ADDR): go-imap v2's server with its in-memory backend (user
// alice, one message) behind a listener that requires a PROXY header (v1
// from nginx, v2 from haproxy and postern), as Dovecot's PROXY port does.
// Dovecot runs one process per logged-in connection and cannot hold
// 10,000; this backend runs in a process of its own so that its
// descriptors do not count against the proxy's or the load generator's.
func serveIMAPD(addr string) error {
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(loginUser.user, loginUser.pass)
	if err := u.Create("INBOX", nil); err != nil {
		return err
	}
	msg := "From: bench@bench.invalid\r\nTo: " + loginUser.user + "\r\nSubject: idle\r\n\r\nidle test\r\n"
	if _, err := u.Append("INBOX", memLiteral{strings.NewReader(msg)}, &imap.AppendOptions{}); err != nil {
		return err
	}
	mem.AddUser(u)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapSASLIR: {}, imap.CapLiteralPlus: {}, imap.CapIdle: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	pl := &proxyproto.Listener{
		Listener:          ln,
		ConnPolicy:        func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(pl) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
		srv.Close()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

type memLiteral struct{ *strings.Reader }

func (l memLiteral) Size() int64 { return int64(l.Len()) }

// ---- the test ------------------------------------------------------------------------

// idleTest measures, for postern, haproxy and nginx in turn, the proxy's
// RSS growth per idle logged-in IMAP connection: a fresh proxy in front
// of the backend child, one full session, RSS, then N connections that
// read the greeting and LOGIN and stay, RSS again.
func (b *bench) idleTest() error {
	free, err := freeAddrs(5)
	if err != nil {
		return err
	}
	imapd, authAddr := free[0], free[1]
	dir := filepath.Join(b.tmp, "idle")
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o755); err != nil {
		return err
	}
	backend, err := startChild(dir, childIMAPD, imapd)
	if err != nil {
		return err
	}
	defer backend.Stop()
	auth, err := startChild(dir, childAuth, authAddr, port(imapd), port(imapd))
	if err != nil {
		return err
	}
	defer auth.Stop()
	// Each proxy holds two descriptors per connection (client and backend
	// sockets) under the same per-process limit.
	limit := b.rep.NoFile
	room := (limit - 200) / 2
	for _, side := range []string{"postern", "haproxy", "nginx"} {
		if b.ctx.Err() != nil {
			break
		}
		listen := free[2]
		var p *benchkit.Proc
		switch side {
		case "postern":
			p, err = startPostern("postern-idle", filepath.Join(dir, "postern"), b.bin, idlePosternConf(dir, listen, imapd), listen)
		case "haproxy":
			p, err = startHAProxy(dir, idleHAProxyConf(listen, imapd, room), listen)
		case "nginx":
			p, err = startNginx("nginx-idle", dir, idleNginxConf(dir, listen, authAddr, limit), listen)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", side, err)
		}
		res := b.holdIdle(side, p, listen, min(b.o.idle, room))
		res.Asked, res.NoFileLimit = b.o.idle, limit
		if res.Held < b.o.idle && res.StoppedBy == "" {
			res.StoppedBy = fmt.Sprintf("descriptor limit %d: 2 per connection", limit)
		}
		p.Stop()
		b.rep.Idle = append(b.rep.Idle, res)
		benchkit.Logf("idle %-8s %d of %d held: RSS %d → %d KiB, %.1f KiB per connection, %d descriptors; %s",
			side, res.Held, res.Asked, res.RSS0, res.RSSN, res.perConn(), res.FDs, res.StoppedBy)
		if res.Held == 0 {
			b.fail("idle %s: no connection held (%s)", side, res.StoppedBy)
		}
	}
	return nil
}

func idlePosternConf(dir, listen, backend string) string {
	return fmt.Sprintf(`# written by bench/peers (idle test)
services:
  imap:
    listen: %q
    backend: %q
    backend_proxy: v2
    plaintext_login: "127.0.0.0/8"
    max_connections_per_address: 1000000
intrusion_prevention:
  block_minutes: 240
  imap_pop3: { connections_per_minute: 100000000, failed_logins: 5 }
store: { path: %q }
admin: { listen: %q, token_file: %q }
log: { level: info }
`, listen, backend, filepath.Join(dir, "postern", "postern.db"), "unix:"+filepath.Join(dir, "postern", "admin.sock"), filepath.Join(dir, "postern", "admin.token"))
}

func idleHAProxyConf(listen, backend string, maxconn int) string {
	return fmt.Sprintf(`# written by bench/peers (idle test)
global
  maxconn %d
defaults
  mode tcp
  timeout connect 5s
  timeout client 15m
  timeout server 15m
frontend imap
  bind %s
  default_backend imapd
backend imapd
  server imapd %s send-proxy-v2
`, maxconn, listen, backend)
}

func idleNginxConf(dir, listen, auth string, nofile int) string {
	return fmt.Sprintf(`# written by bench/peers (idle test)
load_module %s;
daemon off;
worker_processes auto;
worker_rlimit_nofile %d;
pid %s/nginx-idle.pid;
error_log %s/nginx-idle-error.log warn;
events { worker_connections %d; }
mail {
  server_name mail.bench.invalid;
  auth_http %s/auth;
  proxy_protocol on;
  xclient off;
  imap_capabilities IMAP4rev1 LITERAL+ SASL-IR IDLE;
  server { listen %s backlog=4096; protocol imap; }
}
`, nginxMailModule, nofile, dir, dir, nofile-100, auth, listen)
}

// treeRSS returns the VmRSS (KiB) of pid and its direct children (nginx's
// workers), how many processes that is, and their open descriptors.
func treeRSS(pid int) (rss int64, procs, fds int) {
	pids := []int{pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n == pid {
			continue
		}
		if _, _, pp, err := procstat.ProcTimes(n); err == nil && pp == pid {
			pids = append(pids, n)
		}
	}
	for _, p := range pids {
		rss += procstat.StatusKB(p, "VmRSS")
		fds += max(0, procstat.FDCount(p))
	}
	return rss, len(pids), fds
}

// settledTreeRSS waits until treeRSS stops moving (two readings 300 ms
// apart within 64 KiB, 6 s at most).
func settledTreeRSS(pid int) int64 {
	prev, _, _ := treeRSS(pid)
	for range 20 {
		time.Sleep(300 * time.Millisecond)
		cur, _, _ := treeRSS(pid)
		if d := cur - prev; d < 64 && d > -64 {
			return cur
		}
		prev = cur
	}
	return prev
}

// holdIdle opens up to n logged-in connections through the proxy p at
// listen and measures its RSS before and after.
func (b *bench) holdIdle(side string, p *benchkit.Proc, listen string, n int) idleResult {
	res := idleResult{Side: side}
	t := target{side: side, addr: listen}
	// One full session first, so that lazily created state exists.
	if _, err := loginSession(b.ctx, t, sourceAddr(13, 0), &stepClock{}); err != nil {
		res.StoppedBy = "first session: " + err.Error()
		return res
	}
	res.RSS0 = settledTreeRSS(p.PID())
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Minute)
	defer cancel()
	conns := make([]*mailclient.Conn, n)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	next := make(chan int)
	const openers = 16
	for range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := idleOpen(ctx, t, sourceAddr(13, 1+i%1000))
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
				} else {
					conns[i] = c
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for _, c := range conns {
		if c != nil {
			res.Held++
		}
	}
	if firstErr != nil {
		res.StoppedBy = firstErr.Error()
	}
	res.RSSN = settledTreeRSS(p.PID())
	_, res.ProcessCount, res.FDs = treeRSS(p.PID())
	// Still logged in: NOOP on some of them.
	for _, c := range conns {
		if c == nil || res.NoopChecked >= 20 {
			continue
		}
		c.C.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.IMAPCmd("NOOP", nil); err != nil {
			b.fail("idle %s: NOOP on a held connection: %v", side, err)
			break
		}
		res.NoopChecked++
	}
	return res
}

// idleOpen connects, reads the greeting and logs in, and leaves the
// connection open (15 minutes' deadline).
func idleOpen(ctx context.Context, t target, src netip.Addr) (*mailclient.Conn, error) {
	c, err := dial(ctx, t, src, time.Now().Add(15*time.Minute))
	if err != nil {
		return nil, err
	}
	if err := c.IMAPGreeting(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.IMAPCmd("LOGIN "+loginUser.user+" "+loginUser.pass, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
