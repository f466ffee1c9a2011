// Package testenv gives end-to-end tests real mail backends: the Postfix and
// Dovecot of test/backends/, listening on 127.0.0.1 with PROXY-protocol and
// plain ports, three users and Maildir delivery. See docs/E2E.md.
//
// A package that uses it has
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
//
// and its tests call [Backends], which skips unless POSTERN_E2E=1 and starts
// the backends once for the whole test binary. Main stops them at the end.
//
// Test binaries run in parallel under "go test ./..."; each one takes a free
// slot (a flock on $TMPDIR/postern-e2e-<base>.lock) and gets its own
// instance on ports base+143, base+25, ... with base 12000, 13000, ... 19000.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Env describes running backends. Addresses are "127.0.0.1:port".
type Env struct {
	Dir string // the instance folder: configs, log/, mail/, tls/, backends.env

	IMAPProxy  string // Dovecot IMAP, PROXY header required (haproxy = yes)
	IMAPPlain  string // Dovecot IMAP, no header
	IMAPSProxy string // Dovecot IMAP, PROXY header, then implicit TLS
	POP3Proxy  string // Dovecot POP3, PROXY header required
	POP3Plain  string // Dovecot POP3, no header
	POP3SProxy string // Dovecot POP3, PROXY header, then implicit TLS
	LMTP       string // Dovecot LMTP (where Postfix delivers)
	SMTPProxy  string // Postfix smtpd, PROXY header required
	SMTPPlain  string // Postfix smtpd, no header; XCLIENT allowed from 127.0.0.0/8

	Users            map[string]string // address → password
	MessageSizeLimit int64             // Postfix message_size_limit, bytes
	CertFile         string            // PEM of the backends' self-signed certificate
	DovecotLog       string
	PostfixLog       string

	mailRoot string
	roots    *x509.CertPool
	scripts  string // test/backends, when this process started the backends
	stopOnce sync.Once
	stopErr  error
}

// Environment variables.
const (
	envE2E      = "POSTERN_E2E"          // "1" runs the end-to-end tests
	envAttach   = "POSTERN_E2E_BACKENDS" // DIR of backends started by hand: use them, never stop them
	envPortBase = "POSTERN_BACKENDS_PORT_BASE"
)

// Ports are base + these offsets (as in start.sh).
var portOffsets = []int{143, 144, 993, 110, 111, 995, 24, 25, 26}

const (
	firstBase, lastBase, baseStep = 12000, 19000, 1000
	startTimeout                  = 15 * time.Minute // a cold apt-get install included
	stopTimeout                   = 2 * time.Minute
	pollEvery                     = 20 * time.Millisecond
)

var (
	mainUsed  atomic.Bool
	startOnce sync.Once
	shared    *Env
	startErr  error
	startLog  string
	// slotLock holds this binary's slot until Main has stopped the
	// backends. It must stay reachable: a collected *os.File is closed by
	// its finalizer, which would release the lock.
	slotLock *os.File
)

// Backends returns the backends of this test binary, starting them on the
// first call. It skips the test unless POSTERN_E2E=1. With POSTERN_E2E=1 it
// fails the test (never skips) when the backends cannot run: not root, no
// free slot, or start.sh failed (its output is in the failure). It
// registers nothing on t: the backends live until [Main] stops them.
//
// With POSTERN_E2E_BACKENDS=DIR it uses backends already started by hand
// with test/backends/start.sh DIR, and never stops them.
func Backends(t testing.TB) *Env {
	t.Helper()
	if os.Getenv(envE2E) != "1" {
		t.Skip("end-to-end test: needs POSTERN_E2E=1 and root (docs/E2E.md)")
	}
	if !mainUsed.Load() {
		t.Fatal("testenv.Backends: this package needs func TestMain(m *testing.M) { testenv.Main(m) }, which stops the backends")
	}
	first := false
	startOnce.Do(func() {
		first = true
		shared, startLog, startErr = start()
	})
	if startErr != nil {
		t.Fatalf("testenv: the mail backends did not start: %v\n%s", startErr, startLog)
	}
	if first {
		t.Logf("testenv: backends in %s\n%s", shared.Dir, startLog)
	}
	return shared
}

