//go:build unix

package testenv

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Netns makes the network namespace name for the test (`ip netns add`),
// deleted when the test ends, and returns it open (a descriptor for
// setns(2) or the nftables export). It skips the test where that cannot
// be done: with -short, without root (namespaces, veth and nftables need
// CAP_SYS_ADMIN and CAP_NET_ADMIN), without ip or nft (Debian packages
// iproute2, nftables), or when the kernel refuses the namespace.
func Netns(t testing.TB, name string) int {
	t.Helper()
	const why = "a network namespace for nftables"
	if testing.Short() {
		t.Skip(why + ": not with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip(why + ": needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	for _, c := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s: %s is not installed (Debian packages iproute2, nftables)", why, c)
		}
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("%s: cannot make one (%v: %s)", why, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	fd, err := syscall.Open("/run/netns/"+name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	return fd
}
