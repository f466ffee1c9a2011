package sockmap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Kernel is the loaded BPF state shared by every relayed session: a
// SOCKHASH holding both sockets of each pair (key: socket cookie), a hash
// map from a socket's cookie to its peer's cookie and the bytes moved, and
// a stream verdict program attached to the SOCKHASH that sends what
// arrives on a socket out of its peer.
type Kernel struct {
	socks *ebpf.Map // SOCKHASH: cookie → socket
	peers *ebpf.Map // HASH: cookie → {bytes moved, peer cookie}
	prog  *ebpf.Program
	mu    sync.Mutex
	done  bool
}

// Options size a Kernel.
type Options struct {
	// MaxSessions bounds the sessions relayed in the kernel at once; a
	// session beyond it is refused with ErrFull (the caller relays it in
	// user space). Default 16384.
	MaxSessions int
}

// value layout of the peers map: bytes moved first (the program adds to
// it atomically at offset 0), then the peer's cookie.
const (
	valueBytes = 0
	valuePeer  = 8
	valueSize  = 16
)

// Load creates the maps and loads and attaches the program. It needs
// CAP_BPF and CAP_NET_ADMIN (or root); once loaded, relaying sessions
// needs no capability (map updates go through the descriptors held here).
func Load(o Options) (*Kernel, error) {
	max := o.MaxSessions
	if max <= 0 {
		max = 16384
	}
	socks, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "postern_socks",
		Type:       ebpf.SockHash,
		KeySize:    8,
		ValueSize:  8,
		MaxEntries: uint32(2 * max),
	})
	if err != nil {
		return nil, fmt.Errorf("creating SOCKHASH: %w", err)
	}
	peers, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "postern_peers",
		Type:       ebpf.Hash,
		KeySize:    8,
		ValueSize:  valueSize,
		MaxEntries: uint32(2 * max),
		Flags:      unix.BPF_F_NO_PREALLOC, // memory only for live sessions
	})
	if err != nil {
		socks.Close()
		return nil, fmt.Errorf("creating peer map: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "postern_relay",
		Type:         ebpf.SkSKB,
		AttachType:   ebpf.AttachSkSKBStreamVerdict,
		License:      "GPL",
		Instructions: verdict(socks.FD(), peers.FD()),
	})
	if err != nil {
		socks.Close()
		peers.Close()
		return nil, fmt.Errorf("loading stream verdict program: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: socks.FD(), Program: prog, Attach: ebpf.AttachSkSKBStreamVerdict,
	}); err != nil {
		socks.Close()
		peers.Close()
		prog.Close()
		return nil, fmt.Errorf("attaching stream verdict program: %w", err)
	}
	return &Kernel{socks: socks, peers: peers, prog: prog}, nil
}

// verdict is the stream verdict program:
//
//	v = peers[cookie(skb)]; if v == NULL return SK_PASS
//	if skb.len == 0 return SK_DROP   // a bare FIN: the waiter passes it on
//	v.bytes += skb.len (atomic)
//	r = sk_redirect_hash(skb, socks, &v.peer, 0)   // to the peer's egress
//	return r == SK_DROP ? SK_PASS : r
//
// A socket without a peer entry, or whose peer has left the SOCKHASH,
// keeps its bytes (SK_PASS queues them for its own reader) instead of
// dropping them.
func verdict(socks, peers int) asm.Instructions {
	const skPass, skDrop = 1, 0
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, peers),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word), // __sk_buff.len
		asm.JEq.Imm(asm.R1, 0, "drop"),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R0, valuePeer, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.JEq.Imm(asm.R0, skDrop, "pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
		asm.Mov.Imm(asm.R0, skDrop).WithSymbol("drop"),
		asm.Return(),
	}
}

// Close detaches the program and frees the maps. Sessions still running
// lose their kernel path: call it after they ended.
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.done {
		return nil
	}
	k.done = true
	err := link.RawDetachProgram(link.RawDetachProgramOptions{
		Target: k.socks.FD(), Program: k.prog, Attach: ebpf.AttachSkSKBStreamVerdict,
	})
	return errors.Join(err, k.prog.Close(), k.socks.Close(), k.peers.Close())
}

// cookie returns the kernel's socket cookie of fd.
func cookie(fd int) (uint64, error) {
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("reading socket cookie: %w", err)
	}
	return c, nil
}

// written returns how many bytes were handed to fd's TCP send side so
// far: acknowledged plus still queued.
func written(fd int) (uint64, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("reading TCP_INFO: %w", err)
	}
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return 0, fmt.Errorf("reading SIOCOUTQ: %w", err)
	}
	return ti.Bytes_acked + uint64(outq), nil
}

