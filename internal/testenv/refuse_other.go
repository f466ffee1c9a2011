//go:build !unix

package testenv

import (
	"net"
	"testing"
)

// RefusingAddr returns a "127.0.0.1:port" address where nothing listens: a
// port found free and let go (a socket bound without listening, as on
// Unix, is not available here).
func RefusingAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
