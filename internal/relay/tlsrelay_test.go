package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// tlsServerConfig is a throwaway ECDSA P-256 server configuration.
func tlsServerConfig(tb testing.TB) *tls.Config {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// tlsSession is a logged-in IMAPS session as the gateway relays it: the
// client's TLS ends in the gateway (server side of a tls.Conn), the
// backend is plain TCP, and Splice copies between them.
type tlsSession struct {
	client  *tls.Conn
	backend *net.TCPConn
	done    chan struct{}
}

func spliceTLS(tb testing.TB, srv *tls.Config) *tlsSession {
	tb.Helper()
	c, pa := tcpPair(tb)
	pb, backend := tcpPair(tb)
	client := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	server := tls.Server(pa, srv)
	herr := make(chan error, 1)
	go func() { herr <- server.Handshake() }()
	if err := client.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-herr; err != nil {
		tb.Fatal(err)
	}
	s := &tlsSession{client: client, backend: backend, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		Splice(context.Background(), server, pb, nil)
	}()
	tb.Cleanup(func() { client.Close(); backend.Close(); <-s.done })
	return s
}

func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTLSFetch is a FETCH of a large message through a TLS session:
// the backend writes size bytes in writes of 64 KiB or 8 KiB, the gateway
// relays them into the client's TLS, the client reads them. cpu-ns/MB is
// the process CPU (backend write, relay with encryption, client
// decryption) per MB.
func BenchmarkTLSFetch(b *testing.B) {
	for _, c := range []int{64 << 10, 8 << 10} {
		b.Run(fmt.Sprintf("write=%dk", c>>10), func(b *testing.B) { benchTLSFetch(b, c) })
	}
}

func benchTLSFetch(b *testing.B, chunkSize int) {
	s := spliceTLS(b, tlsServerConfig(b))
	benchTLSMove(b, s.backend, s.client, chunkSize)
}

// BenchmarkTLSAppend is an APPEND of a large message through a TLS
// session: the client writes size bytes in 64 KiB writes, the gateway
// relays them to the backend, which reads them. cpu-ns/MB as in
// BenchmarkTLSFetch.
func BenchmarkTLSAppend(b *testing.B) {
	s := spliceTLS(b, tlsServerConfig(b))
	benchTLSMove(b, s.client, s.backend, 64<<10)
}

// benchTLSMove writes 4 MiB per iteration into from in writes of
// chunkSize bytes, reads them out of to, and reports the process CPU per
// MB (cpu-ns/MB).
func benchTLSMove(b *testing.B, from, to net.Conn, chunkSize int) {
	const size = 4 << 20
	chunk := make([]byte, chunkSize)
	rand.Read(chunk)
	errc := make(chan error, 1)
	rbuf := make([]byte, 64<<10)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	for range b.N {
		go func() {
			for sent := 0; sent < size; sent += len(chunk) {
				if _, err := from.Write(chunk); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		to.SetReadDeadline(time.Now().Add(30 * time.Second))
		for got := 0; got < size; {
			n, err := to.Read(rbuf)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/(float64(b.N)*size/1e6), "cpu-ns/MB")
}

// idleTLSHeap opens n TLS sessions through Splice, moves bytes each way (a
// command up, after an upload of uploadSize bytes if not 0, and an answer
// down, so each pump has run), lets them idle and returns the heap held
// per session.
func idleTLSHeap(tb testing.TB, n, uploadSize int) float64 {
	tb.Helper()
	srv := tlsServerConfig(tb)
	upload := make([]byte, uploadSize)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sessions := make([]*tlsSession, n)
	for i := range sessions {
		s := spliceTLS(tb, srv)
		go func() {
			s.client.Write(upload)
			io.WriteString(s.client, "a NOOP\r\n")
		}()
		s.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(s.backend, make([]byte, len(upload)+8)); err != nil {
			tb.Fatal(err)
		}
		io.WriteString(s.backend, "a OK\r\n")
		s.client.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(s.client, make([]byte, 6)); err != nil {
			tb.Fatal(err)
		}
		sessions[i] = s
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(sessions)
	// Both ends of each session live in this process: the client's
	// tls.Conn and sockets count too, the same before and after a change.
	return float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / float64(n)
}

// BenchmarkIdleTLSSession reports the memory an idle relayed TLS session
// holds (both ends, this process), as B/session: after commands only, and
// after a 20,000-byte upload (crypto/tls then keeps a record-sized input
// buffer for the rest of the connection).
func BenchmarkIdleTLSSession(b *testing.B) {
	for _, up := range []int{0, 20000} {
		b.Run(fmt.Sprintf("upload=%d", up), func(b *testing.B) {
			for range b.N {
				b.ReportMetric(idleTLSHeap(b, 200, up), "B/session")
			}
		})
	}
}

// An idle relayed TLS session holds a 1 KiB read buffer (the pending read
// of the client's TLS) and no buffer for the backend's direction.
// Measured with both ends in this process: about 32 KB per session; with a
// 16 KiB read buffer held it was about 43 KB, with io.Copy's two 32 KiB
// buffers about 95 KB.
func TestIdleTLSSessionHoldsNoLargeBuffer(t *testing.T) {
	if per := idleTLSHeap(t, 100, 0); per > 38<<10 {
		t.Fatalf("an idle TLS session holds %.0f bytes, want under %d", per, 38<<10)
	}
}

// Pieces of every size around the buffers' bounds pass up in order.
func TestTLSSpliceUploadSizes(t *testing.T) {
	s := spliceTLS(t, tlsServerConfig(t))
	var want []byte
	for _, n := range []int{1, 1023, 1024, 1025, 5000, 16383, 16384, 16385, 40000, 7} {
		p := make([]byte, n)
		rand.Read(p)
		want = append(want, p...)
	}
	go s.client.Write(want)
	got := make([]byte, len(want))
	s.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(s.backend, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatal("client to backend: bytes differ")
	}
}

// Bytes pass both ways through a TLS session, large and small, in order.
func TestTLSSpliceMovesBytes(t *testing.T) {
	s := spliceTLS(t, tlsServerConfig(t))
	big := make([]byte, 1<<20+123)
	rand.Read(big)
	go s.backend.Write(big)
	got := make([]byte, len(big))
	s.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(s.client, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(big) {
		t.Fatal("backend to client: bytes differ")
	}
	go s.client.Write(big)
	s.backend.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(s.backend, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(big) {
		t.Fatal("client to backend: bytes differ")
	}
	// The backend closing ends the session: the client sees the end.
	s.backend.Close()
	if _, err := s.client.Read(make([]byte, 1)); err == nil {
		t.Fatal("client read after the backend closed succeeded")
	}
}

// scriptedConn is a net.Conn whose reads return the scripted pieces (as a
// tls.Conn returns at most one record's plaintext per read) and record the
// size of the buffer each read was given; then io.EOF.
type scriptedConn struct {
	net.Conn
	pieces [][]byte
	sizes  []int
	wrote  []byte
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	if len(c.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.pieces[0])
	if c.pieces[0] = c.pieces[0][n:]; len(c.pieces[0]) == 0 {
		c.pieces = c.pieces[1:]
	}
	return n, nil
}

func (c *scriptedConn) Write(p []byte) (int, error) {
	c.wrote = append(c.wrote, p...)
	return len(p), nil
}

// copyFromTLS reads small pieces with the 1 KiB buffer, takes the 16 KiB
// one when a read fills the small one, and goes back to the small one
// after the first read that does not fill the big one: the read that waits
// for the client's next command gets the small buffer.
func TestCopyFromTLSBufferSizes(t *testing.T) {
	src := &scriptedConn{pieces: [][]byte{
		make([]byte, 10),    // a command
		make([]byte, 16384), // an upload: 1 KiB, then the rest from the big buffer
		make([]byte, 16384),
		make([]byte, 300), // its end
		make([]byte, 8),   // the next command
	}}
	dst := &scriptedConn{}
	n, err := copyFromTLS(dst, src)
	if err != nil || n != 10+16384*2+300+8 || len(dst.wrote) != int(n) {
		t.Fatalf("copied %d (%d written), %v", n, len(dst.wrote), err)
	}
	want := []int{tlsIdleBuf, tlsIdleBuf, tlsReadBuf, tlsReadBuf, tlsReadBuf, tlsIdleBuf, tlsIdleBuf}
	if fmt.Sprint(src.sizes) != fmt.Sprint(want) {
		t.Fatalf("read buffer sizes %v, want %v", src.sizes, want)
	}
}
