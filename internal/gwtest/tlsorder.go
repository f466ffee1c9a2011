// Package gwtest holds checks that every mail gateway's tests run alike.
// Only tests import it.
package gwtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/tlsconf"
)

// Server is what a gateway offers to serve connections.
type Server interface {
	Serve(ctx context.Context, ln relay.Acceptor, drain time.Duration) error
}

// acceptor adapts a netlisten.Listener to the gateways.
type acceptor struct{ *netlisten.Listener }

func (a acceptor) Accept() (relay.Conn, error) {
	c, err := a.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ImplicitTLSRefusesBeforeHandshake checks that on an implicit-TLS port
// the grant and block check comes before the TLS handshake: a client
// refused again and again gets no handshake after its first few answered
// refusals, and its refused connections count toward connections per
// minute until it is blocked; a granted client whose handshakes fail is
// counted too. service is the gateway's service ("smtp", "imap", "pop3")
// and group its intrusion-prevention group; newServer builds the gateway
// for the snapshot's policy and the engine.
func ImplicitTLSRefusesBeforeHandshake(t *testing.T, service, group string, newServer func(snap *snapshot.Snapshot, eng *guard.Engine) Server) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	cfg := "services:\n  " + service + `: { listen: ":1", backend: "127.0.0.1:1", grant: "127.0.0.72; 127.0.0.73" }
intrusion_prevention:
  ` + group + ": { connections_per_minute: 3 }\n"
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := guard.New(context.Background(), snap.Guard, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	certFile, keyFile, err := tlsconf.SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var handshakes atomic.Int32
	sc := certs.ServerConfig()
	sc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { handshakes.Add(1); return nil, nil }
	ln, err := netlisten.Listen(context.Background(), netlisten.Config{Listen: "127.0.0.1:0", TLS: sc})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(snap, eng)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, acceptor{ln}, time.Second) }()
	t.Cleanup(func() { cancel(); <-done; ln.Shutdown(context.Background()) })

	tlsDial := func(src string) (string, error) {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line, nil
	}
	// The first refusals of a minute are answered over TLS; later ones are
	// closed without a handshake.
	for i := range guard.AnsweredRefusals + 3 {
		line, err := tlsDial("127.0.0.71")
		if i < guard.AnsweredRefusals {
			if err != nil || !strings.Contains(line, "Access denied") && !strings.Contains(line, "Blocked (") {
				t.Fatalf("refusal %d: %q, %v; want the protocol's refusal over TLS", i+1, line, err)
			}
		} else if err == nil {
			t.Fatalf("refusal %d completed a TLS handshake (answered %q)", i+1, line)
		}
	}
	if n := handshakes.Load(); n != guard.AnsweredRefusals {
		t.Fatalf("%d TLS handshakes for a refused client, want %d", n, guard.AnsweredRefusals)
	}
	if b, ok := eng.BlockOf(netip.MustParseAddr("127.0.0.71")); !ok || b.Reason != reason.Connections {
		t.Fatalf("refused connections must count toward connections per minute: %+v", b)
	}
	if _, err := tlsDial("127.0.0.72"); err != nil {
		t.Fatalf("granted client: %v", err)
	}
	if n := handshakes.Load(); n != guard.AnsweredRefusals+1 {
		t.Fatalf("%d handshakes after a granted client, want %d", n, guard.AnsweredRefusals+1)
	}
	// A granted client whose handshakes fail is counted too: the
	// connection is counted before the handshake.
	for range 3 {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.73")}}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("not a TLS client hello\r\n"))
		io.ReadAll(c)
		c.Close()
	}
	if b, ok := eng.BlockOf(netip.MustParseAddr("127.0.0.73")); !ok || b.Reason != reason.Connections {
		t.Fatalf("connections with failed handshakes must count toward connections per minute: %+v", b)
	}
}
