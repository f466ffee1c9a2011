// Package rspamdtest starts Debian's rspamd for tests: the stock rules
// from /etc/rspamd, one normal worker on a free loopback port, no network
// (the modules whose results need DNS or the network are off, and its
// resolver points at a closed port), its log in its own directory, and a
// hyperscan cache kept between runs. How it is configured and why is in
// the package documentation of internal/spamscan.
package rspamdtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// conf is the top-level configuration: the stock rules from $CONFDIR
// (/etc/rspamd), minimal options, console logging and a single normal
// worker. %[1]s is the listen address, %[2]s the hyperscan cache directory.
const conf = `# postern test rspamd: stock rules, one normal worker, no network.
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

// disabled are the modules whose results depend on working DNS or the
// network; the test's rspamd has neither.
var disabled = []string{"hfilter", "rbl", "asn", "spf", "dkim", "dmarc", "arc", "mx_check", "url_redirector", "fuzzy_check"}

// Start starts rspamd in the foreground on a free port of 127.0.0.1 with
// a configuration directory of its own, into which it also writes extra
// (file names relative to that directory, its LOCAL_CONFDIR, e.g.
// "rspamd.local.lua", and their contents). It waits, at most 60 s (a
// first start on a machine compiles the hyperscan cache), until rspamd
// answers /ping, and stops its process group when the test ends. It
// returns rspamd's base URL. When rspamd is missing it installs Debian's
// package as root; as another user it fails the test with what to
// install.
func Start(t testing.TB, extra map[string]string) string {
	t.Helper()
	bin, err := exec.LookPath("rspamd")
	if err != nil {
		bin = install(t)
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
	for _, d := range []string{cacheDir, filepath.Join(dir, "local.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	addr := testenv.FreeAddr(t)
	files := map[string]string{"rspamd.conf": fmt.Sprintf(conf, addr, cacheDir)}
	for _, m := range disabled {
		files[filepath.Join("local.d", m+".conf")] = "enabled = false;\n"
	}
	for name, text := range extra {
		files[name] = text
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	args := []string{"-f", "-c", filepath.Join(dir, "rspamd.conf"),
		"--var=CONFDIR=/etc/rspamd", "--var=LOCAL_CONFDIR=" + dir,
		"--var=DBDIR=" + dir, "--var=RUNDIR=" + dir, "--var=LOGDIR=" + dir}
	if os.Geteuid() == 0 {
		args = append(args, "-i") // let the workers run as root
	}
	logPath := filepath.Join(dir, "rspamd.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// rspamd forks workers: a process group of its own lets the fallback
	// kill reach them too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting rspamd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when rspamd does; the cleanup makes sure it does
	logTail := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b[max(0, len(b)-4000):])
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
		syscall.Kill(-pgid, syscall.SIGKILL) // workers that outlived the main process would keep the port
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

// install installs Debian's rspamd package when the test runs as root,
// without letting the package start a system daemon, and returns the
// binary's path. Without root it fails the test with what to install.
func install(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("rspamd is not installed and the test is not root: apt-get install --no-install-recommends rspamd (see internal/spamscan's package documentation)")
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
