package netlisten

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// testCerts returns a server configuration with a self-signed certificate
// for localhost and a client configuration trusting it.
func testCerts(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	certFile, keyFile, err := tlsconf.SelfSigned(t.TempDir(), []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return certs.ServerConfig(), &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// greetOverTLS checks a server-speaks-first exchange over TLS.
func greetOverTLS(t *testing.T, sc *Conn, client *tls.Conn) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		client.SetDeadline(time.Now().Add(testTimeout))
		errc <- client.Handshake()
	}()
	if err := sc.Handshake(testTimeout); err != nil {
		t.Fatalf("server Handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	st := sc.TLS()
	if st == nil || !st.HandshakeComplete || st.Version < tls.VersionTLS12 {
		t.Fatalf("TLS() = %+v after the handshake", st)
	}
	if err := sc.Handshake(time.Second); err != nil {
		t.Errorf("second Handshake: %v", err)
	}
	writeAll(t, sc, []byte("* OK postern IMAP4rev1\r\n"))
	if got := readLine(t, client); got != "* OK postern IMAP4rev1\r\n" {
		t.Errorf("client read %q", got)
	}
	writeAll(t, client, []byte("a LOGOUT\r\n"))
	if got := readLine(t, sc); got != "a LOGOUT\r\n" {
		t.Errorf("server read %q", got)
	}
}

func TestImplicitTLS(t *testing.T) {
	srvCfg, cliCfg := testCerts(t)
	s := start(t, Config{TLS: srvCfg})
	raw := dial(t, s, "127.0.0.3")
	sc := s.accept(t)
	if sc.TLS() != nil {
		t.Error("TLS() is not nil before the handshake")
	}
	if got := sc.ClientAddr().Addr().String(); got != "127.0.0.3" {
		t.Errorf("ClientAddr = %s", got)
	}
	greetOverTLS(t, sc, tls.Client(raw, cliCfg))
	if err := sc.StartTLS(srvCfg, time.Second); err == nil {
		t.Error("StartTLS on a TLS connection succeeded")
	}
}

func TestImplicitTLSBehindProxy(t *testing.T) {
	srvCfg, cliCfg := testCerts(t)
	s := start(t, Config{TLS: srvCfg, Trusted: trust("127.0.0.1")})
	raw := dial(t, s, "127.0.0.1")
	writeAll(t, raw, proxyHeader(t, 2, "[2001:db8::7]:40000", "[2001:db8::1]:993"))
	sc := s.accept(t)
	if got := sc.ClientAddr().String(); got != "[2001:db8::7]:40000" {
		t.Errorf("ClientAddr = %s", got)
	}
	greetOverTLS(t, sc, tls.Client(raw, cliCfg))
}

// A client that never starts its handshake does not hold Handshake
// beyond its timeout.
func TestHandshakeTimeout(t *testing.T) {
	srvCfg, _ := testCerts(t)
	s := start(t, Config{TLS: srvCfg})
	dial(t, s, "127.0.0.3")
	sc := s.accept(t)
	begin := time.Now()
	err := sc.Handshake(200 * time.Millisecond)
	if err == nil {
		t.Fatal("Handshake with a silent client succeeded")
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Handshake returned after %v", d)
	}
	if sc.TLS() != nil {
		t.Error("TLS() is not nil after a failed handshake")
	}
}

// A client that sends its ClientHello a byte at a time does not hold
// Handshake beyond its timeout either: the timeout bounds the whole
// handshake, not each read.
func TestHandshakeTimeoutTrickle(t *testing.T) {
	srvCfg, _ := testCerts(t)
	s := start(t, Config{TLS: srvCfg})
	raw := dial(t, s, "127.0.0.3")
	sc := s.accept(t)
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		// A handshake record header announcing a long ClientHello, then
		// its body a byte every 20 ms: at most 200 bytes (4 s).
		hdr := []byte{0x16, 0x03, 0x01, 0x02, 0x00}
		for i := 0; i < 200; i++ {
			b := []byte{0x01}
			if i < len(hdr) {
				b = hdr[i : i+1]
			}
			if _, err := raw.Write(b); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); raw.Close(); <-trickled }()
	begin := time.Now()
	err := sc.Handshake(300 * time.Millisecond)
	if err == nil {
		t.Fatal("Handshake with a trickling client succeeded")
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Handshake returned after %v with a 300ms timeout", d)
	}
}

// After a handshake that succeeded, the connection has no deadline: a
// read that waits longer than the handshake's timeout still succeeds.
func TestHandshakeLeavesNoDeadline(t *testing.T) {
	srvCfg, cliCfg := testCerts(t)
	s := start(t, Config{TLS: srvCfg})
	client := tls.Client(dial(t, s, "127.0.0.3"), cliCfg)
	sc := s.accept(t)
	errc := make(chan error, 1)
	go func() {
		client.SetDeadline(time.Now().Add(testTimeout))
		if err := client.Handshake(); err != nil {
			errc <- err
			return
		}
		// Well after the server's handshake timeout below.
		time.Sleep(400 * time.Millisecond)
		_, err := client.Write([]byte("a NOOP\r\n"))
		errc <- err
	}()
	if err := sc.Handshake(100 * time.Millisecond); err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	line, err := bufio.NewReader(sc).ReadString('\n')
	if err != nil {
		t.Fatalf("read after the handshake's timeout had passed: %v", err)
	}
	if line != "a NOOP\r\n" {
		t.Errorf("read %q", line)
	}
	if err := <-errc; err != nil {
		t.Fatalf("client: %v", err)
	}
}

func TestStartTLS(t *testing.T) {
	srvCfg, cliCfg := testCerts(t)
	s := start(t, Config{})
	c := dial(t, s, "127.0.0.3")
	sc := s.accept(t)
	if err := sc.Handshake(time.Second); err == nil {
		t.Error("Handshake on a plaintext connection succeeded")
	}

	// Plaintext: greeting, STARTTLS.
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			sc.SetDeadline(time.Now().Add(testTimeout))
			if _, err := sc.Write([]byte("220 postern ESMTP\r\n")); err != nil {
				return err
			}
			r := bufio.NewReader(sc)
			line, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if line != "STARTTLS\r\n" {
				return errors.New("server read " + line)
			}
			if r.Buffered() != 0 { // the buffering contract
				return errors.New("plaintext pipelined after STARTTLS")
			}
			if _, err := sc.Write([]byte("220 2.0.0 Ready to start TLS\r\n")); err != nil {
				return err
			}
			if sc.TLS() != nil {
				return errors.New("TLS() is not nil before StartTLS")
			}
			if err := sc.StartTLS(srvCfg, testTimeout); err != nil {
				return err
			}
			// After the upgrade: a fresh reader on the Conn.
			r = bufio.NewReader(sc)
			line, err = r.ReadString('\n')
			if err != nil {
				return err
			}
			if line != "EHLO client\r\n" {
				return errors.New("server read over TLS " + line)
			}
			_, err = sc.Write([]byte("250 postern\r\n"))
			return err
		}()
	}()

	cr := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(testTimeout))
	if line, _ := cr.ReadString('\n'); line != "220 postern ESMTP\r\n" {
		t.Fatalf("greeting %q", line)
	}
	writeAll(t, c, []byte("STARTTLS\r\n"))
	if line, _ := cr.ReadString('\n'); line != "220 2.0.0 Ready to start TLS\r\n" {
		t.Fatalf("STARTTLS reply %q", line)
	}
	tc := tls.Client(c, cliCfg)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	writeAll(t, tc, []byte("EHLO client\r\n"))
	if got := readLine(t, tc); got != "250 postern\r\n" {
		t.Errorf("client read over TLS %q", got)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
	if st := sc.TLS(); st == nil || st.ServerName != "localhost" {
		t.Errorf("TLS() = %+v after StartTLS", st)
	}
	if err := sc.StartTLS(srvCfg, time.Second); err == nil {
		t.Error("second StartTLS succeeded")
	}
	if err := sc.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := sc.StartTLS(srvCfg, time.Second); !errors.Is(err, net.ErrClosed) {
		t.Errorf("StartTLS after Close = %v, want net.ErrClosed", err)
	}
}

// An over-limit refusal on an implicit-TLS port is written over TLS.
func TestOverLimitRefusalOverTLS(t *testing.T) {
	srvCfg, cliCfg := testCerts(t)
	s := start(t, Config{TLS: srvCfg, MaxPerAddr: 1})
	refused := refuser(s)
	dial(t, s, "127.0.0.11")
	s.accept(t)
	tc := tls.Client(dial(t, s, "127.0.0.11"), cliCfg)
	tc.SetDeadline(time.Now().Add(testTimeout))
	// Reading runs the client handshake the refusal's write is waiting for.
	if got := readLine(t, tc); got != "421 4.7.0 Too many connections from your address\r\n" {
		t.Errorf("client read %q over TLS", got)
	}
	if r := nextRefusal(t, refused); r.reason != ReasonMaxPerAddr {
		t.Errorf("reason %q", r.reason)
	}
}
