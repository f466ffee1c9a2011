package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned writes a fresh pair into a new temporary directory.
func selfSigned(t *testing.T, hosts ...string) (dir, certFile, keyFile string) {
	t.Helper()
	dir = t.TempDir()
	certFile, keyFile, err := SelfSigned(dir, hosts, time.Hour)
	if err != nil {
		t.Fatalf("SelfSigned: %v", err)
	}
	return dir, certFile, keyFile
}

// writeCert writes a certificate with the given validity, signed by its own
// new key, and returns the file paths.
func writeCert(t *testing.T, dir string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(42),
		Subject:      pkix.Name{CommonName: "old.example"},
		DNSNames:     []string{"old.example"},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(dir, "c.pem")
	keyFile = filepath.Join(dir, "k.pem")
	mustWrite(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	mustWrite(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func serial(t *testing.T, c *Certs) string {
	t.Helper()
	cert, err := c.GetCertificate(nil)
	if err != nil || cert == nil || cert.Leaf == nil {
		t.Fatalf("GetCertificate = %v, %v", cert, err)
	}
	return cert.Leaf.SerialNumber.String()
}

func TestLoadAndVerify(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "mail.example.test", "localhost", "127.0.0.1", "::1")
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if w := c.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q, want none", w)
	}
	if na := c.NotAfter(); na.Before(time.Now().Add(59*time.Minute)) || na.After(time.Now().Add(61*time.Minute)) {
		t.Errorf("NotAfter = %v, want about an hour from now", na)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", fi.Mode(), err)
	}

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, certFile))
	leaf := c.Certificate().Leaf
	for _, host := range []string{"mail.example.test", "localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("Verify(%s): %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool}); err == nil {
		t.Error("Verify(other.example) succeeded, want a name mismatch")
	}

	// A real handshake with ServerConfig.
	cfg := c.ServerConfig()
	if cfg.MinVersion != tls.VersionTLS12 || cfg.GetCertificate == nil {
		t.Fatalf("ServerConfig = MinVersion %x, GetCertificate %v", cfg.MinVersion, cfg.GetCertificate != nil)
	}
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	errc := make(chan error, 1)
	go func() { errc <- tls.Server(sc, cfg).Handshake() }()
	client := tls.Client(cc, &tls.Config{RootCAs: pool, ServerName: "mail.example.test"})
	if err := client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	// TLS 1.1 is refused.
	sc2, cc2 := net.Pipe()
	defer sc2.Close()
	defer cc2.Close()
	go func() { errc <- tls.Server(sc2, cfg).Handshake() }()
	old := tls.Client(cc2, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS11})
	if err := old.Handshake(); err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
	cc2.Close()
	<-errc
}

func TestLoadErrors(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "localhost")
	_, _, otherKey := selfSigned(t, "localhost")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	mustWrite(t, garbage, []byte("this is not PEM at all\n"))
	badBlock := filepath.Join(dir, "badblock.pem")
	mustWrite(t, badBlock, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}))
	badKey := filepath.Join(dir, "badkey.pem")
	mustWrite(t, badKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}))
	encKey := filepath.Join(dir, "enc.pem")
	mustWrite(t, encKey, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte("x")}))
	empty := filepath.Join(dir, "empty.pem")
	mustWrite(t, empty, nil)
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name       string
		cert, key  string
		names      string // the file the error must name
		want       string
		wantNotExi bool
	}{
		{"missing cert", missing, keyFile, missing, "not found", true},
		{"missing key", certFile, missing, missing, "not found", true},
		{"cert is a directory", dir, keyFile, dir, "not a regular file", false},
		{"cert not PEM", garbage, keyFile, garbage, "not PEM", false},
		{"cert empty", empty, keyFile, empty, "not PEM", false},
		{"key not PEM", certFile, garbage, garbage, "not PEM", false},
		{"cert file holds a key", keyFile, keyFile, keyFile, "is this the key file?", false},
		{"key file holds a cert", certFile, certFile, certFile, "is this the certificate file?", false},
		{"corrupt certificate", badBlock, keyFile, badBlock, "certificate 1 of 1", false},
		{"corrupt key", certFile, badKey, badKey, "PRIVATE KEY block", false},
		{"encrypted key", certFile, encKey, encKey, "encrypted", false},
		{"key does not match", certFile, otherKey, otherKey, "does not match certificate file", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.cert, tt.key)
			if err == nil {
				t.Fatalf("Load succeeded (%v), want an error", c)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.names) || !strings.Contains(msg, tt.want) {
				t.Errorf("error %q: want it to name %s and say %q", msg, tt.names, tt.want)
			}
			if tt.wantNotExi != errors.Is(err, fs.ErrNotExist) {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v", !tt.wantNotExi)
			}
		})
	}
	// The mismatch error also names the certificate file.
	if _, err := Load(certFile, otherKey); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Errorf("mismatch error %v does not name %s", err, certFile)
	}
}

