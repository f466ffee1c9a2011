package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A peer process is the test binary started again to serve one TCP
// connection, for tests that count this process's system calls (a peer
// in this process would make calls of its own). The package's TestMain
// calls ServePeer first; the test calls DialPeer.

// ServePeer serves one connection with serve, in the test binary started
// by DialPeer with env set (its value is passed to serve), and exits; it
// returns, doing nothing, when env is not set. The connection and the
// whole peer end after 60 s at the latest.
func ServePeer(env string, serve func(c net.Conn, value string)) {
	v := os.Getenv(env)
	if v == "" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(2)
	}
	fmt.Println(ln.Addr())
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(60 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		os.Exit(2)
	}
	c.SetDeadline(time.Now().Add(60 * time.Second))
	serve(c, v)
	c.Close()
	os.Exit(0)
}

// DialPeer starts the test binary again as a peer process (ServePeer) with
// env=value and returns a connection to it; at the end of the test the
// connection is closed and the peer, which then ends, waited for.
func DialPeer(tb testing.TB, env, value string) *net.TCPConn {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(os.Environ(), env+"="+value)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		tb.Fatalf("peer process: %v", err)
	}
	nc, err := net.Dial("tcp", strings.TrimSpace(addr))
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		tb.Fatal(err)
	}
	tb.Cleanup(func() { nc.Close(); cmd.Wait() })
	return nc.(*net.TCPConn)
}
