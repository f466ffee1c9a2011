package e2e

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
)

// The test's rspamd, as in internal/spamscan (doc.go there): the stock
// rules, one normal worker, no network, no Redis; plus one rule of ours.
const rspamdConf = `# postern e2e rspamd: stock rules, one normal worker, no network.
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

// rspamdLua is LOCAL_CONFDIR/rspamd.local.lua: a message with the header
// "X-E2E-Spam-Score: N" gets a total score of exactly N (never above it:
// the last bit of floating-point rounding is taken off if need be), so the
// S trigger can be tested at its threshold.
const rspamdLua = `-- postern e2e: "X-E2E-Spam-Score: N" makes the total score N.
local sym = 'POSTERN_E2E_SCORE'
rspamd_config:register_symbol({
  name = sym,
  type = 'postfilter',
  priority = 10,
  callback = function(task)
    local want = tonumber(task:get_header('X-E2E-Spam-Score') or '')
    if not want then return end
    local cur = task:get_metric_score('default')[1]
    local w = want - cur
    while cur + w > want do w = w - 1e-12 end
    task:insert_result(sym, w)
  end,
})
rspamd_config:set_metric_symbol({ name = sym, score = 1.0, group = 'postern_e2e',
  description = 'postern e2e: exact total score' })
`

var rspamdDisabled = []string{"hfilter", "rbl", "asn", "spf", "dkim", "dmarc", "arc", "mx_check", "url_redirector", "fuzzy_check"}

// startRspamd starts rspamd on a free port of 127.0.0.1, waits (at most
// 60 s: the first start on a machine compiles the hyperscan cache) until
// it answers /ping, and stops its process group when the test ends.
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
			cacheDir = filepath.Join(base, "postern-test", "rspamd-hs") // shared with internal/spamscan
		} else {
			cacheDir = filepath.Join(dir, "hs")
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "local.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := freePorts(t, 1)[0]
	files := map[string]string{
		"rspamd.conf":      fmt.Sprintf(rspamdConf, addr, cacheDir),
		"rspamd.local.lua": rspamdLua,
	}
	for _, m := range rspamdDisabled {
		files[filepath.Join("local.d", m+".conf")] = "enabled = false;\n"
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
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its workers too
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting rspamd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
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
		syscall.Kill(-pgid, syscall.SIGKILL) // workers that outlived the main process
	})
	url := "http://" + addr
	client := &http.Client{Timeout: time.Second}
	deadline := start.Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
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
	t.Logf("rspamd started in %v on %s", time.Since(start).Round(time.Millisecond), addr)
	return url
}

// installRspamd installs Debian's rspamd (no recommends, no daemon start)
// when running as root, as internal/spamscan's test does.
func installRspamd(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("rspamd is not installed and the test is not root: apt-get install --no-install-recommends rspamd")
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
	for _, args := range [][]string{
		{"update", "-qq", "-o", "DPkg::Lock::Timeout=180"},
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
	return bin
}
