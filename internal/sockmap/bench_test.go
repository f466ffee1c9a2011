package sockmap_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/sockmap"
)

// The benchmarks move a payload user → relay → server (upload) and
// server → relay → user (fetch, like an IMAP FETCH) on loopback, and
// ping-pong small messages, for three relays: none (the user talks to the
// server directly), splice (relay.Splice, today's path) and sockmap (the
// kernel relay). Besides ns/op and MB/s they report CPU per GB:
//   proc-ms/GB     this process (relay + both ends), getrusage
//   kthread-ms/GB  every kernel thread (the sockmap work queue runs there)
//   machine-ms/GB  busy time of the whole machine from /proc/stat (noisy
//                  on a shared machine)
//   softirq-ms/GB  the part of it spent in softirqs and charged to no
//                  thread
// The relay's own cost is a mode's figure minus the direct one's.

const benchPayload = 200 << 20

func loadKernel(b *testing.B) *sockmap.Kernel {
	if os.Geteuid() != 0 {
		b.Skip("sockmap: needs root to load the program")
	}
	k, err := sockmap.Load(sockmap.Options{MaxSessions: 16})
	if err != nil {
		b.Skipf("sockmap: BPF sockmap unavailable here: %v", err)
	}
	b.Cleanup(func() { k.Close() })
	return k
}

func pair(b testing.TB) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	x, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	y, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	return x.(*net.TCPConn), y.(*net.TCPConn)
}

// path is the user's and the server's ends of one session and a stop
// function that closes everything and waits for the relay.
type path struct {
	user, server *net.TCPConn
	stop         func()
}

func open(b testing.TB, mode string, k *sockmap.Kernel) path {
	if mode == "direct" {
		u, s := pair(b)
		return path{u, s, func() { u.Close(); s.Close() }}
	}
	u, c := pair(b)
	be, s := pair(b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if mode == "splice" {
			relay.Splice(context.Background(), c, be, nil)
			return
		}
		if _, _, err := k.Relay(context.Background(), c, be, nil); err != nil {
			b.Error(err)
		}
	}()
	return path{u, s, func() { u.Close(); s.Close(); <-done }}
}

type cpu struct{ proc, kthread, machine, softirq time.Duration }

// sample reads the three clocks; the process clock is read last when
// starting and first when ending, so that reading /proc is not counted.
func sample(b *testing.B, end bool) cpu {
	var c cpu
	proc := func() {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		c.proc = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if end {
		proc()
	}
	c.kthread = kthreads()
	c.machine, c.softirq = machineBusy(b)
	if !end {
		proc()
	}
	return c
}

const tick = 10 * time.Millisecond // USER_HZ 100

// kthreads sums the CPU time of every kernel thread (flag PF_KTHREAD).
func kthreads() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var t int64
	for _, p := range stats {
		s, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(s[i+2:]))
		if len(f) < 13 {
			continue
		}
		flags, _ := strconv.ParseUint(f[6], 10, 64)
		if flags&0x00200000 == 0 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		t += u + st
	}
	return time.Duration(t) * tick
}

// machineBusy returns the whole machine's busy time and, within it, the
// softirq time no thread was charged for (/proc/stat).
func machineBusy(b *testing.B) (busy, softirq time.Duration) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan()
	fs := strings.Fields(sc.Text())[1:]
	var all, soft int64
	for i, v := range fs {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i == 3 || i == 4 || i >= 8 { // idle, iowait, guest (counted in user)
			continue
		}
		all += n
		if i == 6 {
			soft = n
		}
	}
	return time.Duration(all) * tick, time.Duration(soft) * tick
}

func (c cpu) report(b *testing.B, since cpu, gb float64) {
	b.ReportMetric(float64((c.proc-since.proc).Milliseconds())/gb, "proc-ms/GB")
	b.ReportMetric(float64((c.kthread-since.kthread).Milliseconds())/gb, "kthread-ms/GB")
	b.ReportMetric(float64((c.machine-since.machine).Milliseconds())/gb, "machine-ms/GB")
	b.ReportMetric(float64((c.softirq-since.softirq).Milliseconds())/gb, "softirq-ms/GB")
}

var modes = []string{"direct", "splice", "sockmap"}

