package sockio

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// The round-trip benchmark needs a peer in another process: a peer in
// this one would make system calls of its own through the runtime and
// hide the difference. The test binary is started again as that peer.
const peerEnv = "SOCKIO_BENCH_PEER"

func TestMain(m *testing.M) {
	testenv.ServePeer(peerEnv, runPeer)
	os.Exit(m.Run())
}

// runPeer answers every read with the same bytes after delay (the time a
// backend takes to answer), until the connection ends.
func runPeer(c net.Conn, delay string) {
	d, err := time.ParseDuration(delay)
	if err != nil {
		return
	}
	b := make([]byte, 512)
	for {
		n, err := c.Read(b)
		if err != nil {
			return
		}
		time.Sleep(d)
		if _, err := c.Write(b[:n]); err != nil {
			return
		}
	}
}

// startPeer starts the test binary again as a peer (runPeer) answering
// after delay, and returns a connection to it.
func startPeer(tb testing.TB, delay string) *net.TCPConn {
	tb.Helper()
	return testenv.DialPeer(tb, peerEnv, delay)
}

// BenchmarkRoundTrip writes a short request and reads its answer, which a
// peer process sends 300 µs later, so that this process goes idle between
// the two as a gateway does while its backend works. cpu-ns/op is this
// process's CPU (user and system) per round trip: through net.TCPConn,
// through a Conn, and with a Conn's WriteRead.
//
//	go test -run '^$' -bench RoundTrip -benchtime 3000x ./internal/sockio/
func BenchmarkRoundTrip(b *testing.B) {
	for _, side := range []string{"net", "sockio", "sockio-writeread"} {
		b.Run(side, func(b *testing.B) {
			nc := startPeer(b, "300us")
			var c net.Conn = nc
			if side != "net" {
				c = New(nc)
			}
			wr, _ := c.(*Conn)
			req := []byte("a NOOP\r\n")
			buf := make([]byte, 64)
			c.SetDeadline(time.Now().Add(50 * time.Second))
			var r0, r1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
			b.ResetTimer()
			for range b.N {
				if side == "sockio-writeread" {
					if _, _, err := wr.WriteRead(req, buf, false); err != nil {
						b.Fatal(err)
					}
					continue
				}
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
			cpu := r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano()
			b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