// Main runs the tests and then stops the backends if this process started
// them. Use it as the package's TestMain.
func Main(m *testing.M) {
	mainUsed.Store(true)
	code := m.Run()
	if shared != nil {
		if err := shared.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if slotLock != nil {
		slotLock.Close()
	}
	os.Exit(code)
}

// Stop stops the backends if this process started them (it runs stop.sh),
// at most once. Main calls it; a test that calls it takes the backends away
// from every later test of the binary.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		if e.scripts == "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if out, err := run(ctx, filepath.Join(e.scripts, "stop.sh"), nil, e.Dir); err != nil {
			e.stopErr = fmt.Errorf("stop.sh %s: %v\n%s", e.Dir, err, out)
		}
	})
	return e.stopErr
}

func start() (*Env, string, error) {
	if dir := os.Getenv(envAttach); dir != "" {
		e, err := loadEnv(dir)
		if err != nil {
			return nil, "", fmt.Errorf("%s=%s: %v", envAttach, dir, err)
		}
		return e, "", nil
	}
	if os.Geteuid() != 0 {
		return nil, "", errors.New("POSTERN_E2E=1 needs root (Postfix and Dovecot switch users; missing packages are installed with apt-get): use sudo POSTERN_E2E=1 go test")
	}
	scripts, err := scriptsDir()
	if err != nil {
		return nil, "", err
	}
	bases := []int{}
	if v := os.Getenv(envPortBase); v != "" {
		b, err := strconv.Atoi(v)
		if err != nil || b < 1024 || b+1000 > 65535 {
			return nil, "", fmt.Errorf("%s=%q: want a number in 1024..64535", envPortBase, v)
		}
		bases = append(bases, b)
	} else {
		for b := firstBase; b <= lastBase; b += baseStep {
			bases = append(bases, b)
		}
	}
	var skipped []string
	for _, base := range bases {
		dir := instanceDir(base)
		lock, err := lockSlot(dir + ".lock")
		if errors.Is(err, errSlotBusy) {
			skipped = append(skipped, fmt.Sprintf("%d: held by another test binary", base))
			continue
		}
		if err != nil {
			return nil, "", err
		}
		// The slot is ours, so whatever runs from dir is a leftover of a
		// test binary that died without Main (a panic, a timeout, a
		// signal): stop it, then start clean.
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		out, err := run(ctx, filepath.Join(scripts, "stop.sh"), nil, dir)
		cancel()
		if err != nil {
			lock.Close()
			skipped = append(skipped, fmt.Sprintf("%d: could not stop the leftovers in %s: %v: %s",
				base, dir, err, strings.TrimSpace(out)))
			continue
		}
		if busy := busyPorts(base); len(busy) > 0 {
			lock.Close()
			skipped = append(skipped, fmt.Sprintf("%d: ports %v in use", base, busy))
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			lock.Close()
			return nil, "", err
		}
		e, out, err := startIn(scripts, dir, base)
		if err != nil {
			lock.Close()
			return nil, out, err
		}
		slotLock = lock
		stopOnSignal(e)
		return e, out, nil
	}
	return nil, "", fmt.Errorf("no free slot for the backends (%s); stop leftovers with test/backends/stop.sh %s",
		strings.Join(skipped, "; "), instanceDir(bases[0]))
}

// startIn runs start.sh for one slot.
func startIn(scripts, dir string, base int) (*Env, string, error) {
	env := []string{}
	for _, kv := range os.Environ() {
		// The port base decides every port; single-port overrides from the
		// caller's environment would break the slots apart.
		k, _, _ := strings.Cut(kv, "=")
		if k == envPortBase || (strings.HasPrefix(k, "POSTERN_BACKENDS_") && strings.HasSuffix(k, "_PORT")) {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, envPortBase+"="+strconv.Itoa(base))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	t0 := time.Now()
	out, err := run(ctx, filepath.Join(scripts, "start.sh"), env, dir)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%v (timed out after %v)", err, startTimeout)
		}
		return nil, out, fmt.Errorf("%s %s: %v", filepath.Join(scripts, "start.sh"), dir, err)
	}
	e, err := loadEnv(dir)
	if err != nil {
		return nil, out, err
	}
	e.scripts = scripts
	return e, out + fmt.Sprintf("(start.sh took %.2fs)", time.Since(t0).Seconds()), nil
}

// run runs a script with its output collected; daemons it starts have their
// own stdio (setsid, </dev/null, log files), so Wait does not hang on them.
func run(ctx context.Context, script string, env []string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, script, args...)
	cmd.Env = env // nil: this process's environment
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stopOnSignal stops the backends when the test binary is interrupted
// (Ctrl-C, a CI cancel), then exits. A -timeout panic is not a signal: its
// leftovers are stopped by the next test binary that takes the slot.
func stopOnSignal(e *Env) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-ch
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping the backends in %s\n", sig, e.Dir)
		if err := e.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "testenv:", err)
		}
		os.Exit(2)
	}()
}

