//go:build unix

package testenv

import (
	"fmt"
	"syscall"
	"testing"
)

// RefusingAddr returns a "127.0.0.1:port" address where connections are
// refused for the whole test: a socket is bound to the port but never
// listens, so no other program (a test running beside this one) can take
// the port meanwhile, as it could a port found free and let go.
func RefusingAddr(t testing.TB) string {
	t.Helper()
	syscall.ForkLock.RLock() // no SOCK_CLOEXEC on macOS: as Go's net package does
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