// queued returns the bytes waiting in fd's receive queue.
func queued(fd int) (int, error) {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return 0, fmt.Errorf("reading SIOCINQ: %w", err)
	}
	return n, nil
}

func value(bytes, peer uint64) []byte {
	var v [valueSize]byte
	binary.NativeEndian.PutUint64(v[valueBytes:], bytes)
	binary.NativeEndian.PutUint64(v[valuePeer:], peer)
	return v[:]
}

// side is one socket of a session.
type side struct {
	c      *net.TCPConn
	rc     rawConn
	fd     int
	cookie uint64
	base   uint64 // written(fd) when the session entered the kernel
}

type rawConn interface {
	Control(func(fd uintptr)) error
	Read(func(fd uintptr) bool) error
}

func newSide(c *net.TCPConn) (*side, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	s := &side{c: c, rc: rc}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		s.fd = int(fd)
		if s.cookie, serr = cookie(s.fd); serr != nil {
			return
		}
		s.base, serr = written(s.fd)
	}); err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	return s, serr
}

// ErrFallback is wrapped by the errors of a Relay that did not move the
// session into the kernel: both connections are open and no byte went
// through the kernel path; up is the count of buffered bytes already
// written to the backend, and the caller relays the rest in user space.
var ErrFallback = errors.New("sockmap: session left to user space")

var (
	// ErrBusy: the backend already had bytes queued for the client at
	// hand-off; in the kernel they could be overtaken by later ones.
	ErrBusy = fmt.Errorf("%w: backend bytes queued at hand-off", ErrFallback)
	// ErrFull: the maps hold Options.MaxSessions sessions.
	ErrFull = fmt.Errorf("%w: kernel relay full", ErrFallback)
	// ErrState: a socket left the established state (its peer sent its
	// FIN) before it could enter the SOCKHASH, which takes only
	// established sockets.
	ErrState = fmt.Errorf("%w: socket no longer established", ErrFallback)
)

// Relay moves bytes between client and backend in the kernel until both
// directions ended (end of stream on one side is passed on as a
// half-close to the other once every byte before it went out), one side
// fails or ctx is done; then it closes both. buffered holds bytes already
// read from the client and is written to the backend first.
//
// An error wrapping ErrFallback means the session did not enter the
// kernel (see ErrFallback).
func (k *Kernel) Relay(ctx context.Context, client, backend *net.TCPConn, buffered []byte) (up, down int64, err error) {
	cs, err := newSide(client)
	if err != nil {
		return 0, 0, errors.Join(ErrFallback, err)
	}
	bs, err := newSide(backend)
	if err != nil {
		return 0, 0, errors.Join(ErrFallback, err)
	}
	if n, err := queued(bs.fd); err != nil || n > 0 {
		return 0, 0, errors.Join(ErrBusy, err)
	}
	client.SetDeadline(time.Time{})
	backend.SetDeadline(time.Time{})
	if len(buffered) > 0 {
		if _, err := backend.Write(buffered); err != nil {
			client.Close()
			backend.Close()
			return 0, 0, fmt.Errorf("writing to backend: %w", err)
		}
		if bs.base, err = written(bs.fd); err != nil {
			return int64(len(buffered)), 0, errors.Join(ErrFallback, err)
		}
	}
	if err := k.enter(cs, bs); err != nil {
		return int64(len(buffered)), 0, err
	}
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			backend.Close()
		})
	}
	defer closeBoth()
	defer k.leave(cs, bs)
	stop := context.AfterFunc(ctx, closeBoth)
	defer stop()

	// One waiter per socket: each sees its side's end of stream or error
	// (the bytes themselves never reach user space) and passes it on. The
	// backend's waiter runs here, the client's in one goroutine: an idle
	// session costs what relay.Splice's does.
	errs := make(chan error, 1)
	go func() {
		e := k.direction(ctx, cs, bs)
		if e != nil {
			closeBoth()
		}
		errs <- e
	}()
	if err = k.direction(ctx, bs, cs); err != nil {
		closeBoth()
	}
	if e := <-errs; err == nil {
		err = e
	}
	u, _ := k.moved(cs.cookie)
	d, _ := k.moved(bs.cookie)
	return int64(len(buffered)) + int64(u), int64(d), quiet(err)
}

