package benchkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/sdnotify"
)

// TestReadySocket: postern's own notifier (what postern serve sends) is
// heard; a STATUS line alone is not READY; an exit and the timeout end
// the wait with an error.
func TestReadySocket(t *testing.T) {
	r, err := NewReadySocket()
	if err != nil {
		t.Fatal(err)
	}
	dir := r.dir
	env, ok := strings.CutPrefix(r.Env(), "NOTIFY_SOCKET=")
	if !ok {
		t.Fatalf("Env() = %q", r.Env())
	}
	t.Setenv("NOTIFY_SOCKET", env)
	n := sdnotify.FromEnv()
	if err := n.Status("starting"); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(300*time.Millisecond, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "READY=1") {
		t.Errorf("a STATUS line alone: Wait = %v, want the timeout", err)
	}
	if err := n.Ready("serving 2 services"); err != nil {
		t.Fatal(err)
	}
	if err := r.Wait(10*time.Second, func() bool { return false }); err != nil {
		t.Errorf("after READY=1: %v", err)
	}
	start := time.Now()
	if err := r.Wait(time.Minute, func() bool { return true }); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("an exited server: Wait = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("an exited server was waited for %v", d)
	}
	r.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s (%v)", dir, err)
	}
}

// TestLogPipe: a child's output through the pipe lands in the file, whole,
// once the child has ended; the child's standard error is a pipe (what
// postern's log writer checks to write raw).
func TestLogPipe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "child.log")
	l, err := NewLogPipe(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `echo out; echo err >&2; if [ -p /dev/stderr ]; then echo fifo >&2; fi`)
	cmd.Stdout, cmd.Stderr = l.Writer(), l.Writer()
	err = cmd.Start()
	l.Started()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if !l.Wait(10 * time.Second) {
		t.Fatal("the pipe's copy did not end after the child")
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "out\nerr\nfifo\n" {
		t.Errorf("the file holds %q (%v)", got, err)
	}
}
