package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
)

// freeAddrs returns n distinct loopback addresses whose ports are free
// now: all are held open together, so that no two are the same.
func freeAddrs(n int) ([]string, error) {
	out := make([]string, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// ---- the certificate ----------------------------------------------------------

// certFiles is the benchmark's ECDSA P-256 certificate for 127.0.0.1 and
// localhost, as production uses ECDSA: PEM files for nginx and postern, a
// combined one for haproxy, and the client's trust pool.
type certFiles struct {
	cert, key, combined string
	pool                *x509.CertPool
	// postQuantum lets the load clients offer X25519MLKEM768 as Go does by
	// default. Off, they offer X25519, the key exchange Debian's nginx and
	// haproxy (OpenSSL 3.0) negotiate, so every side does the same work per
	// handshake; P-256 is listed too (no key share), as OpenSSL refuses an
	// ECDSA P-256 certificate to a client that does not list its curve.
	postQuantum bool
}

func makeCert(dir string) (*certFiles, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "bench.postern.invalid"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &certFiles{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem"), combined: filepath.Join(dir, "combined.pem")}
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kp := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	for f, b := range map[string][]byte{c.cert: cp, c.key: kp, c.combined: append(append([]byte{}, cp...), kp...)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return nil, err
		}
	}
	parsed, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c.pool = x509.NewCertPool()
	c.pool.AddCert(parsed)
	return c, nil
}

// clientTLS returns the load generator's TLS configuration: the bench's
// certificate trusted, and a session cache when resume is set (each load
// client then takes a cache of its own: no side or client resumes
// another's session).
func (c *certFiles) clientTLS(resume bool) *tls.Config {
	t := &tls.Config{RootCAs: c.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if !c.postQuantum {
		t.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	if resume {
		t.ClientSessionCache = tls.NewLRUClientSessionCache(256)
	}
	return t
}

// ---- children: the nginx auth server and the dynamic web backend -------------

// The child modes: this program re-run with one of these flags as its
// first argument.
const (
	childAuth    = "-child-auth"    // ADDR IMAPPORT SMTPPORT: nginx's auth_http server
	childDynamic = "-child-dynamic" // ADDR WORK: the dynamic web page backend
	childIMAPD   = "-child-imapd"   // ADDR: the idle test's IMAP backend
)

// runChild runs a child mode and returns the exit status; ok is false
// when args name none.
func runChild(args []string) (status int, ok bool) {
	if len(args) < 2 {
		return 0, false
	}
	var err error
	switch args[0] {
	case childAuth:
		if len(args) != 4 {
			err = errors.New("usage: -child-auth ADDR IMAPPORT SMTPPORT")
			break
		}
		err = serveChild(args[1], authHandler(args[2], args[3]))
	case childDynamic:
		work, perr := time.ParseDuration(args[2])
		if perr != nil {
			err = perr
			break
		}
		err = serveChild(args[1], dynamicHandler(work))
	case childIMAPD:
		err = serveIMAPD(args[1])
	default:
		return 0, false
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", args[0], err)
		return 1, true
	}
	return 0, true
}

// serveChild serves h on addr until SIGTERM.
func serveChild(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-sig:
		srv.Close()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

// authHandler is nginx's auth_http server: every login is accepted (the
// password is checked by Dovecot, as behind any proxy) and sent to the
// backend of its protocol. nginx opens one HTTP/1.0 connection per login.
func authHandler(imapPort, smtpPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := imapPort
		if r.Header.Get("Auth-Protocol") == "smtp" {
			p = smtpPort
		}
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", "127.0.0.1")
		w.Header().Set("Auth-Port", p)
		w.WriteHeader(http.StatusOK)
	})
}

// dynamicHandler is a page that costs the backend CPU, as a webmail page
// does (bench/web's dynamic scenario).
func dynamicHandler(work time.Duration) http.Handler {
	page := []byte("<html><body>" + strings.Repeat("webmail ", 2000) + "</body></html>\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		burn(work)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
}

// burn spends about d of CPU time hashing.
func burn(d time.Duration) {
	var buf [64]byte
	for end := time.Now().Add(d); time.Now().Before(end); {
		for range 8 {
			s := sha256.Sum256(buf[:])
			copy(buf[:], s[:])
		}
	}
}

// startChild re-runs this program in a child mode and waits for addr.
func startChild(dir, mode, addr string, args ...string) (*benchkit.Proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p, err := benchkit.Start(mode[len("-child-"):], filepath.Join(dir, mode[1:]+".log"), nil, exe, append([]string{mode, addr}, args...)...)
	if err != nil {
		return nil, err
	}
	if err := p.WaitPorts(addr); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// loadAverage returns /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
