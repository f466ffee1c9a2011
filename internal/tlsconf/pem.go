package tlsconf

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// maxPEMFile bounds how much of a certificate or key file is read: a real
// chain is a few KiB, so anything larger is the wrong file.
const maxPEMFile = 1 << 20

// readPEMFile reads a PEM file, naming it (as what) in every error.
func readPEMFile(what, path string) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0) // a FIFO must not hang the open; refused below
	if err != nil {
		return nil, nil, fileError(what, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fileError(what, path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s file %s: not a regular file", what, path)
	}
	if fi.Size() > maxPEMFile {
		return nil, nil, fmt.Errorf("%s file %s: %d bytes is too large for a PEM file (limit %d)", what, path, fi.Size(), maxPEMFile)
	}
	data := make([]byte, 0, fi.Size())
	buf := bytes.NewBuffer(data)
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, nil, fileError(what, path, err)
	}
	return buf.Bytes(), fi, nil
}

// fileError names the file and keeps the underlying error (fs.ErrNotExist,
// fs.ErrPermission, …) reachable with errors.Is.
func fileError(what, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s file %s: not found: %w", what, path, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s file %s: not readable: %w", what, path, err)
	}
	return fmt.Errorf("%s file %s: %w", what, path, err)
}

// parseChain decodes every CERTIFICATE block of a certificate file, leaf
// first.
func parseChain(path string, data []byte) ([][]byte, *x509.Certificate, error) {
	var ders [][]byte
	var other []string
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			ders = append(ders, b.Bytes)
		} else {
			other = append(other, b.Type)
		}
	}
	if len(ders) == 0 {
		if len(other) > 0 {
			return nil, nil, fmt.Errorf("certificate file %s: no CERTIFICATE block (found %q: is this the key file?)", path, other[0])
		}
		return nil, nil, fmt.Errorf("certificate file %s: not PEM: no CERTIFICATE block found", path)
	}
	for i, der := range ders {
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, nil, fmt.Errorf("certificate file %s: certificate %d of %d: %w", path, i+1, len(ders), err)
		}
	}
	leaf, _ := x509.ParseCertificate(ders[0]) // parsed above
	return ders, leaf, nil
}

// parseKey decodes the first private-key block of a key file.
func parseKey(path string, data []byte) (crypto.Signer, error) {
	rest := data
	var types []string
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			if _, ok := b.Headers["DEK-Info"]; ok {
				return nil, fmt.Errorf("key file %s: the private key is encrypted; store it unencrypted (mode 0600)", path)
			}
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			if _, ok := b.Headers["DEK-Info"]; ok {
				return nil, fmt.Errorf("key file %s: the private key is encrypted; store it unencrypted (mode 0600)", path)
			}
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("key file %s: the private key is encrypted; store it unencrypted (mode 0600)", path)
		default:
			types = append(types, b.Type)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key file %s: %s block: %w", path, b.Type, err)
		}
		switch k := key.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("key file %s: unsupported private key type %T", path, key)
		}
	}
	if len(types) > 0 {
		return nil, fmt.Errorf("key file %s: no private key block (found %q: is this the certificate file?)", path, types[0])
	}
	return nil, fmt.Errorf("key file %s: not PEM: no private key block found", path)
}

// loadPair reads and checks a certificate file and its key file.
func loadPair(certFile, keyFile string) (*loaded, error) {
	// Stat before reading (readPEMFile stats the open file): if a file is
	// replaced after the read, the next ReloadIfChanged sees a newer stamp
	// and reloads again, which is harmless.
	certPEM, certFI, err := readPEMFile("certificate", certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, keyFI, err := readPEMFile("key", keyFile)
	if err != nil {
		return nil, err
	}
	ders, leaf, err := parseChain(certFile, certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyFile, keyPEM)
	if err != nil {
		return nil, err
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("key file %s does not match certificate file %s (%s)", keyFile, certFile, describe(leaf))
	}
	return &loaded{
		cert: &tls.Certificate{
			Certificate: ders,
			PrivateKey:  key,
			Leaf:        leaf,
		},
		certStamp: stampOf(certFI),
		keyStamp:  stampOf(keyFI),
	}, nil
}

// describe names a certificate for logs: its subject and validity end.
func describe(c *x509.Certificate) string {
	name := c.Subject.CommonName
	if name == "" && len(c.DNSNames) > 0 {
		name = c.DNSNames[0]
	}
	if name == "" {
		name = c.Subject.String()
	}
	return fmt.Sprintf("subject %q, valid until %s", name, c.NotAfter.UTC().Format("2006-01-02 15:04:05Z"))
}
