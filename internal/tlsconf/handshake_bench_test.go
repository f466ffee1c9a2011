package tlsconf

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time of the calling OS thread; with the goroutine
// locked to its thread it is the goroutine's own CPU time, whatever else
// the machine runs.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// rsaPair writes a self-signed RSA-2048 pair into dir.
func rsaPair(b testing.TB, dir string) (certFile, keyFile string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "rsa.crt"), filepath.Join(dir, "rsa.key")
	if err := writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		b.Fatal(err)
	}
	return certFile, keyFile
}

// BenchmarkHandshake measures one handshake of a default Go client (which
// offers X25519MLKEM768 and X25519 key shares, as current browsers and
// mail clients do) with a server configured as postern's, over an
// in-memory pipe. server-ns/op and client-ns/op are the CPU time of each
// side's goroutine (thread CPU clock, unaffected by other load); ns/op is
// wall time of both.
//
// Dimensions: certificate key (RSA-2048, ECDSA P-256); key exchange the
// server picks (mlkem: X25519MLKEM768, Go's default; x25519: X25519 only,
// what nginx with OpenSSL 3.0 negotiates); full or resumed (session
// ticket); TLS 1.3 or 1.2.
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	// Each pair is made only when a benchmark of it runs, so a run of
	// one benchmark does the same work every time (for instruction
	// counts under callgrind).
	var (
		once  [2]sync.Once
		pairs [2]*Certs
	)
	pairOf := func(b *testing.B, i int) *Certs {
		once[i].Do(func() {
			var certFile, keyFile string
			var err error
			if i == 0 {
				certFile, keyFile, err = SelfSigned(dir, []string{"localhost"}, time.Hour)
			} else {
				certFile, keyFile = rsaPair(b, dir)
			}
			if err == nil {
				pairs[i], err = Load(certFile, keyFile)
			}
			if err != nil {
				b.Fatal(err)
			}
		})
		return pairs[i]
	}
	for pi, pairName := range []string{"ecdsa-p256", "rsa-2048"} {
		for _, v := range []struct {
			name string
			max  uint16
		}{{"tls13", tls.VersionTLS13}, {"tls12", tls.VersionTLS12}} {
			for _, kex := range []string{"mlkem", "x25519"} {
				if v.max == tls.VersionTLS12 && kex == "mlkem" {
					continue // hybrid key exchange is TLS 1.3 only
				}
				for _, resumed := range []bool{false, true} {
					mode := "full"
					if resumed {
						mode = "resumed"
					}
					b.Run(pairName+"/"+v.name+"/"+kex+"/"+mode, func(b *testing.B) {
						certs := pairOf(b, pi)
						keys, err := NewTicketKeys(TicketOptions{})
						if err != nil {
							b.Fatal(err)
						}
						srv := keys.Apply(certs.ServerConfig())
						if kex == "x25519" {
							srv.CurvePreferences = []tls.CurveID{tls.X25519}
						}
						client := &tls.Config{InsecureSkipVerify: true, MaxVersion: v.max}
						if resumed {
							client.ClientSessionCache = tls.NewLRUClientSessionCache(1)
							if benchHandshake(b, srv, client, nil).DidResume {
								b.Fatal("first handshake resumed")
							}
							cs, ok := client.ClientSessionCache.Get("pipe")
							if !ok {
								b.Fatal("no ticket")
							}
							client.ClientSessionCache = &oneSession{cs: cs}
						}
						want := tls.X25519MLKEM768
						if kex == "x25519" || v.max == tls.VersionTLS12 {
							want = tls.X25519
						}
						if got := benchHandshake(b, srv, client, nil).CurveID; got != want {
							b.Fatalf("key exchange %v, want %v", got, want)
						}
						var cpu [2]time.Duration
						b.ReportAllocs()
						b.ResetTimer()
						for range b.N {
							if benchHandshake(b, srv, client, &cpu).DidResume != resumed {
								b.Fatalf("resumed = %v, want %v", !resumed, resumed)
							}
						}
						b.StopTimer()
						b.ReportMetric(float64(cpu[0].Nanoseconds())/float64(b.N), "server-ns/op")
						b.ReportMetric(float64(cpu[1].Nanoseconds())/float64(b.N), "client-ns/op")
					})
				}
			}
		}
	}
}

// benchHandshake runs one handshake and a one-byte answer (which carries a
// TLS 1.3 ticket to the client), adding each side's CPU time to cpu.
func benchHandshake(b *testing.B, srv, client *tls.Config, cpu *[2]time.Duration) tls.ConnectionState {
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	var wg sync.WaitGroup
	var serr error
	var sCPU time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0 := threadCPU(b)
		s := tls.Server(sc, srv)
		if serr = s.Handshake(); serr == nil {
			_, serr = s.Write([]byte{'x'})
		}
		sCPU = threadCPU(b) - t0
	}()
	runtime.LockOSThread()
	t0 := threadCPU(b)
	cl := tls.Client(cc, client)
	err := cl.Handshake()
	if err == nil {
		_, err = io.ReadFull(cl, make([]byte, 1))
	}
	cCPU := threadCPU(b) - t0
	runtime.UnlockOSThread()
	if err != nil {
		b.Fatalf("client: %v", err)
	}
	wg.Wait()
	if serr != nil {
		b.Fatalf("server: %v", serr)
	}
	if cpu != nil {
		cpu[0] += sCPU
		cpu[1] += cCPU
	}
	return cl.ConnectionState()
}

// BenchmarkSign is the signature a full handshake makes with the server's
// key (for comparison with `openssl speed rsa2048 ecdsap256`); cpu-ns/op
// is the thread's CPU time.
func BenchmarkSign(b *testing.B) {
	dir := b.TempDir()
	ecCert, ecKey, err := SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	rsaCert, rsaKey := rsaPair(b, dir)
	digest := make([]byte, 32)
	for _, p := range []struct{ name, cert, key string }{{"ecdsa-p256", ecCert, ecKey}, {"rsa-2048", rsaCert, rsaKey}} {
		certs, err := Load(p.cert, p.key)
		if err != nil {
			b.Fatal(err)
		}
		signer := certs.Certificate().PrivateKey.(crypto.Signer)
		var opts crypto.SignerOpts = crypto.SHA256
		if p.name == "rsa-2048" {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		}
		b.Run(p.name, func(b *testing.B) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			t0 := threadCPU(b)
			for range b.N {
				if _, err := signer.Sign(rand.Reader, digest, opts); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((threadCPU(b)-t0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