// instanceDir is a short folder under os.TempDir() (unix socket paths
// inside it must stay under 108 bytes; start.sh allows 64 characters).
func instanceDir(base int) string {
	name := "postern-e2e-" + strconv.Itoa(base)
	if d := filepath.Join(os.TempDir(), name); len(d) <= 64 {
		return d
	}
	return filepath.Join("/tmp", name)
}

func busyPorts(base int) []int {
	var busy []int
	for _, off := range portOffsets {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
		if err != nil {
			busy = append(busy, base+off)
			continue
		}
		l.Close()
	}
	return busy
}

// scriptsDir finds test/backends: upwards from the working directory (go
// test runs in the package folder), else beside this source file.
func scriptsDir() (string, error) {
	var tried []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			s := filepath.Join(d, "test", "backends")
			if isFile(filepath.Join(s, "start.sh")) && isFile(filepath.Join(d, "go.mod")) {
				return s, nil
			}
			tried = append(tried, s)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		s := filepath.Join(filepath.Dir(file), "..", "..", "test", "backends")
		if isFile(filepath.Join(s, "start.sh")) {
			return filepath.Clean(s), nil
		}
		tried = append(tried, s)
	}
	return "", fmt.Errorf("cannot find test/backends/start.sh (looked in %s)", strings.Join(tried, ", "))
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// loadEnv reads DIR/backends.env, written by start.sh.
func loadEnv(dir string) (*Env, error) {
	b, err := os.ReadFile(filepath.Join(dir, "backends.env"))
	if err != nil {
		return nil, fmt.Errorf("%v (are the backends running? start.sh writes it last)", err)
	}
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		kv[strings.TrimPrefix(k, "POSTERN_BACKENDS_")] = strings.Trim(v, `"`)
	}
	var missing []string
	get := func(k string) string {
		v := kv[k]
		if v == "" {
			missing = append(missing, k)
		}
		return v
	}
	addr := func(k string) string { return net.JoinHostPort("127.0.0.1", get(k)) }
	e := &Env{
		Dir:        get("DIR"),
		IMAPProxy:  addr("IMAP_PROXY_PORT"),
		IMAPPlain:  addr("IMAP_PLAIN_PORT"),
		IMAPSProxy: addr("IMAPS_PROXY_PORT"),
		POP3Proxy:  addr("POP3_PROXY_PORT"),
		POP3Plain:  addr("POP3_PLAIN_PORT"),
		POP3SProxy: addr("POP3S_PROXY_PORT"),
		LMTP:       addr("LMTP_PORT"),
		SMTPProxy:  addr("SMTP_PROXY_PORT"),
		SMTPPlain:  addr("SMTP_PLAIN_PORT"),
		CertFile:   get("TLS_CERT"),
		DovecotLog: get("DOVECOT_LOG"),
		PostfixLog: get("POSTFIX_LOG"),
		mailRoot:   get("MAIL_ROOT"),
		Users:      map[string]string{},
	}
	e.MessageSizeLimit, _ = strconv.ParseInt(get("MESSAGE_SIZE_LIMIT"), 10, 64)
	for _, u := range strings.Fields(get("USERS")) {
		name, pass, _ := strings.Cut(u, ":")
		e.Users[name] = pass
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s/backends.env lacks %s", dir, strings.Join(missing, ", "))
	}
	pem, err := os.ReadFile(e.CertFile)
	if err != nil {
		return nil, err
	}
	e.roots = x509.NewCertPool()
	if !e.roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no certificate", e.CertFile)
	}
	return e, nil
}

// ClientTLS returns a client configuration that trusts only the backends'
// certificate. Names it is valid for: mx.example.test, localhost,
// 127.0.0.1 and ::1.
func (e *Env) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{RootCAs: e.roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// DialProxy connects to addr (one of the PROXY ports), sends a version 2
// header claiming the client src, and returns the connection, closed when
// the test ends. Its deadline is 30 s.
func (e *Env) DialProxy(t testing.TB, addr string, src netip.AddrPort) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	dst := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if _, err := c.Write(ProxyV2Header(src, dst)); err != nil {
		t.Fatalf("PROXY header to %s: %v", addr, err)
	}
	return c
}

