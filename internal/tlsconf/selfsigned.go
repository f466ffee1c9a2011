package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names of the files SelfSigned writes.
const (
	SelfSignedCertName = "cert.pem"
	SelfSignedKeyName  = "key.pem"
)

// SelfSigned writes a self-signed certificate (ECDSA P-256) and its key
// into dir as cert.pem (mode 0644) and key.pem (mode 0600), returning their
// paths. hosts are the names it is valid for: IP addresses become IP
// subject alternative names, anything else a DNS name; the first is also
// the subject's common name. The certificate is valid from one minute ago
// for validFor. Each file is written to a temporary file and renamed into
// place, so a concurrent reader (Watch) sees either the old or the new file.
//
// It is meant for tests and demonstrations: clients trust it only when
// told to (for example with an x509.CertPool holding it).
func SelfSigned(dir string, hosts []string, validFor time.Duration) (certFile, keyFile string, err error) {
	if len(hosts) == 0 {
		return "", "", errors.New("self-signed certificate: no host names or addresses given")
	}
	if validFor <= 0 {
		return "", "", fmt.Errorf("self-signed certificate: validity %v is not positive", validFor)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: generating key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: serial number: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"postern self-signed"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			return "", "", errors.New("self-signed certificate: empty host name")
		}
		if a, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.Unmap().WithZone("").AsSlice()))
			continue
		}
		tmpl.DNSNames = append(tmpl.DNSNames, h)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("self-signed certificate: encoding key: %w", err)
	}
	certFile = filepath.Join(dir, SelfSignedCertName)
	keyFile = filepath.Join(dir, SelfSignedKeyName)
	// A watcher reading between the two renames sees a mismatched pair: its
	// reload fails, the old pair stays in service, and the next tick retries.
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	if err := writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// writeAtomic writes data to a temporary file in path's directory and
// renames it to path.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
