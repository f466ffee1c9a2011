package benchkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Proc is a server the bench runs (postern, nginx, haproxy, a helper
// child of the bench itself): in a process group of its own, its output
// through a LogPipe into a file, and, when started with StartNotify, a
// ReadySocket it says READY=1 on.
type Proc struct {
	// Name names the server in errors.
	Name string
	// Cmd is the running command.
	Cmd *exec.Cmd
	// Log is the file its output goes to.
	Log string

	ready *ReadySocket
	done  chan struct{}
	err   error // cmd.Wait's, once done is closed
}

// stopGrace is how long Stop waits after SIGTERM before SIGKILL: postern
// drains its sessions for up to 30 s.
const stopGrace = 40 * time.Second

// Start starts bin with args as name, with env added to the bench's own
// environment, its standard output and error through a pipe into the file
// logPath (as a service manager takes them).
func Start(name, logPath string, env []string, bin string, args ...string) (*Proc, error) {
	return start(name, logPath, env, nil, bin, args...)
}

// StartNotify is Start for a server that tells a service manager when it
// serves (postern serve, as under systemd's Type=notify): it gets a
// NOTIFY_SOCKET, and StartNotify returns once it has said READY=1 there.
// Its ports accept connections earlier (postern binds them before it
// opens its store), so a load started on an open port would wait for it.
func StartNotify(name, logPath string, env []string, bin string, args ...string) (*Proc, error) {
	ready, err := NewReadySocket()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p, err := start(name, logPath, append([]string{ready.Env()}, env...), ready, bin, args...)
	if err != nil {
		ready.Close()
		return nil, err
	}
	if err := ready.Wait(30*time.Second, func() bool { return !p.Running() }); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s %w (%v):\n%s", name, err, p.err, p.Tail())
	}
	return p, nil
}

func start(name, logPath string, env []string, ready *ReadySocket, bin string, args ...string) (*Proc, error) {
	out, err := NewLogPipe(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: exec.Command(bin, args...), Log: logPath, ready: ready, done: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = out.Writer(), out.Writer()
	if len(env) > 0 {
		p.Cmd.Env = append(os.Environ(), env...)
	}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = p.Cmd.Start()
	out.Started()
	if err != nil {
		out.Wait(5 * time.Second)
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); out.Wait(5 * time.Second); close(p.done) }()
	return p, nil
}

// PID is the server's process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the server has exited and its output is in its log.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the server has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the server ended (exec.Cmd.Wait's error); nil while it runs.
func (p *Proc) Err() error {
	if p.Running() {
		return nil
	}
	return p.err
}

// Tail is the last 15 lines of its log, for errors.
func (p *Proc) Tail() string { return LogTail(p.Log, 15) }

// WaitPorts waits until every address accepts connections, 30 s at most;
// an error at once when the server exits first.
func (p *Proc) WaitPorts(addrs ...string) error {
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if !p.Running() {
				return fmt.Errorf("%s exited before listening on %s (%v):\n%s", p.Name, a, p.err, p.Tail())
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s not listening on %s after 30 s:\n%s", p.Name, a, p.Tail())
			}
			time.Sleep(30 * time.Millisecond)
		}
	}
	return nil
}

// Stop sends the server SIGTERM (by its PID) and waits for it, then
// SIGKILL after 40 s. The error says when it had to be killed or did not
// exit with status 0. Stop may be called again, and on a nil Proc.
func (p *Proc) Stop() error {
	if p == nil {
		return nil
	}
	var err error
	if p.Running() {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(stopGrace)
		select {
		case <-p.done:
		case <-t.C:
			p.Cmd.Process.Kill()
			<-p.done
			err = fmt.Errorf("%s still running %v after SIGTERM: killed", p.Name, stopGrace)
		}
		t.Stop()
	}
	if p.ready != nil {
		p.ready.Close()
		p.ready = nil
	}
	if err != nil {
		return err
	}
	if p.err != nil {
		return fmt.Errorf("%s exited with %w", p.Name, p.err)
	}
	return nil
}
