package main

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/testenv"
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

// minRelay is the calibration floor: the least a proxy on this machine can
// do — accept, dial the backend, send the PROXY v2 header, then copy bytes
// both ways (io.Copy between TCP sockets: splice(2) on Linux). It runs in
// this process, so its CPU counts as the generator's. The gap between
// direct and minRelay is what any same-host proxy costs here (a second
// loopback connection per session and a second copy of every byte); the
// gap between minRelay and postern is postern's own work.
type minRelay struct {
	ln      net.Listener
	backend string
	wg      sync.WaitGroup
}

func startMinRelay(backend string) (*minRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mr := &minRelay{ln: ln, backend: backend}
	mr.wg.Add(1)
	go func() {
		defer mr.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mr.wg.Add(1)
			go func() {
				defer mr.wg.Done()
				mr.serve(c)
			}()
		}
	}()
	return mr, nil
}

func (mr *minRelay) addr() string { return mr.ln.Addr().String() }

func (mr *minRelay) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	b, err := net.DialTimeout("tcp", mr.backend, 5*time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	b.SetDeadline(time.Now().Add(10 * time.Minute))
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	dst := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := b.Write(testenv.ProxyV2Header(src, dst)); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(b, c); done <- struct{}{} }()
	go func() { io.Copy(c, b); done <- struct{}{} }()
	<-done // either side finished: the session is over
	c.Close()
	b.Close()
	<-done
}

func (mr *minRelay) close() {
	mr.ln.Close()
	mr.wg.Wait()
}

// sourceAddr returns the loopback source address of client i of a group:
// 127.<group>.<i/250>.<i%250+1>. Each load client gets its own address so
// that Dovecot's per-user-and-address limit (mail_max_userip_connections,
// 10) and postern's per-address limits never refuse the load, and both
// sides see the same client addresses.
func sourceAddr(group byte, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, group, byte(i / 250), byte(i%250 + 1)})
}