// enter puts the pair into the maps: peer entries first, then the
// backend socket, then the client socket. Until the client socket is in,
// client bytes stay in its receive queue; once it is in, a SO_RCVLOWAT
// update makes the kernel run the verdict over what queued before, ahead
// of anything newer. Its errors wrap ErrFallback: the pair is out of the
// maps again.
func (k *Kernel) enter(cs, bs *side) error {
	if err := k.peers.Update(cs.cookie, value(0, bs.cookie), ebpf.UpdateNoExist); err != nil {
		return fallback("adding peer entry", err)
	}
	if err := k.peers.Update(bs.cookie, value(0, cs.cookie), ebpf.UpdateNoExist); err != nil {
		k.peers.Delete(cs.cookie)
		return fallback("adding peer entry", err)
	}
	if err := k.socks.Update(bs.cookie, uint64(bs.fd), ebpf.UpdateNoExist); err != nil {
		k.peers.Delete(cs.cookie)
		k.peers.Delete(bs.cookie)
		return fallback("adding backend socket to SOCKHASH", err)
	}
	if err := k.socks.Update(cs.cookie, uint64(cs.fd), ebpf.UpdateNoExist); err != nil {
		// The backend socket leaves the SOCKHASH again. It is quiet at
		// hand-off (checked before): a byte it received in these few
		// microseconds would be lost with its psock; none was seen in
		// the tests.
		k.leave(cs, bs)
		return fallback("adding client socket to SOCKHASH", err)
	}
	for _, s := range [2]*side{cs, bs} {
		// cannot fail for a TCP socket; the waiters' reads kick too
		unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, 1)
	}
	return nil
}

func fallback(what string, err error) error {
	switch {
	case errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ENOSPC):
		return fmt.Errorf("%s: %w (%w)", what, ErrFull, err)
	case errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%s: %w (%w)", what, ErrState, err)
	}
	return fmt.Errorf("%s: %w (%w)", what, ErrFallback, err)
}

// leave removes the pair from the maps (closing a socket also removes it
// from the SOCKHASH).
func (k *Kernel) leave(cs, bs *side) {
	k.socks.Delete(cs.cookie)
	k.socks.Delete(bs.cookie)
	k.peers.Delete(cs.cookie)
	k.peers.Delete(bs.cookie)
}

// moved returns the bytes the program sent on from the socket cookie.
func (k *Kernel) moved(c uint64) (uint64, error) {
	var v [valueSize]byte
	if err := k.peers.Lookup(c, v[:]); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint64(v[valueBytes:]), nil
}

// errUserBytes reports bytes that reached user space on a socket in the
// kernel relay: its peer left the SOCKHASH, the session is over.
var errUserBytes = errors.New("sockmap: bytes not redirected (peer gone)")

// direction waits for src's end of stream or error. At end of stream it
// waits until every byte the program redirected from src went out on dst,
// then shuts dst's write side, so the peer sees the half-close after the
// last byte.
func (k *Kernel) direction(ctx context.Context, src, dst *side) error {
	var serr error
	eof := false
	err := src.rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false
		case err != nil:
			serr = &net.OpError{Op: "read", Net: "tcp", Err: err}
		case n == 0:
			eof = true
		default:
			serr = errUserBytes
		}
		return true
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return serr
	}
	if !eof {
		return nil
	}
	if err := k.flushed(ctx, src, dst); err != nil {
		return err
	}
	if err := dst.c.CloseWrite(); err != nil {
		return fmt.Errorf("passing on end of stream: %w", err)
	}
	return nil
}

// flushed waits until dst has taken every byte redirected from src. The
// kernel sends redirected bytes from a work queue, so they may still be
// on their way when src's end of stream is seen.
func (k *Kernel) flushed(ctx context.Context, src, dst *side) error {
	delay := 50 * time.Microsecond
	deadline := time.Now().Add(FlushTimeout)
	last := uint64(0)
	for {
		want, err := k.moved(src.cookie)
		if err != nil {
			return fmt.Errorf("reading byte counter: %w", err)
		}
		var got uint64
		var werr error
		if err := dst.rc.Control(func(fd uintptr) { got, werr = written(int(fd)) }); err != nil {
			return err
		}
		if werr != nil {
			return werr
		}
		if got-dst.base >= want {
			return nil
		}
		if got != last { // progress: the peer reads, keep waiting
			last = got
			deadline = time.Now().Add(FlushTimeout)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sockmap: %d of %d bytes passed on after %v", got-dst.base, want, FlushTimeout)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// FlushTimeout bounds the wait, without progress, for redirected bytes to
// go out before an end of stream is passed on (a peer that stopped
// reading holds them).
const FlushTimeout = 30 * time.Second

// quiet drops the errors of a connection closed on purpose.
func quiet(err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
