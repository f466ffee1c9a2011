package benchkit

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/sdnotify"

	"github.com/postern/postern/internal/testenv"
)

// TestMain lets the test binary stand in for a server: with
// BENCHKIT_CHILD set it runs childMain instead of the tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("BENCHKIT_CHILD"); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// childMain is the stand-in server. "serve": listen on BENCHKIT_ADDR,
// say READY=1 when BENCHKIT_NOTIFY=1, then wait for SIGTERM and exit with
// BENCHKIT_TERM_CODE (0 when unset). "fail": say why on standard error and
// exit 2 at once, as postern does with a bad configuration.
func childMain(mode string) int {
	switch mode {
	case "serve":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		ln, err := net.Listen("tcp", os.Getenv("BENCHKIT_ADDR"))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer ln.Close()
		fmt.Println("listening on", ln.Addr())
		if os.Getenv("BENCHKIT_NOTIFY") == "1" {
			if err := sdnotify.FromEnv().Ready("serving"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		<-term
		fmt.Fprintln(os.Stderr, "stopping")
		code, _ := strconv.Atoi(os.Getenv("BENCHKIT_TERM_CODE"))
		return code
	case "fail":
		fmt.Fprintln(os.Stderr, "configuration: no services")
		return 2
	}
	return 1
}

// TestStartNotify: a server that says READY=1 is returned serving, its
// port accepts, its output is in its log, and Stop ends it with SIGTERM,
// removes its ready socket, and may be called again.
func TestStartNotify(t *testing.T) {
	addr := testenv.FreeAddr(t)
	log := filepath.Join(t.TempDir(), "server.log")
	p, err := StartNotify("server", log, []string{"BENCHKIT_CHILD=serve", "BENCHKIT_NOTIFY=1", "BENCHKIT_ADDR=" + addr}, os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if !p.Running() || p.PID() <= 0 {
		t.Fatalf("after StartNotify: running %v, PID %d", p.Running(), p.PID())
	}
	if err := p.WaitPorts(addr); err != nil {
		t.Fatal(err)
	}
	socketDir := p.ready.dir
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if p.Running() || p.Err() != nil {
		t.Errorf("after Stop: running %v, Err %v", p.Running(), p.Err())
	}
	if got := p.Tail(); !strings.Contains(got, "listening on "+addr) || !strings.Contains(got, "stopping") {
		t.Errorf("its log: %q", got)
	}
	if _, err := os.Stat(socketDir); !os.IsNotExist(err) {
		t.Errorf("Stop left the ready socket's directory (%v)", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
	var none *Proc
	if err := none.Stop(); err != nil {
		t.Errorf("Stop of nil: %v", err)
	}
}

// TestStartNotifyExit: a server that exits before READY=1 is an error at
// once, with its last words.
func TestStartNotifyExit(t *testing.T) {
	start := time.Now()
	_, err := StartNotify("server", filepath.Join(t.TempDir(), "server.log"), []string{"BENCHKIT_CHILD=fail"}, os.Args[0])
	if err == nil || !strings.Contains(err.Error(), "exited before it said READY=1") || !strings.Contains(err.Error(), "configuration: no services") {
		t.Fatalf("StartNotify = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("an exited server was waited for %v", d)
	}
}

// TestWaitPortsExit: a server that exits before it listens ends the wait
// at once, with its exit status and log, and Stop reports the status.
func TestWaitPortsExit(t *testing.T) {
	p, err := Start("server", filepath.Join(t.TempDir(), "server.log"), []string{"BENCHKIT_CHILD=fail"}, os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitPorts(testenv.FreeAddr(t))
	if err == nil || !strings.Contains(err.Error(), "exited before listening") || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("WaitPorts = %v", err)
	}
	<-p.Done()
	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "exit status 2") {
		t.Errorf("Stop of a failed server = %v", err)
	}
}

// TestStopStatus: a server that exits with a status other than 0 on
// SIGTERM makes Stop an error.
func TestStopStatus(t *testing.T) {
	addr := testenv.FreeAddr(t)
	p, err := Start("server", filepath.Join(t.TempDir(), "server.log"), []string{"BENCHKIT_CHILD=serve", "BENCHKIT_ADDR=" + addr, "BENCHKIT_TERM_CODE=3"}, os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitPorts(addr); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Stop = %v", err)
	}
}
