package pop3mem

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// Test messages. msgDots has lines that need dot-stuffing, including a
// line that is a single "."; msgLF has bare LF line ends.
const (
	msg1    = "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\n\r\nHello.\r\nSecond line.\r\n"
	msgDots = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"
	msgLF   = "Subject: lf\n\nline one\nline two"
	msgLFN  = "Subject: lf\r\n\r\nline one\r\nline two\r\n" // msgLF as stored
)

// testServer is a Server listening on 127.0.0.1 and closed at the end of
// the test, checking that Serve then returns nil.
type testServer struct {
	*Server
	addr string
}

func startServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	srv := New(opts)
	srv.AddUser("alice", "pw")
	for _, m := range []string{msg1, msgDots, msgLF} {
		if err := srv.AddMessage("alice", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve returned %v after Close, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return &testServer{Server: srv, addr: ln.Addr().String()}
}

// selfSigned returns a server TLS config with a fresh self-signed
// certificate for 127.0.0.1, a client config trusting it, and the
// certificate file.
func selfSigned(t *testing.T) (server, client *tls.Config, certFile string) {
	t.Helper()
	certFile, keyFile, err := tlsconf.SelfSigned(t.TempDir(), []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatal("no certificate in " + certFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}},
		&tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, certFile
}

// client is a raw POP3 client for tests. In background goroutines (bg)
// failures are reported with Errorf, else with Fatalf.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	bg   bool
}

func dialRaw(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// dial connects and reads the greeting.
func dial(t *testing.T, addr string) *client {
	t.Helper()
	c := dialRaw(t, addr)
	if g := c.line(); g != "+OK pop3mem POP3 ready." {
		t.Fatalf("greeting %q", g)
	}
	return c
}

func (c *client) fail(format string, args ...any) {
	c.t.Helper()
	if c.bg {
		c.t.Errorf(format, args...)
		return
	}
	c.t.Fatalf(format, args...)
}

func (c *client) write(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.fail("write: %v", err)
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	c.write(s + "\r\n")
}

// line reads one reply line without its CRLF.
func (c *client) line() string {
	c.t.Helper()
	l, err := c.r.ReadString('\n')
	if err != nil {
		c.fail("read: %v (got %q)", err, l)
		return ""
	}
	if !strings.HasSuffix(l, "\r\n") {
		c.fail("reply line %q not ended by CRLF", l)
	}
	return strings.TrimSuffix(l, "\r\n")
}

// cmd sends a command and returns the first reply line.
func (c *client) cmd(s string) string {
	c.t.Helper()
	c.send(s)
	return c.line()
}

// expect sends a command and checks the reply line exactly.
func (c *client) expect(cmd, want string) {
	c.t.Helper()
	if got := c.cmd(cmd); got != want {
		c.fail("%s: got %q, want %q", cmd, got, want)
	}
}

// multiRaw reads the body of a multi-line reply as it is on the wire
// (still dot-stuffed), without the terminating ".\r\n".
func (c *client) multiRaw() []byte {
	c.t.Helper()
	var buf bytes.Buffer
	for {
		l, err := c.r.ReadBytes('\n')
		if err != nil {
			c.fail("read multi-line: %v", err)
			return nil
		}
		if !bytes.HasSuffix(l, []byte("\r\n")) {
			c.fail("line %q not ended by CRLF", l)
		}
		if string(l) == ".\r\n" {
			return buf.Bytes()
		}
		buf.Write(l)
	}
}

// multiLines reads a multi-line body as unstuffed lines.
func (c *client) multiLines() []string {
	c.t.Helper()
	body := string(unstuff(c.multiRaw()))
	if body == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(body, "\r\n"), "\r\n")
}

// eof checks that the server closed the connection with nothing more.
func (c *client) eof() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.Peek(c.r.Buffered())
		c.fail("read %q, want the connection closed", append([]byte{b}, rest...))
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.fail("connection still open: %v", err)
	}
}

// login logs in with USER/PASS.
func (c *client) login(user, pass string) {
	c.t.Helper()
	c.expect("USER "+user, "+OK")
	c.expect("PASS "+pass, "+OK Logged in.")
}

// startTLS sends STLS and runs the client handshake.
func (c *client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.expect("STLS", "+OK Begin TLS negotiation now.")
	c.handshake(cfg)
}

// handshake runs the client side of the TLS handshake.
func (c *client) handshake(cfg *tls.Config) {
	c.t.Helper()
	if c.r.Buffered() != 0 {
		c.fail("data after the STLS reply")
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.fail("TLS handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

// stuff dot-stuffs a CRLF message as it must appear on the wire.
func stuff(msg string) string {
	return strings.ReplaceAll("\r\n"+msg, "\r\n.", "\r\n..")[2:]
}

// unstuff removes dot-stuffing from a multi-line body.
func unstuff(raw []byte) []byte {
	var out []byte
	for len(raw) > 0 {
		line := raw
		if i := bytes.Index(raw, []byte("\r\n")); i >= 0 {
			line = raw[:i+2]
		}
		raw = raw[len(line):]
		out = append(out, bytes.TrimPrefix(line, []byte("."))...)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
