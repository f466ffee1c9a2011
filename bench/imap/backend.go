package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/bench/internal/benchkit"
)

// memBackend is the in-process IMAP server of the idle test: go-imap v2's
// imapserver with its in-memory backend (one user, alice, with one small
// message) behind a listener that requires a PROXY header, as Dovecot's
// PROXY port does. It exists because the harness's Dovecot runs one imap
// process per logged-in connection and cannot hold 10,000 of them.
type memBackend struct {
	ln   net.Listener
	srv  *imapserver.Server
	done chan struct{}
	live atomic.Int64 // sessions open (logged in or not)
}

func startMemBackend(user, pass string) (*memBackend, error) {
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(user, pass)
	if err := u.Create("INBOX", nil); err != nil {
		return nil, err
	}
	msg := "From: bench@bench.invalid\r\nTo: " + user + "\r\nSubject: idle\r\n\r\nidle test\r\n"
	if _, err := u.Append("INBOX", memLiteral{strings.NewReader(msg)}, &imap.AppendOptions{}); err != nil {
		return nil, err
	}
	mem.AddUser(u)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &memBackend{ln: ln, done: make(chan struct{})}
	b.srv = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			b.live.Add(1)
			return &countedSession{Session: mem.NewSession(), live: &b.live}, nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapSASLIR: {}, imap.CapLiteralPlus: {}, imap.CapIdle: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	pl := &proxyproto.Listener{
		Listener:          ln,
		ConnPolicy:        func(proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) { return proxyproto.REQUIRE, nil },
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { defer close(b.done); b.srv.Serve(pl) }()
	return b, nil
}

func (b *memBackend) addr() string { return b.ln.Addr().String() }

func (b *memBackend) close() {
	b.srv.Close()
	<-b.done
}

// countedSession counts live sessions (Close is called when one ends). It
// hides the optional interfaces of the memory session, which the idle test
// (LOGIN, then nothing) does not use.
type countedSession struct {
	imapserver.Session
	live *atomic.Int64
	once sync.Once
}

func (s *countedSession) Close() error {
	s.once.Do(func() { s.live.Add(-1) })
	return s.Session.Close()
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

type memLiteral struct{ *strings.Reader }

func (l memLiteral) Size() int64 { return int64(l.Len()) }

// runChildRelay is this program re-run as the relay floor ("-child-relay
// BACKEND"): it prints "LISTEN addr" and relays until SIGTERM or SIGINT. The
// relay runs in a child process of its own so that it is scheduled and
// accounted like postern serve.
func runChildRelay(backend string) int {
	mr, err := benchkit.StartRelay(backend)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child relay:", err)
		return 1
	}
	fmt.Printf("LISTEN %s\n", mr.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	mr.Close()
	return 0
}

// childRelay is a running relay child process.
type childRelay struct {
	cmd  *exec.Cmd
	addr string
	done chan error
}

// startChildRelay re-runs this program as the relay floor in front of
// backend and waits for its listen address.
func (b *bench) startChildRelay(backend string) (*childRelay, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cr := &childRelay{cmd: exec.Command(exe, "-child-relay", backend), done: make(chan error, 1)}
	cr.cmd.Stderr = os.Stderr
	cr.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cr.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cr.cmd.Start(); err != nil {
		return nil, err
	}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
		io.Copy(io.Discard, out)
		cr.done <- cr.cmd.Wait()
	}()
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case l := <-line:
		if a, ok := strings.CutPrefix(strings.TrimSpace(l), "LISTEN "); ok {
			cr.addr = a
			return cr, nil
		}
		cr.stop()
		return nil, fmt.Errorf("relay child said %q", l)
	case <-t.C:
		cr.stop()
		return nil, errors.New("relay child did not start within 20 s")
	}
}

// stop ends the relay child by its PID and waits for it.
func (cr *childRelay) stop() {
	cr.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-cr.done:
	case <-t.C:
		cr.cmd.Process.Kill()
		<-cr.done
	}
}

// sourceAddr returns the loopback source address of client i of a group:
// 127.<group>.<i/250>.<i%250+1>. Each load client gets its own address so
// that Dovecot's per-user-and-address limit (mail_max_userip_connections,
// 10) and postern's per-address limits never refuse the load, and both
// sides see the same client addresses.
func sourceAddr(group byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, group, byte(i / 250), byte(i%250 + 1)})
}
