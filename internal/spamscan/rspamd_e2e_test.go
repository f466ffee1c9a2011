package spamscan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rspamdConf is the top-level configuration of the test's rspamd: the stock
// rules from $CONFDIR (/etc/rspamd), minimal options, console logging and a
// single normal worker. %[1]s is the listen address, %[2]s the hyperscan
// cache directory.
const rspamdConf = `# postern test rspamd: stock rules, one normal worker, no network.
.include "$CONFDIR/common.conf"

options {
    pidfile = "$RUNDIR/rspamd.pid";
    filters = "chartable,regexp";
    url_tld = "${SHAREDIR}/effective_tld_names.dat";
    hs_cache_dir = "%[2]s";
    allow_raw_input = true;
    task_timeout = 8s;
    dns {
        nameserver = ["127.0.0.1:9"];
        timeout = 100ms;
        retransmits = 1;
    }
}

logging {
    type = "console";
    level = "warning";
}

worker "normal" {
    bind_socket = "%[1]s";
    count = 1;
    mime = true;
}
`

// rspamdDisabled are the modules whose results depend on working DNS or the
// network; the test's rspamd has neither.
var rspamdDisabled = []string{"hfilter", "rbl", "asn", "spf", "dkim", "dmarc", "arc", "mx_check", "url_redirector", "fuzzy_check"}

// startRspamd starts rspamd in the foreground on a free port of 127.0.0.1
// with a configuration directory of its own, waits (at most 60 s) until it
// answers /ping, and kills it when the test ends. It returns the base URL.
func startRspamd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		bin = installRspamd(t)
	}
	dir := t.TempDir()
	cacheDir := os.Getenv("POSTERN_RSPAMD_CACHE")
	if cacheDir == "" {
		if base, err := os.UserCacheDir(); err == nil {
			cacheDir = filepath.Join(base, "postern-test", "rspamd-hs")
		} else {
			cacheDir = filepath.Join(dir, "hs")
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	if err := os.WriteFile(filepath.Join(dir, "rspamd.conf"), fmt.Appendf(nil, rspamdConf, addr, cacheDir), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "local.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, m := range rspamdDisabled {
		if err := os.WriteFile(filepath.Join(dir, "local.d", m+".conf"), []byte("enabled = false;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	args := []string{"-f", "-c", filepath.Join(dir, "rspamd.conf"),
		"--var=CONFDIR=/etc/rspamd", "--var=LOCAL_CONFDIR=" + dir,
		"--var=DBDIR=" + dir, "--var=RUNDIR=" + dir, "--var=LOGDIR=" + dir}
	if os.Geteuid() == 0 {
		args = append(args, "-i") // let the workers run as root
	}
	logFile, err := os.Create(filepath.Join(dir, "rspamd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// rspamd forks workers: give it a process group of its own so that
	// the fallback kill reaches them too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting rspamd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when rspamd does; the cleanup makes sure it does
	logTail := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "rspamd.log"))
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		return string(b)
	}
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
		// Workers outliving the main process would keep the port.
		syscall.Kill(-pgid, syscall.SIGKILL)
	})

	url := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := start.Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("rspamd exited during start-up (%v); log:\n%s", err, logTail())
		default:
		}
		if resp, err := client.Get(url + "/ping"); err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.HasPrefix(string(body), "pong") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rspamd did not answer /ping within 60 s; log:\n%s", logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("rspamd started in %v on %s (hyperscan cache %s)", time.Since(start).Round(time.Millisecond), addr, cacheDir)
	return url
}

// installRspamd installs Debian's rspamd package when the test runs as
// root, without letting the package start a system daemon, and returns the
// binary's path. Without root it fails the test with what to install.
func installRspamd(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("rspamd is not installed and the test is not root: apt-get install --no-install-recommends rspamd (see doc.go)")
	}
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\n# postern test: no daemon starts during apt-get install\nexit 101\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(policy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	for _, args := range [][]string{
		{"update", "-qq", "-o", "DPkg::Lock::Timeout=180"},
		// Another test binary may be installing its own packages.
		{"install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=180", "rspamd"},
	} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		t.Fatalf("rspamd still missing after apt-get install: %v", err)
	}
	t.Logf("installed rspamd in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// freePort returns a 127.0.0.1 address with a port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// readMessage reads a testdata message with CRLF line ends, whatever the
// checkout did to them.
func readMessage(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// TestRspamdEndToEnd scans GTUBE and a clean message with a real rspamd.
func TestRspamdEndToEnd(t *testing.T) {
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("set POSTERN_E2E=1 to run against a real rspamd")
	}
	url := startRspamd(t)
	s := NewRspamd(url, RspamdOptions{Timeout: 20 * time.Second, MaxSize: 10 << 20})
	scan := func(name, from string, viaSpool bool) Verdict {
		t.Helper()
		msg := readMessage(t, name)
		m := Message{
			Body: bytes.NewReader(msg), Size: int64(len(msg)),
			From: from, Rcpt: []string{"rcpt@example.com", "bob@example.com"},
			IP: netip.MustParseAddr("203.0.113.7"), Helo: "mail.example.org", QueueID: "E2E1",
		}
		if viaSpool {
			sp := NewSpool(t.TempDir(), 64)
			defer sp.Close()
			sp.Write(msg)
			m.Body, m.Size = sp, sp.Size()
		}
		start := time.Now()
		v, err := s.Scan(context.Background(), m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Logf("%s (from %q): score %.2f / %.2f, action %q, %v, in %v", name, from, v.Score, v.Threshold, v.Action, v.Symbols, time.Since(start).Round(time.Millisecond))
		return v
	}

	v := scan("gtube.eml", "sender@example.org", false)
	// rspamd answers GTUBE with action reject and the reject threshold as
	// the score (15 with the stock actions).
	if v.Score < 15 || v.Action != "reject" || !slices.Contains(v.Symbols, "GTUBE") || v.Threshold != 15 {
		t.Errorf("GTUBE: %+v, want score >= 15, action reject, symbol GTUBE", v)
	}
	v = scan("gtube.eml", "sender@example.org", true)
	if v.Score < 15 || v.Action != "reject" {
		t.Errorf("GTUBE from a spool: %+v", v)
	}

	for _, from := range []string{"alice@example.org", ""} {
		v = scan("clean.eml", from, false)
		if v.Score >= 5 || v.Action != "no action" || v.Threshold != 15 {
			t.Errorf("clean message from %q: %+v, want score < 5, no action", from, v)
		}
	}

	// rspamd's own error answer comes back as an error, not a verdict.
	bad := NewRspamd(url+"/nonexistent", RspamdOptions{Timeout: 5 * time.Second})
	msg := readMessage(t, "clean.eml")
	if _, err := bad.Scan(context.Background(), Message{Body: bytes.NewReader(msg), Size: int64(len(msg))}); err == nil {
		t.Error("no error for an unknown rspamd path")
	} else {
		t.Logf("unknown path: %v", err)
	}

	// A scan that rspamd cannot finish in time is a timeout error.
	slow := NewRspamd(url, RspamdOptions{Timeout: time.Nanosecond})
	if _, err := slow.Scan(context.Background(), Message{Body: bytes.NewReader(msg), Size: int64(len(msg))}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("1ns timeout: %v", err)
	}
}
