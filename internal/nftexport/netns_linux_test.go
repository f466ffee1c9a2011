package nftexport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/store"
	"github.com/postern/postern/internal/testenv"
	"golang.org/x/sys/unix"
)

// netns is a network namespace made by the test.
type netns struct {
	name string
	fd   int
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNetns(t *testing.T, name string) *netns {
	t.Helper()
	fd := testenv.Netns(t, name)
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return &netns{name: name, fd: fd}
}

// do runs f on a thread inside ns: sockets f makes belong to ns.
func (ns *netns) do(t *testing.T, f func()) {
	t.Helper()
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer unix.Close(self)
	if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", ns.name, err)
	}
	defer func() {
		if err := unix.Setns(self, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread() // else the thread ends with the goroutine
		}
	}()
	f()
}

// TestNetnsDropsBlocked runs the exporter against the nftables of a network
// namespace "srv" reached from a namespace "cli" through a veth pair: a
// blocked client's connections to a port in srv time out, unblocking
// restores them, and elements changed by hand are put right by Reconcile.
func TestNetnsDropsBlocked(t *testing.T) {
	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	srv, cli := newNetns(t, "pnft-s"+tag), newNetns(t, "pnft-c"+tag)
	run(t, "ip", "link", "add", "pnfs"+tag, "netns", srv.name, "type", "veth", "peer", "name", "pnfc"+tag, "netns", cli.name)
	for _, c := range [][]string{
		{"-n", srv.name, "addr", "add", "10.231.0.1/24", "dev", "pnfs" + tag},
		{"-n", srv.name, "addr", "add", "fd00:231::1/64", "dev", "pnfs" + tag, "nodad"},
		{"-n", srv.name, "link", "set", "pnfs" + tag, "up"},
		{"-n", cli.name, "addr", "add", "10.231.0.2/24", "dev", "pnfc" + tag},
		{"-n", cli.name, "addr", "add", "fd00:231::2/64", "dev", "pnfc" + tag, "nodad"},
		{"-n", cli.name, "link", "set", "pnfc" + tag, "up"},
	} {
		run(t, append([]string{"ip"}, c...)...)
	}

	// without create, missing table and sets are named
	cfg := Config{Family: "inet", Table: "postern", Set4: "blocked4", Set6: "blocked6", Chain: "input"}
	if _, err := Open(cfg, srv.fd); err == nil || !strings.Contains(err.Error(), "table inet postern does not exist") {
		t.Fatalf("Open without create = %v, want a missing table", err)
	}
	cfg.Create = true
	tgt, err := Open(cfg, srv.fd)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	// opened again (a restart): the table and sets are found, the chain
	// rewritten, not doubled
	tgt2, err := Open(cfg, srv.fd)
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	tgt2.Close()
	cfg.Create = false
	tgt3, err := Open(cfg, srv.fd)
	if err != nil {
		t.Fatalf("Open of existing sets without create: %v", err)
	}
	tgt3.Close()
	// sets made by hand that do not fit are named with what they lack
	run(t, "ip", "netns", "exec", srv.name, "nft", "add", "set", "inet", "postern", "bad4", "{ type ipv4_addr; flags interval; }")
	run(t, "ip", "netns", "exec", srv.name, "nft", "add", "set", "inet", "postern", "bad6", "{ type ipv4_addr; flags interval, timeout; }")
	for _, c := range []struct{ set4, set6, want string }{
		{"bad4", "blocked6", "set bad4 of table inet postern lacks flags timeout"},
		{"blocked4", "bad6", "set bad6 of table inet postern lacks type ipv6_addr"},
	} {
		bad := cfg
		bad.Set4, bad.Set6 = c.set4, c.set6
		if _, err := Open(bad, srv.fd); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("Open with %s, %s = %v, want %q", c.set4, c.set6, err, c.want)
		}
	}
	if rules := run(t, "ip", "netns", "exec", srv.name, "nft", "list", "chain", "inet", "postern", "input"); strings.Count(rules, "drop") != 2 {
		t.Fatalf("chain after two opens:\n%s", rules)
	}

	var ln4, ln6 net.Listener
	srv.do(t, func() {
		if ln4, err = net.Listen("tcp4", "10.231.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln6, err = net.Listen("tcp6", "[fd00:231::1]:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln4.Close()
	defer ln6.Close()
	for _, ln := range []net.Listener{ln4, ln6} {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	reach := func(ln net.Listener) bool {
		t.Helper()
		var ok bool
		cli.do(t, func() {
			d := net.Dialer{Timeout: 700 * time.Millisecond}
			c, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
			if err == nil {
				c.Close()
				ok = true
				return
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("dial %s: %v (want a connection or a timeout)", ln.Addr(), err)
			}
		})
		return ok
	}
	if !reach(ln4) || !reach(ln6) {
		t.Fatal("client cannot connect before any block")
	}

	var blocks []store.Block
	x := New(Options{Blocks: func() []store.Block { return blocks }, Target: tgt})
	if err := x.Reconcile(); err != nil {
		t.Fatal(err)
	}
	blocks = []store.Block{
		{Prefix: netip.MustParsePrefix("10.231.0.2/32"), Expires: time.Now().Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("fd00:231::/120")},
	}
	if err := x.Sync(); err != nil {
		t.Fatal(err)
	}
	list := run(t, "ip", "netns", "exec", srv.name, "nft", "list", "table", "inet", "postern")
	if !strings.Contains(list, "10.231.0.2 timeout 1h") || !strings.Contains(list, "fd00:231::/120") {
		t.Fatalf("sets after the block:\n%s", list)
	}
	if reach(ln4) || reach(ln6) {
		t.Fatalf("blocked client still connects:\n%s", list)
	}

	blocks = blocks[1:]
	if err := x.Sync(); err != nil {
		t.Fatal(err)
	}
	if !reach(ln4) {
		t.Fatal("unblocked client cannot connect")
	}

	// drift by hand: the IPv4 client added, the IPv6 block removed
	run(t, "ip", "netns", "exec", srv.name, "nft", "add", "element", "inet", "postern", "blocked4", "{ 10.231.0.0/30 }")
	run(t, "ip", "netns", "exec", srv.name, "nft", "delete", "element", "inet", "postern", "blocked6", "{ fd00:231::/120 }")
	if reach(ln4) || !reach(ln6) {
		t.Fatal("hand-made drift did not take effect")
	}
	if err := x.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !reach(ln4) || reach(ln6) {
		t.Fatalf("drift not corrected:\n%s", run(t, "ip", "netns", "exec", srv.name, "nft", "list", "table", "inet", "postern"))
	}
	// the whole table deleted by hand: made again, with its elements
	run(t, "ip", "netns", "exec", srv.name, "nft", "delete", "table", "inet", "postern")
	if !reach(ln6) {
		t.Fatal("IPv6 client still refused without the table")
	}
	if err := x.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !reach(ln4) || reach(ln6) {
		t.Fatalf("table not made again:\n%s", run(t, "ip", "netns", "exec", srv.name, "nft", "list", "table", "inet", "postern"))
	}
}

// TestNetnsRefusedAfterPrivilegeDrop shows why the export needs
// CAP_NET_ADMIN kept rather than a netlink socket opened before the drop:
// a child process opens the target as root, switches to nobody as run_as
// does, and its first write is refused with ErrPermission's advice.
func TestNetnsRefusedAfterPrivilegeDrop(t *testing.T) {
	if path := os.Getenv("POSTERN_NFT_DROP_CHILD"); path != "" {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fmt.Println("CHILD:", err)
			return
		}
		tgt, err := Open(Config{Family: "inet", Table: "postern", Set4: "blocked4", Set6: "blocked6", Create: true}, fd)
		if err != nil {
			fmt.Println("CHILD open:", err)
			return
		}
		if err := syscall.Setgid(65534); err != nil {
			fmt.Println("CHILD setgid:", err)
			return
		}
		if err := syscall.Setuid(65534); err != nil {
			fmt.Println("CHILD setuid:", err)
			return
		}
		x := New(Options{Blocks: func() []store.Block {
			return []store.Block{{Prefix: netip.MustParsePrefix("192.0.2.1/32")}}
		}, Target: tgt})
		err = x.Reconcile()
		fmt.Printf("CHILD reconcile: permission=%v: %v\n", errors.Is(err, ErrPermission), err)
		return
	}
	ns := newNetns(t, fmt.Sprintf("pnft-d%d", os.Getpid()%100000))
	cmd := exec.Command(os.Args[0], "-test.run=^TestNetnsRefusedAfterPrivilegeDrop$", "-test.count=1")
	cmd.Env = append(os.Environ(), "POSTERN_NFT_DROP_CHILD=/run/netns/"+ns.name)
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "CHILD reconcile: permission=true") || !strings.Contains(string(out), "CAP_NET_ADMIN") {
		t.Fatalf("child after the privilege drop:\n%s", out)
	}
	// the sets were made before the drop, and stay empty
	if l := run(t, "ip", "netns", "exec", ns.name, "nft", "list", "set", "inet", "postern", "blocked4"); strings.Contains(l, "192.0.2.1") {
		t.Fatalf("written after the drop:\n%s", l)
	}
}
