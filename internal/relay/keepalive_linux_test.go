package relay

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

func sockopt(t *testing.T, c net.Conn, level, name int) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, name) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, name, gerr)
	}
	return v
}

// TestLoopbackBackendWithoutKeepAlive checks that a connection to a
// loopback backend gets no keep-alive probes (no setsockopt calls).
func TestLoopbackBackendWithoutKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := Dialer{Addr: ln.Addr().String(), Proxy: "none", Timeout: 5 * time.Second}
	c, err := d.Dial(context.Background(), netip.MustParseAddrPort("192.0.2.7:1234"), netip.AddrPort{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v := sockopt(t, c.(*limitedConn).Conn, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); v != 0 {
		t.Errorf("SO_KEEPALIVE = %d on a loopback backend connection, want 0", v)
	}
}

// TestRemoteBackendKeepAlive checks that a connection whose resolved
// address is not loopback gets Go's default probes, set before connect.
// The socket connects to loopback; the control function is told it is
// another address, as the resolver would for a remote backend.
func TestRemoteBackendKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nd := backendDialer("backend.example.test:143", 5*time.Second)
	nd.ControlContext = func(ctx context.Context, network, _ string, c syscall.RawConn) error {
		return keepAliveControl(ctx, network, "192.0.2.1:143", c)
	}
	c, err := nd.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, o := range []struct {
		what        string
		level, name int
		want        int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
	} {
		if v := sockopt(t, c, o.level, o.name); v != o.want {
			t.Errorf("%s = %d, want %d", o.what, v, o.want)
		}
	}
}

// TestLiteralBackendKeepAlive checks the choice made for a backend given
// as an IP address: none for loopback, Go's probes otherwise, and no
// control function (it costs allocations on every dial).
func TestLiteralBackendKeepAlive(t *testing.T) {
	if nd := backendDialer("127.0.0.1:143", time.Second); nd.KeepAlive >= 0 || nd.KeepAliveConfig.Enable || nd.ControlContext != nil {
		t.Errorf("loopback backend: %+v, want no keep-alive and no control", nd)
	}
	nd := backendDialer("[2001:db8::1]:143", time.Second)
	if want := (net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 15 * time.Second, Count: 9}); nd.KeepAliveConfig != want || nd.ControlContext != nil {
		t.Errorf("remote backend: %+v, want %+v and no control", nd, want)
	}
}

func TestNeedsKeepAlive(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:143":        false,
		"127.3.4.5:143":        false,
		"[::1]:143":            false,
		"[::ffff:127.0.0.1]:1": false,
		"10.0.0.5:143":         true,
		"[2001:db8::1]:143":    true,
		"not-an-address":       true,
	} {
		if got := needsKeepAlive(addr); got != want {
			t.Errorf("needsKeepAlive(%q) = %v, want %v", addr, got, want)
		}
	}
}
