//go:build linux

package dnsblzone

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

// inNetns runs fn on a thread switched into the named network namespace:
// sockets made there stay in it.
func inNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer self.Close()
	target, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns: %w", err)
	}
	ferr := fn()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns back: %w", err) // the thread stays locked and ends with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

// Postfix consults the zone with reject_rbl_client through its ordinary
// resolver. Postfix resolves through glibc, which reads /etc/resolv.conf
// and asks port 53 only, so the test runs the zone on 127.0.0.1:53 and
// Postfix (the project's backend harness) in a network namespace of its
// own, whose /etc/resolv.conf `ip netns exec` replaces with
// /etc/netns/<ns>/resolv.conf. A blocked address (XCLIENT) is rejected
// with the zone's TXT; an address next to it is not; the unblock lifts it.
func TestPostfixRejectRBLClient(t *testing.T) {
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("end-to-end test: set POSTERN_E2E=1 (needs root, Postfix and swaks)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("POSTERN_E2E=1: this test needs root (network namespace, Postfix)")
	}
	for _, c := range []string{"ip", "swaks", "postfix", "postconf"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("POSTERN_E2E=1: %s not installed", c)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	harness := filepath.Join(filepath.Dir(file), "..", "..", "test", "backends")

	ns := fmt.Sprintf("pstn-bl-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:2 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tbl := &table{blocks: []store.Block{{Prefix: netip.MustParsePrefix("192.0.2.0/28"), Reason: reason.Login, Expires: time.Now().Add(time.Hour)}}}
	z, err := New(Options{Zone: "bl.postern-e2e.test", Lookup: tbl})
	if err != nil {
		t.Fatal(err)
	}
	var pc net.PacketConn
	var ln net.Listener
	if err := inNetns(ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:53"); err != nil {
			return err
		}
		ln, err = net.Listen("tcp", "127.0.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(pc, ln, z)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	dir := fmt.Sprintf("/tmp/pstn-bl-%d", os.Getpid())
	nsexec := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
		cmd.Env = append(os.Environ(), "POSTERN_BACKENDS_PORT_BASE=12000")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := nsexec(filepath.Join(harness, "start.sh"), dir, "--fresh"); err != nil {
		t.Fatalf("backends: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = nsexec(filepath.Join(harness, "stop.sh"), dir, "--purge") })
	conf := filepath.Join(dir, "postfix", "conf")
	if out, err := nsexec("postconf", "-c", conf, "-e", "smtpd_client_restrictions=reject_rbl_client bl.postern-e2e.test=127.0.0.2"); err != nil {
		t.Fatalf("postconf: %v %s", err, out)
	}
	if out, err := nsexec("postfix", "-c", conf, "reload"); err != nil {
		t.Fatalf("postfix reload: %v %s", err, out)
	}

	send := func(addr string) string {
		t.Helper()
		out, _ := nsexec("swaks", "--server", "127.0.0.1:12026", "--helo", "client.test", "--timeout", "30",
			"--xclient-addr", addr, "--from", "sender@remote.test", "--to", "carol@other.test", "--quit-after", "RCPT")
		return out
	}
	// the reload is signalled to Postfix's master: new smtpd processes
	// read the new setting; poll until one does.
	deadline := time.Now().Add(30 * time.Second)
	var out string
	for {
		out = send("192.0.2.7")
		if strings.Contains(out, "<** 554 5.7.1") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(out, "<** 554 5.7.1 Service unavailable; Client host [192.0.2.7] blocked using bl.postern-e2e.test; postern: failed logins (192.0.2.0/28), until ") {
		t.Fatalf("blocked address (inside the blocked prefix) not rejected with the TXT:\n%s", out)
	}
	if out := send("192.0.2.16"); !strings.Contains(out, "<-  250 2.1.5 Ok") {
		t.Fatalf("address outside the prefix:\n%s", out)
	}
	tbl.mu.Lock()
	tbl.blocks = nil
	tbl.mu.Unlock()
	// an smtpd process keeps its DNSBL answers for its lifetime (its
	// max_use, max_idle): new processes after a reload ask again.
	if out, err := nsexec("postfix", "-c", conf, "reload"); err != nil {
		t.Fatalf("postfix reload: %v %s", err, out)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		out = send("192.0.2.7")
		if strings.Contains(out, "<-  250 2.1.5 Ok") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(out, "<-  250 2.1.5 Ok") {
		t.Fatalf("after the unblock:\n%s", out)
	}
}
