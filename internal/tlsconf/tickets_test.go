package tlsconf

import (
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
	"sync"
	"testing"
	"time"
)

// resumeClient is one client with a session cache, like a mail client
// reconnecting.
type resumeClient struct {
	cfg *tls.Config
}

func newResumeClient(t *testing.T, certFile string, maxVersion uint16) *resumeClient {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mustRead(t, certFile)) {
		t.Fatal("no certificate in", certFile)
	}
	return &resumeClient{cfg: &tls.Config{
		RootCAs: pool, ServerName: "localhost", MaxVersion: maxVersion,
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}}
}

// connect runs one handshake against srv over an in-memory pipe, reads
// one byte the server writes afterwards (so a TLS 1.3 ticket, sent after
// the handshake, reaches the client's cache), and reports whether the
// session was resumed.
func (c *resumeClient) connect(t *testing.T, srv *tls.Config) bool {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	sc.SetDeadline(deadline)
	cc.SetDeadline(deadline)
	var wg sync.WaitGroup
	var serr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := tls.Server(sc, srv)
		if serr = s.Handshake(); serr != nil {
			return
		}
		_, serr = s.Write([]byte{'x'})
	}()
	cl := tls.Client(cc, c.cfg)
	if err := cl.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if _, err := io.ReadFull(cl, make([]byte, 1)); err != nil {
		t.Fatalf("client read: %v", err)
	}
	wg.Wait()
	if serr != nil {
		t.Fatalf("server: %v", serr)
	}
	return cl.ConnectionState().DidResume
}

var versions = []struct {
	name string
	max  uint16
}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}}

func TestTicketsResumeAcrossConfigs(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "localhost")
	certs, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var store TicketStore
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			cl := newResumeClient(t, certFile, v.max)
			before := store.For("imaps").Apply(certs.ServerConfig())
			if cl.connect(t, before) {
				t.Fatal("first handshake resumed")
			}
			if !cl.connect(t, before) {
				t.Fatal("second handshake on the same config not resumed")
			}
			// A reload builds a new config: the keys are the service's.
			after := store.For("imaps").Apply(certs.ServerConfig())
			if !cl.connect(t, after) {
				t.Fatal("handshake on the config built by a reload not resumed")
			}
			// Another service has keys of its own.
			if cl.connect(t, store.For("smtps").Apply(certs.ServerConfig())) {
				t.Fatal("a ticket of one service resumed on another")
			}
		})
	}
}

// TestPerConfigKeysDoNotResume is what happened before tickets were keyed
// per service: each config built by a reload had random keys of its own,
// so every client made a full handshake after a reload. It pins down why
// Apply is needed.
func TestPerConfigKeysDoNotResume(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "localhost")
	certs, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cl := newResumeClient(t, certFile, 0)
	cl.connect(t, certs.ServerConfig())
	if cl.connect(t, certs.ServerConfig()) {
		t.Fatal("crypto/tls now shares ticket keys between configs; TicketKeys may be unnecessary")
	}
}

func TestTicketRotation(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "localhost")
	certs, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	keys, err := NewTicketKeys(TicketOptions{Rotation: time.Hour, Lifetime: 3 * time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	srv := keys.Apply(certs.ServerConfig())
	srv.Time = clock // crypto/tls's own ticket age check uses the same clock

	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			cl := newResumeClient(t, certFile, v.max)
			cl.connect(t, srv) // a ticket under the current key
			// Two rotations later the ticket's key still decrypts. (The
			// resumed handshake must not refresh the client's ticket, so
			// use a client whose cache only holds the first ticket.)
			first := snapshotCache(t, cl)
			advance(2*time.Hour + time.Minute)
			if !first.connect(t, srv) {
				t.Fatal("a ticket under a rotated-out key within its lifetime did not resume")
			}
			// Rotation is on use: one rotation for the jump, so the new
			// key and the ticket's.
			if n := keys.Len(); n != 2 {
				t.Errorf("keys held = %d, want 2", n)
			}
			// Past the lifetime of its key it does not.
			advance(time.Hour)
			if first.connect(t, srv) {
				t.Fatal("a ticket under a key past its lifetime resumed")
			}
			if n := keys.Len(); n > 3 {
				t.Errorf("keys held = %d, want at most 3", n)
			}
		})
	}
}

// snapshotCache returns a client whose cache holds what cl's holds now,
// and which later handshakes of cl do not change.
func snapshotCache(t *testing.T, cl *resumeClient) *resumeClient {
	t.Helper()
	key := cl.cfg.ServerName // crypto/tls keys the cache by server name
	cs, ok := cl.cfg.ClientSessionCache.Get(key)
	if !ok || cs == nil {
		t.Fatal("no session in the client's cache")
	}
	cp := cl.cfg.Clone()
	cp.ClientSessionCache = &oneSession{cs: cs}
	return &resumeClient{cfg: cp}
}

// oneSession is a client session cache that always offers one session.
type oneSession struct{ cs *tls.ClientSessionState }

func (o *oneSession) Get(string) (*tls.ClientSessionState, bool) { return o.cs, true }
func (o *oneSession) Put(string, *tls.ClientSessionState)        {}

// TestRSAAndECDSAPairs: both kinds of key load and serve, full and
// resumed handshakes.
func TestRSAAndECDSAPairs(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsaKey.PublicKey, rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert, rsaKeyFile := filepath.Join(dir, "rsa.crt"), filepath.Join(dir, "rsa.key")
	mustWrite(t, rsaCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	mustWrite(t, rsaKeyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}))
	_, ecCert, ecKey := selfSigned(t, "localhost")

	for _, pair := range []struct{ name, cert, key, alg string }{
		{"RSA", rsaCert, rsaKeyFile, "RSA"},
		{"ECDSA", ecCert, ecKey, "ECDSA"},
	} {
		t.Run(pair.name, func(t *testing.T) {
			certs, err := Load(pair.cert, pair.key)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := certs.Certificate().Leaf.PublicKeyAlgorithm.String(); got != pair.alg {
				t.Fatalf("public key algorithm %s, want %s", got, pair.alg)
			}
			var store TicketStore
			for _, v := range versions {
				cl := newResumeClient(t, pair.cert, v.max)
				if cl.connect(t, store.For("x").Apply(certs.ServerConfig())) {
					t.Fatalf("%s: first handshake resumed", v.name)
				}
				if !cl.connect(t, store.For("x").Apply(certs.ServerConfig())) {
					t.Fatalf("%s: second handshake not resumed", v.name)
				}
			}
		})
	}
}

func TestSelfSignedIsECDSAP256(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "localhost")
	certs, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs.Certificate().Leaf
	if leaf.PublicKeyAlgorithm != x509.ECDSA || leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Fatalf("self-signed certificate: %s signed with %s, want ECDSA (P-256, SHA-256)", leaf.PublicKeyAlgorithm, leaf.SignatureAlgorithm)
	}
}
