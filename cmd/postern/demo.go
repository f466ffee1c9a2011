package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/demo"
)

// demoPorts are the demo's default gateway ports: smtp, submission, imap,
// pop3, web.
var demoPorts = [5]int{2525, 2587, 1143, 1110, 8080}

// demoOptions are the flags of postern demo.
type demoOptions struct {
	host     string
	basePort int    // -1: the default ports; 0: any free ports; N: N…N+4
	dir      string // "" : a new temporary directory, removed at the end
	postern  string // how the printed commands run postern
}

func newDemoCmd() *cobra.Command {
	o := demoOptions{host: "127.0.0.1", basePort: -1}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a complete demo gateway on loopback with in-process mail backends",
		Long: `demo starts postern on loopback in front of in-process demo backends
(SMTP, IMAP, POP3 and a small webmail, with two demo users), writes the demo
configuration into a temporary directory (or --dir), and prints commands to
try: send and read mail through postern, see access rules refuse, guess
passwords until postern blocks the address, list and remove the block.

The gateway listens on ports 2525 (smtp), 2587 (submission), 1143 (imap),
1110 (pop3) and 8080 (web). --base-port N uses N to N+4 instead, and
--base-port 0 any free ports. Ctrl-C stops everything; a temporary
directory is removed, a --dir is kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.postern = posternCommand()
			return runDemo(ctx, o, cmd.OutOrStdout(), cmd.ErrOrStderr(), nil)
		},
	}
	cmd.Flags().StringVar(&o.host, "listen-host", o.host, "IPv4 loopback address the gateway and the backends listen on")
	cmd.Flags().IntVar(&o.basePort, "base-port", o.basePort, "first of five consecutive gateway ports (smtp, submission, imap, pop3, web); 0: any free ports (default 2525, 2587, 1143, 1110, 8080)")
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory for the configuration and state (default: a temporary directory, removed at the end)")
	return cmd
}

// posternCommand is how a user reruns this program from a shell: "go run
// ./cmd/postern" when started by go run, else the path it was started as.
func posternCommand() string {
	if a := os.Args[0]; a != "" && !strings.Contains(a, "go-build") {
		return a
	}
	return "go run ./cmd/postern"
}

// runDemo runs the demo until ctx is done. The steps go to stdout, the
// gateway's and backends' logs to logw; ready, if not nil, is called with
// the running gateway once the steps are printed.
func runDemo(ctx context.Context, o demoOptions, stdout, logw io.Writer, ready func(demo.Gateway)) (err error) {
	host, err := netip.ParseAddr(o.host)
	if err != nil || !host.Is4() || !host.IsLoopback() {
		return fmt.Errorf("demo: --listen-host %q: want an IPv4 loopback address such as 127.0.0.1 (the demo plays other clients from 127.0.0.2, 127.0.0.66 and 127.0.1.1)", o.host)
	}
	var ports [5]int
	switch {
	case o.basePort < 0:
		ports = demoPorts
	case o.basePort == 0:
	case o.basePort+len(ports)-1 > 65535:
		return fmt.Errorf("demo: --base-port %d: the five ports must be at most 65535", o.basePort)
	default:
		for i := range ports {
			ports[i] = o.basePort + i
		}
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "postern-demo-"); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	lw := &lockedWriter{w: logw}
	backends, err := demo.Start(ctx, demo.Options{Host: host, Logger: slog.New(slog.NewTextHandler(lw, nil))})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer backends.Close()
	at := func(i int) string { return netip.AddrPortFrom(host, uint16(ports[i])).String() }
	path, err := demo.WriteConfig(dir, demo.Listen{SMTP: at(0), Submission: at(1), IMAP: at(2), POP3: at(3), Web: at(4)}, backends)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}

	// serve logs "listening service=… addr=…" for each bound front-end and
	// then "postern running": the actual ports come from there.
	watch := newListenWatch(lw)
	serveCtx, stopServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(serveCtx, path, watch, nil) }()
	// Whatever happens below, the gateway stops before the backends close.
	running := true
	defer func() {
		stopServe()
		if running {
			<-served
		}
	}()
	select {
	case err := <-served:
		running = false
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("demo: %w\n(a demo port is taken: choose others with --base-port N, which uses N to N+4, or --base-port 0 for any free ports)", err)
		}
		if err == nil {
			return nil // ctx was done before the gateway was up
		}
		return fmt.Errorf("demo: %w", err)
	case addrs := <-watch.ready:
		g := demo.Gateway{Config: path, Postern: o.postern}
		g.SMTP = addrs["smtp"]
		g.Submission = addrs["submission"]
		g.IMAP = addrs["imap"]
		g.POP3 = addrs["pop3"]
		if a, ok := addrs["web"]; ok {
			g.Web = "http://" + a.String()
		}
		var buf bytes.Buffer
		demo.Print(&buf, g, dir)
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if ready != nil {
			ready(g)
		}
	}
	err = <-served
	running = false
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if o.dir == "" {
		fmt.Fprintf(stdout, "postern demo stopped; %s removed.\n", dir)
	} else {
		fmt.Fprintf(stdout, "postern demo stopped; its configuration and block store stay in %s.\n", dir)
	}
	return nil
}

// lockedWriter serialises the writes of the gateway's and the backends'
// loggers.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var (
	listeningLine = regexp.MustCompile(`msg=listening service=(\S+) addr=(\S+)`)
	runningLine   = regexp.MustCompile(`msg="postern running"`)
)

// listenWatch passes the gateway's log on and picks the bound addresses
// out of it; ready delivers them once postern is running.
type listenWatch struct {
	w     io.Writer
	ready chan map[string]netip.AddrPort

	mu    sync.Mutex
	buf   []byte
	addrs map[string]netip.AddrPort
	done  bool
}

func newListenWatch(w io.Writer) *listenWatch {
	return &listenWatch{w: w, ready: make(chan map[string]netip.AddrPort, 1), addrs: make(map[string]netip.AddrPort)}
}

func (l *listenWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	if !l.done {
		l.buf = append(l.buf, p...)
		for {
			i := bytes.IndexByte(l.buf, '\n')
			if i < 0 || l.done {
				break
			}
			line := l.buf[:i]
			if m := listeningLine.FindSubmatch(line); m != nil {
				if ap, err := netip.ParseAddrPort(string(m[2])); err == nil {
					l.addrs[string(m[1])] = ap
				}
			} else if runningLine.Match(line) {
				l.done = true
				l.ready <- l.addrs
			}
			l.buf = l.buf[i+1:]
		}
		if l.done {
			l.buf = nil
		}
	}
	l.mu.Unlock()
	return l.w.Write(p)
}
