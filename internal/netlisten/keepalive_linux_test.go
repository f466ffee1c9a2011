package netlisten

import (
	"net"
	"syscall"
	"testing"
)

// TestAcceptedKeepAlive checks that an accepted connection has keep-alive
// probes on with Go's default times although Go no longer sets them on it:
// they come from the listening socket.
func TestAcceptedKeepAlive(t *testing.T) {
	s := start(t, Config{})
	dial(t, s, "")
	c := s.accept(t)
	rc, err := c.raw.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
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
		var got int
		var gerr error
		if err := rc.Control(func(fd uintptr) {
			got, gerr = syscall.GetsockoptInt(int(fd), o.level, o.name)
		}); err != nil {
			t.Fatal(err)
		}
		if gerr != nil {
			t.Fatalf("getsockopt %s: %v", o.what, gerr)
		}
		if got != o.want {
			t.Errorf("%s = %d on the accepted socket, want %d", o.what, got, o.want)
		}
	}
}