func TestExpiredIsAWarning(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	certFile, keyFile := writeCert(t, dir, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("Load of an expired certificate: %v (want a warning, not an error)", err)
	}
	w := c.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "expired") || !strings.Contains(w[0], certFile) {
		t.Errorf("Warnings = %q, want one naming %s and saying expired", w, certFile)
	}
	if !c.NotAfter().Before(now) {
		t.Errorf("NotAfter = %v, want in the past", c.NotAfter())
	}

	certFile, keyFile = writeCert(t, t.TempDir(), now.Add(24*time.Hour), now.Add(48*time.Hour))
	c, err = Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], "not valid before") {
		t.Errorf("Warnings = %q, want not valid before", w)
	}
}

func TestReloadIfChanged(t *testing.T) {
	dir, certFile, keyFile := selfSigned(t, "localhost")
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	first := serial(t, c)
	if changed, err := c.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("ReloadIfChanged on unchanged files = %v, %v; want false, nil", changed, err)
	}

	// A renewal writes new files in place.
	if _, _, err := SelfSigned(dir, []string{"localhost"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	changed, err := c.ReloadIfChanged()
	if !changed || err != nil {
		t.Fatalf("ReloadIfChanged after renewal = %v, %v; want true, nil", changed, err)
	}
	second := serial(t, c)
	if second == first {
		t.Fatal("GetCertificate still returns the old certificate")
	}
	if changed, err := c.ReloadIfChanged(); changed || err != nil {
		t.Fatalf("second ReloadIfChanged = %v, %v; want false, nil", changed, err)
	}

	// Overwriting in place (same inode) with a key of the same size: the
	// modification time tells. File times are kernel-tick coarse, so set
	// one that surely differs.
	_, _, otherKey := selfSigned(t, "localhost")
	keep := mustRead(t, keyFile)
	mustWrite(t, keyFile, mustRead(t, otherKey))
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(keyFile, later, later); err != nil {
		t.Fatal(err)
	}
	changed, err = c.ReloadIfChanged()
	if changed || err == nil || !strings.Contains(err.Error(), keyFile) || !strings.Contains(err.Error(), "still serving") {
		t.Fatalf("ReloadIfChanged with a mismatched key = %v, %v; want an error naming %s", changed, err, keyFile)
	}
	if got := serial(t, c); got != second {
		t.Fatal("a failed reload replaced the certificate")
	}
	// The failure is retried: putting the right key back succeeds.
	mustWrite(t, keyFile, keep)
	if _, err := c.ReloadIfChanged(); err != nil {
		t.Fatalf("ReloadIfChanged after the fix: %v", err)
	}
	if got := serial(t, c); got != second {
		t.Fatal("serial changed though the certificate did not")
	}

	// A removed file: error naming it, old pair kept.
	if err := os.Remove(certFile); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReloadIfChanged(); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("ReloadIfChanged with the certificate removed: %v", err)
	}
	if err := c.Reload(); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Fatalf("Reload with the certificate removed: %v", err)
	}
	if got := serial(t, c); got != second {
		t.Fatal("a failed reload replaced the certificate")
	}
	if cert, _ := c.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"}); cert == nil {
		t.Fatal("GetCertificate returned nil after a failed reload")
	}
}

func TestSelfSignedBadInput(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := SelfSigned(dir, nil, time.Hour); err == nil {
		t.Error("no hosts: no error")
	}
	if _, _, err := SelfSigned(dir, []string{"localhost"}, 0); err == nil {
		t.Error("zero validity: no error")
	}
	if _, _, err := SelfSigned(dir, []string{""}, time.Hour); err == nil {
		t.Error("empty host: no error")
	}
	if _, _, err := SelfSigned(filepath.Join(dir, "nope"), []string{"localhost"}, time.Hour); err == nil {
		t.Error("missing directory: no error")
	}
}