func benchStream(b *testing.B, fetch bool) {
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			var k *sockmap.Kernel
			if mode == "sockmap" {
				k = loadKernel(b)
			}
			b.SetBytes(benchPayload)
			buf := make([]byte, 1<<20)
			rbuf := make([]byte, 1<<20)
			var total time.Duration
			var before, after cpu
			for i := 0; i < b.N; i++ {
				p := open(b, mode, k)
				src, dst := p.user, p.server
				if fetch {
					src, dst = p.server, p.user
				}
				start := sample(b, false)
				t0 := time.Now()
				errc := make(chan error, 1)
				go func() {
					for n := 0; n < benchPayload; n += len(buf) {
						if _, err := src.Write(buf); err != nil {
							errc <- err
							return
						}
					}
					errc <- src.CloseWrite()
				}()
				dst.SetReadDeadline(time.Now().Add(2 * time.Minute))
				n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{dst}, rbuf)
				if err != nil || n != benchPayload {
					b.Fatalf("%s: received %d of %d: %v", mode, n, benchPayload, err)
				}
				if err := <-errc; err != nil {
					b.Fatal(err)
				}
				total += time.Since(t0)
				end := sample(b, true)
				before.proc, before.kthread, before.machine = before.proc+start.proc, before.kthread+start.kthread, before.machine+start.machine
				after.proc, after.kthread, after.machine = after.proc+end.proc, after.kthread+end.kthread, after.machine+end.machine
				before.softirq, after.softirq = before.softirq+start.softirq, after.softirq+end.softirq
				b.StopTimer()
				p.stop()
				b.StartTimer()
			}
			after.report(b, before, float64(b.N)*benchPayload/1e9)
		})
	}
}

// BenchmarkUpload: user → relay → server.
func BenchmarkUpload(b *testing.B) { benchStream(b, false) }

// BenchmarkFetch: server → relay → user, like an IMAP FETCH of a large
// message.
func BenchmarkFetch(b *testing.B) { benchStream(b, true) }

// BenchmarkPingPong: one 64-byte request and one 64-byte answer per op,
// over one session.
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			var k *sockmap.Kernel
			if mode == "sockmap" {
				k = loadKernel(b)
			}
			p := open(b, mode, k)
			defer p.stop()
			done := make(chan error, 1)
			go func() {
				m := make([]byte, 64)
				for {
					if _, err := io.ReadFull(p.server, m); err != nil {
						done <- nil
						return
					}
					if _, err := p.server.Write(m); err != nil {
						done <- err
						return
					}
				}
			}()
			m := make([]byte, 64)
			p.user.SetDeadline(time.Now().Add(5 * time.Minute))
			start := sample(b, false)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := p.user.Write(m); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(p.user, m); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			end := sample(b, true)
			b.ReportMetric(float64((end.proc-start.proc).Nanoseconds())/float64(b.N), "proc-ns/op")
			b.ReportMetric(float64((end.kthread-start.kthread).Nanoseconds())/float64(b.N), "kthread-ns/op")
			p.user.CloseWrite()
			<-done
		})
	}
}

// TestIdleMemory holds POSTERN_SOCKMAP_MEM idle sessions (e.g. 1000) in
// each relay mode and logs, per session, the Go heap and stacks in use and
// the kernel's slab memory (/proc/meminfo Slab: four sockets per session
// here, the user's and the server's ends included, the same for every
// mode). Descriptors per session are the same in both modes: the two
// relayed sockets (the maps and the program are three descriptors for
// the whole process).
func TestIdleMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("POSTERN_SOCKMAP_MEM"))
	if n <= 0 {
		t.Skip("POSTERN_SOCKMAP_MEM=<sessions> runs it")
	}
	var k *sockmap.Kernel
	if os.Geteuid() == 0 {
		k, _ = sockmap.Load(sockmap.Options{MaxSessions: n})
	}
	if k == nil {
		t.Skip("sockmap: BPF sockmap unavailable here")
	}
	defer k.Close()
	for _, mode := range []string{"splice", "sockmap", "splice", "sockmap", "splice", "sockmap"} {
		runtime.GC()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		slab0 := meminfo(t, "Slab:")
		paths := make([]path, 0, n)
		for range n {
			paths = append(paths, open(t, mode, k))
		}
		// every session is in place: one byte went through each
		one := []byte{1}
		for _, p := range paths {
			p.user.Write(one)
			p.server.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(p.server, one); err != nil {
				t.Fatal(err)
			}
		}
		runtime.GC()
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		slab1 := meminfo(t, "Slab:")
		heap := int64(m1.HeapInuse+m1.StackInuse) - int64(m0.HeapInuse+m0.StackInuse)
		t.Logf("%-7s %d idle sessions: Go heap+stacks %.1f KiB/session, kernel slab %.1f KiB/session (4 sockets)",
			mode, n, float64(heap)/1024/float64(n), float64(slab1-slab0)/1024/float64(n))
		for _, p := range paths {
			p.stop()
		}
	}
}

func meminfo(t *testing.T, key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/meminfo", key)
	return 0
}
