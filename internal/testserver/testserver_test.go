package testserver

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestTCPAndUnix(t *testing.T) {
	echo := func(c net.Conn) {
		l, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, l)
	}
	for _, tc := range []struct{ network, addr string }{
		{"tcp", TCP(t, echo)},
		{"unix", Unix(t, filepath.Join(t.TempDir(), "s.sock"), echo)},
	} {
		c, err := net.DialTimeout(tc.network, tc.addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "ping\n")
		got, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || got != "ping\n" {
			t.Errorf("%s: got %q, %v", tc.network, got, err)
		}
	}
}
