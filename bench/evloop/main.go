// Command evloop is a measuring instrument, not a part of postern: the
// cheapest relay a Go program can be, written twice — once as an event loop
// of its own (epoll, one loop per core, no goroutine per connection) and
// once as Go programs usually are (a goroutine per connection on the
// runtime's network poller). It does none of postern's checks: no policy,
// no parsing of mail commands, no deadlines, no logging. It answers one
// question: how much of the CPU postern spends beyond nginx's and haproxy's
// is the goroutine-per-connection model, and how much would an event loop
// of postern's own give back. With -login (loop modes) the imap service
// checks each login with postern's own engine in the loop's state machine
// (login_linux.go), and with -smtp-checks the smtp service relays command
// by command with postern's checks (smtp_linux.go), to measure what the
// checks cost apart from how postern's sessions are built.
//
// It reads the configuration bench/peers writes for postern and serves the
// same listeners, so that bench/peers measures it in postern's column in the
// same run as nginx and haproxy:
//
//	go build -o /tmp/evloop ./bench/evloop
//	printf '#!/bin/sh\nexec /tmp/evloop -mode loop "$@"\n' > /tmp/evloop-loop
//	sudo /tmp/benchpeers -postern /tmp/evloop-loop -only login,smtp,http
//
// Mail services are relayed as TCP: accept, connect to the backend, the
// PROXY v2 header with the client's address, then the bytes both ways with
// half-closes. Web services are relayed as HTTP/1.1 keep-alive: a request
// head without a body is passed to a backend connection of the client's
// own, the answer's head is read for its length (Content-Length or chunked) and
// passed back with its body. Anything else closes the connection. TLS
// listeners are relayed as TCP without TLS (their scenarios are not for
// this tool). See docs/benchmarks/issue17-evloop.md and
// docs/benchmarks/issue17-round28.md for what it measured.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/sdnotify"
)

// service is one listener and where it relays to.
type service struct {
	name    string
	listen  netip.AddrPort
	backend netip.AddrPort
	http    bool // HTTP/1.1 relay; else TCP with a PROXY v2 header
}

// config is the part of postern's configuration this tool reads.
type config struct {
	Services map[string]struct {
		Listen       string `yaml:"listen"`
		Backend      string `yaml:"backend"`
		BackendProxy string `yaml:"backend_proxy"`
	} `yaml:"services"`
}

// loadServices reads postern's configuration file at path: every service's
// listen address and backend (host:port literals; "http://host:port" for a
// web service).
func loadServices(path string) ([]service, error) {
	bs, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the configuration: %w", err)
	}
	var c config
	if err := yaml.Unmarshal(bs, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(c.Services) == 0 {
		return nil, fmt.Errorf("%s: no services", path)
	}
	var out []service
	for name, s := range c.Services {
		sv := service{name: name}
		if sv.listen, err = netip.ParseAddrPort(s.Listen); err != nil {
			return nil, fmt.Errorf("%s: service %s: listen: %w", path, name, err)
		}
		be, isHTTP := strings.CutPrefix(s.Backend, "http://")
		sv.http = isHTTP
		if sv.backend, err = netip.ParseAddrPort(strings.TrimSuffix(be, "/")); err != nil {
			return nil, fmt.Errorf("%s: service %s: backend: %w", path, name, err)
		}
		if !sv.http && s.BackendProxy != "v2" {
			return nil, fmt.Errorf("%s: service %s: only backend_proxy: v2 is relayed", path, name)
		}
		out = append(out, sv)
	}
	return out, nil
}

func main() {
	fs := flag.NewFlagSet("evloop", flag.ContinueOnError)
	mode := fs.String("mode", "loop", "loop (an epoll event loop per core, parked in the runtime's poller), loop-blocking (the same waiting in a blocking epoll_wait) goroutine (a goroutine per connection) or goroutine-own (a goroutine per connection on the program's own poller, every socket call raw)")
	login := fs.Bool("login", false, "loop modes: the imap service's sessions check their login as postern's do before relaying (postern's engine, the backend's greeting, LOGIN parsed and sent as AUTHENTICATE PLAIN, one log line a login on standard error)")
	smtpChecks := fs.Bool("smtp-checks", false, "loop modes: the smtp service's sessions are relayed command by command with postern's checks (postern's engine and address parser, EHLO filtered, the message's end found and its size counted, one log line a message)")
	logViaRuntime := fs.Bool("login-log-runtime", false, "-login: write the log lines through the runtime's entry for blocking system calls even to a pipe or a socket (by default raw there, as postern's log writer does)")
	costList := fs.String("costs", "", "loop modes: add, comma-separated, what postern's sessions on its event loops still pay: close and accept (through the runtime's entry for blocking system calls), handoff (connections accepted by a goroutine per listener and handed to a loop), stack (-login, -smtp-checks: each session's reads before it relays handled on a coroutine of its own, deep in its calls, as postern's sessions)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := setCosts(*costList); err != nil {
		fmt.Fprintln(os.Stderr, "evloop:", err)
		os.Exit(2)
	}
	// bench/peers runs "BIN serve -c FILE".
	args := fs.Args()
	if len(args) != 3 || args[0] != "serve" || args[1] != "-c" {
		fmt.Fprintln(os.Stderr, "usage: evloop [-mode loop|loop-blocking|goroutine|goroutine-own] [-login] [-smtp-checks] [-costs LIST] serve -c postern.yaml")
		os.Exit(2)
	}
	svcs, err := loadServices(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "evloop:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	costTimers(ctx)
	if *login || *smtpChecks {
		if err := startLoginChecks(ctx, args[2], *login, *smtpChecks, *logViaRuntime); err != nil {
			fmt.Fprintln(os.Stderr, "evloop:", err)
			os.Exit(1)
		}
	}
	switch *mode {
	case "loop", "loop-blocking":
		err = runLoops(ctx, svcs, runtime.GOMAXPROCS(0), *mode == "loop-blocking")
	case "goroutine":
		err = runGoroutines(ctx, svcs)
	case "goroutine-own":
		err = runOwn(ctx, svcs)
	default:
		err = fmt.Errorf("unknown -mode %q", *mode)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "evloop:", err)
		os.Exit(1)
	}
}

// ready tells bench/peers (or any service manager) that the listeners are
// bound, as postern serve does with READY=1 on NOTIFY_SOCKET; without
// NOTIFY_SOCKET it does nothing.
func ready() {
	if err := sdnotify.FromEnv().Ready("relaying"); err != nil {
		fmt.Fprintln(os.Stderr, "evloop: telling the service manager:", err)
	}
}
