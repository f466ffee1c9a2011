package tlsconf

import (
	"crypto/tls"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Certs serves one certificate/key pair from files and reloads them when
// they change. All methods are safe for concurrent use; GetCertificate never
// blocks.
type Certs struct {
	certFile, keyFile string

	cur atomic.Pointer[loaded]

	// reloadMu serialises Reload and ReloadIfChanged, so two reloads never
	// interleave their reads and the stamps match the pair in cur.
	reloadMu sync.Mutex
}

// loaded is one pair as read from disk, with the file stamps it was read at.
type loaded struct {
	cert      *tls.Certificate
	certStamp stamp
	keyStamp  stamp
}

// stamp identifies one version of a file: a renewal writes new content
// (mtime, size) or renames a new file into place (another inode).
type stamp struct {
	fi fs.FileInfo
}

func stampOf(fi fs.FileInfo) stamp { return stamp{fi: fi} }

// same reports whether fi is the version recorded in s.
func (s stamp) same(fi fs.FileInfo) bool {
	return s.fi != nil && os.SameFile(s.fi, fi) &&
		s.fi.ModTime().Equal(fi.ModTime()) && s.fi.Size() == fi.Size()
}

// Load reads a PEM certificate chain (leaf first) and its PEM private key
// (PKCS#8, PKCS#1 or SEC 1; unencrypted). Errors name the file: missing,
// unreadable, not PEM, a block of the wrong kind, unparsable, or a key that
// does not match the certificate.
//
// A certificate outside its validity period is not an error, so a gateway
// with an expired certificate still starts; check Warnings after Load.
func Load(certFile, keyFile string) (*Certs, error) {
	l, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c := &Certs{certFile: certFile, keyFile: keyFile}
	c.cur.Store(l)
	return c, nil
}

// CertFile returns the path of the certificate file.
func (c *Certs) CertFile() string { return c.certFile }

// KeyFile returns the path of the key file.
func (c *Certs) KeyFile() string { return c.keyFile }

// Reload re-reads both files now. On error the pair in service is kept
// and the error, naming the file, is returned.
func (c *Certs) Reload() error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	return c.reloadLocked()
}

func (c *Certs) reloadLocked() error {
	l, err := loadPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("%w (still serving %s)", err, describe(c.cur.Load().cert.Leaf))
	}
	c.cur.Store(l)
	return nil
}

// ReloadIfChanged stats both files and reloads only when one of them
// changed (modification time, size, or a different file renamed into
// place) since the pair in service was read. It reports whether a new pair
// is now in service. On error the old pair stays in service; since a
// failed reload does not record the new stamps, the next call tries again
// (a renewal that wrote the certificate but not yet the key succeeds once
// the key is written).
func (c *Certs) ReloadIfChanged() (bool, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	cur := c.cur.Load()
	cfi, err := os.Stat(c.certFile)
	if err != nil {
		return false, fmt.Errorf("%w (still serving %s)", fileError("certificate", c.certFile, err), describe(cur.cert.Leaf))
	}
	kfi, err := os.Stat(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("%w (still serving %s)", fileError("key", c.keyFile, err), describe(cur.cert.Leaf))
	}
	if cur.certStamp.same(cfi) && cur.keyStamp.same(kfi) {
		return false, nil
	}
	if err := c.reloadLocked(); err != nil {
		return false, err
	}
	return true, nil
}

// GetCertificate returns the pair in service; it has the signature of
// tls.Config.GetCertificate and reads lock-free.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load().cert, nil
}

// Certificate returns the pair in service (its Leaf is set). The caller
// must not modify it.
func (c *Certs) Certificate() *tls.Certificate {
	return c.cur.Load().cert
}

// NotAfter returns the end of the validity period of the certificate in
// service.
func (c *Certs) NotAfter() time.Time {
	return c.cur.Load().cert.Leaf.NotAfter
}

// Warnings reports problems with the certificate in service that do not
// stop it from being served: it has expired or is not valid yet. It is
// evaluated at the time of the call.
func (c *Certs) Warnings() []string {
	return warnings(c.cur.Load(), c.certFile, time.Now())
}

func warnings(l *loaded, certFile string, now time.Time) []string {
	leaf := l.cert.Leaf
	var w []string
	if now.After(leaf.NotAfter) {
		w = append(w, fmt.Sprintf("certificate file %s: expired on %s (%s)", certFile, leaf.NotAfter.UTC().Format(time.RFC3339), describe(leaf)))
	}
	if now.Before(leaf.NotBefore) {
		w = append(w, fmt.Sprintf("certificate file %s: not valid before %s (%s)", certFile, leaf.NotBefore.UTC().Format(time.RFC3339), describe(leaf)))
	}
	return w
}

// ServerConfig returns a new server configuration that serves the pair in
// service, reloads included: TLS 1.2 or later, Go's default (secure) cipher
// suites and key exchanges. The caller may adjust the copy it gets (for
// example NextProtos).
func (c *Certs) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.GetCertificate,
	}
}
