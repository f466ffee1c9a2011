package policyd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// benchYAML never blocks by itself: the benchmark measures decisions.
const benchYAML = `local_domains: "example.com"
intrusion_prevention:
  smtp: { connections_per_minute: 1000000000, relay_denials: 1000000000, failed_logins: 1000000000 }
  imap_pop3: { connections_per_minute: 1000000000, failed_logins: 1000000000 }
`

// benchEngine is an engine with n active blocks (/32s and /64s).
func benchEngine(b *testing.B, n int) *guard.Engine {
	eng := newEngine(b, benchYAML)
	now := time.Now()
	r := rand.New(rand.NewPCG(1, 2))
	seen := make(map[netip.Prefix]bool, n)
	blocks := make([]store.Block, 0, n)
	for len(blocks) < n {
		var p netip.Prefix
		if len(blocks)%2 == 0 {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + r.IntN(200)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))}), 32)
		} else {
			var a [16]byte
			a[0], a[1] = 0x2a, byte(r.IntN(256))
			for i := 2; i < 8; i++ {
				a[i] = byte(r.IntN(256))
			}
			p = netip.PrefixFrom(netip.AddrFrom16(a), 64)
		}
		if !seen[p] {
			seen[p] = true
			blocks = append(blocks, store.Block{Prefix: p, Reason: reason.Login, FirstSeen: now, LastSeen: now, Expires: now.Add(24 * time.Hour)})
		}
	}
	if _, err := eng.Import(context.Background(), blocks, "bench"); err != nil {
		b.Fatal(err)
	}
	if got := len(eng.Blocks()); got != n {
		b.Fatalf("%d blocks, want %d", got, n)
	}
	return eng
}

// report adds decisions/s and the latency percentiles of lat.
func report(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "decisions/s")
	b.ReportMetric(p(0.50), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}

// parallel runs conns clients, each asking b.N/conns questions with ask,
// and reports the decisions per second and latencies.
func parallel(b *testing.B, conns int, ask func(client, i int) error) {
	lat := make([][]time.Duration, conns)
	per := max(b.N/conns, 1)
	b.ResetTimer()
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Go(func() {
			l := make([]time.Duration, 0, per)
			for i := range per {
				s := time.Now()
				if err := ask(c, i); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(s))
			}
			lat[c] = l
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	report(b, slices.Concat(lat...), elapsed)
}

// clientAddr is the i-th client of connection c: 10.c.x.y, outside the
// blocks, a new SMTP session (client_port) for every question.
func clientAddr(c, i int) string { return fmt.Sprintf("10.%d.%d.%d", c, i>>8&255, i&255) }

// BenchmarkPostfixPolicy: RCPT questions over Postfix's policy protocol
// on loopback, 100,000 active blocks, 8 policy connections (8 smtpd
// processes).
func BenchmarkPostfixPolicy(b *testing.B) {
	eng := benchEngine(b, 100_000)
	addr := servePostfix(b, NewPostfix(eng, Options{}))
	const conns = 8
	cs := make([]*bufio.ReadWriter, conns)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cs[i] = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	}
	parallel(b, conns, func(c, i int) error {
		rw := cs[c]
		fmt.Fprintf(rw, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=%s\nclient_port=%d\nsender=a@b.org\nrecipient=bob@example.com\ninstance=%d\n\n", clientAddr(c, i), i, i)
		if err := rw.Flush(); err != nil {
			return err
		}
		l, err := rw.ReadString('\n')
		if err != nil || l != "action=DUNNO\n" {
			return fmt.Errorf("answer %q %v", l, err)
		}
		_, err = rw.ReadString('\n')
		return err
	})
}

// BenchmarkDovecotPolicy: command=allow questions over HTTP keep-alive
// on loopback, 100,000 active blocks, 8 connections.
func BenchmarkDovecotPolicy(b *testing.B) {
	eng := benchEngine(b, 100_000)
	url := serveDovecot(b, NewDovecot(eng, Options{MaxConns: 64}))
	const conns = 8
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	parallel(b, conns, func(c, i int) error {
		body := `{"login":"bob@example.com","pwhash":"0a1","remote":"` + clientAddr(c, i) + `","device_id":"","protocol":"imap","session_id":"x","tls":false}`
		resp, err := cl.Post(url+"?command=allow", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		a, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || strings.TrimSpace(string(a)) != `{"status":0}` {
			return fmt.Errorf("answer %q %v", a, err)
		}
		return nil
	})
}