// Maildir returns the Maildir folder of user (an address in Users):
// DIR/mail/<domain>/<local part>/Maildir, owned by vmail. It may not exist
// before the user's first message.
func (e *Env) Maildir(user string) string {
	local, domain, _ := strings.Cut(strings.ToLower(user), "@")
	return filepath.Join(e.mailRoot, domain, local, "Maildir")
}

// Messages returns the paths of the messages in user's INBOX (new/ and cur/),
// oldest first.
func (e *Env) Messages(user string) []string {
	type msg struct {
		path string
		mod  time.Time
	}
	var msgs []msg
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(e.Maildir(user), sub)
		ents, _ := os.ReadDir(dir)
		for _, de := range ents {
			if fi, err := de.Info(); err == nil && fi.Mode().IsRegular() {
				msgs = append(msgs, msg{filepath.Join(dir, de.Name()), fi.ModTime()})
			}
		}
	}
	slices.SortFunc(msgs, func(a, b msg) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	paths := make([]string, len(msgs))
	for i, m := range msgs {
		paths[i] = m.path
	}
	return paths
}

// WaitForMail waits until user has at least n messages and returns their
// paths, oldest first. It fails the test after timeout. The mailboxes are
// shared by every test of the binary: count first (len(e.Messages(user)))
// and wait for that plus yours, or use [Env.WaitForMessage].
func (e *Env) WaitForMail(t testing.TB, user string, n int, timeout time.Duration) []string {
	t.Helper()
	var msgs []string
	if poll(timeout, func() bool { msgs = e.Messages(user); return len(msgs) >= n }) {
		return msgs
	}
	t.Fatalf("%s has %d message(s) in %s after %v, want %d\npostfix log (last lines):\n%s",
		user, len(msgs), e.Maildir(user), timeout, n, tail(e.PostfixLog, 15))
	return nil
}

// WaitForMessage waits until one of user's messages contains text (say a
// unique Subject) and returns its path. It fails the test after timeout.
func (e *Env) WaitForMessage(t testing.TB, user, text string, timeout time.Duration) string {
	t.Helper()
	var found string
	seen := map[string]bool{}
	ok := poll(timeout, func() bool {
		for _, p := range e.Messages(user) {
			if seen[p] {
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				continue // moved from new/ to cur/ meanwhile: read next round
			}
			seen[p] = true
			if bytes.Contains(b, []byte(text)) {
				found = p
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no message with %q for %s in %s after %v\npostfix log (last lines):\n%s",
			text, user, e.Maildir(user), timeout, tail(e.PostfixLog, 15))
	}
	return found
}

// LogContains waits until the log of "dovecot" or "postfix" contains substr
// and reports whether it did within timeout. The logs are shared by every
// test of the binary (and kept from the start): use a client address or a
// text only your test produces, or [Env.LogMark] and [Env.LogContainsSince].
func (e *Env) LogContains(t testing.TB, which, substr string, timeout time.Duration) bool {
	t.Helper()
	return e.LogContainsSince(t, which, 0, substr, timeout)
}

// LogMark returns the current length of a log, for [Env.LogContainsSince].
func (e *Env) LogMark(t testing.TB, which string) int64 {
	t.Helper()
	fi, err := os.Stat(e.logPath(t, which))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogContainsSince is [Env.LogContains] for the part of the log written
// after mark.
func (e *Env) LogContainsSince(t testing.TB, which string, mark int64, substr string, timeout time.Duration) bool {
	t.Helper()
	path := e.logPath(t, which)
	if substr == "" {
		return true
	}
	var window []byte // the unread tail, plus len(substr)-1 bytes of what was read
	off := mark
	return poll(timeout, func() bool {
		f, err := os.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<40))
		if err != nil || len(b) == 0 {
			return false
		}
		off += int64(len(b))
		window = append(window, b...)
		if bytes.Contains(window, []byte(substr)) {
			return true
		}
		if keep := len(substr) - 1; len(window) > keep {
			window = append(window[:0], window[len(window)-keep:]...)
		}
		return false
	})
}

func (e *Env) logPath(t testing.TB, which string) string {
	t.Helper()
	switch which {
	case "dovecot":
		return e.DovecotLog
	case "postfix":
		return e.PostfixLog
	}
	t.Fatalf("testenv: unknown log %q (want \"dovecot\" or \"postfix\")", which)
	return ""
}

// poll calls cond every 20 ms until it is true or timeout has passed; cond
// runs at least once and once more at the deadline.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(min(pollEvery, time.Until(deadline)))
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago,
// for a server whose configuration cannot say :0 (nginx, postern serve,
// rspamd). Another process may take the port before the server binds it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
