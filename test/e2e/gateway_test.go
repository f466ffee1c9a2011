package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// gwHost is postern's name in its own replies (services' hostname:).
const gwHost = "gw.e2e.test"

// gwConfig is what differs between the gateways the tests start.
type gwConfig struct {
	Backend     string // the real server of every service (host:port)
	Submission  string // submission's backend if different
	Rspamd      string // spam.rspamd URL; "" no scanning
	DNS         string // dns.resolver; "" no DNSBL
	BackendWait string // timeouts.backend (default 5s)

	// IMAP and POP3 (imap_test.go). With IMAP set, the gateway also runs
	// imap (STARTTLS) → IMAP and imaps → IMAPS; with POP3 set, pop3 (STLS)
	// → POP3 and pop3s → POP3S. Each has grant "[GeoIP_MY]" (the zone
	// file testdata/my.zone) and plaintext_login "[PlainOK]".
	IMAP, IMAPS string // Dovecot's PROXY ports (IMAPS: implicit TLS, backend_tls: tls)
	POP3, POP3S string
	CloseAll    bool // intrusion_prevention.close_all
	// DefaultDomain is logins.default_domain ("": none).
	DefaultDomain string
	// Metrics turns the metrics listener on (gateway.Metrics); Env is
	// added to postern's environment (NOTIFY_SOCKET).
	Metrics bool
	Env     []string
}

// gateway is one running `postern serve`.
type gateway struct {
	dir, cfg, logPath string
	SMTP, Submission  string // 127.0.0.1:port, STARTTLS
	SMTPS             string // implicit TLS
	IMAP, POP3        string // STARTTLS / STLS; "" when not configured
	IMAPS, POP3S      string // implicit TLS
	Metrics           string // the metrics listener; "" when off
	CertFile          string
	cmd               *exec.Cmd
	exited            chan struct{}
	waitErr           error
}

// The intrusion prevention settings of every gateway: each trigger on,
// with small thresholds.
const ipsConfig = `intrusion_prevention:
  block_minutes: 240
  imap_pop3:
    failed_logins: 3
  smtp:
    connections_per_minute: 5
    failed_logins: 3
    unknown_recipients: 3
    relay_denials: 3
    rset_count: 3
    spam_score: 10
    dnsbl: [` + dnsblZone + `]
    message_size: 2MB
    tarpit_accounts: "trap@example.test"
    content_rules: true
`

// Content rules (C).
const contentRules = `content_rules:
  - { name: casino-subject, header: "^Subject:.*CASINO-E2E" }
  - { name: wire-fraud-body, body: "WIRE-THE-MONEY-E2E" }
`

// startGateway writes a configuration into a temporary folder and runs
// `postern serve` on it until the test ends (SIGTERM, bounded wait). It
// retries with other ports if one of the picked ports was taken meanwhile.
func startGateway(t *testing.T, c gwConfig) *gateway {
	t.Helper()
	bin := posternBinary(t)
	dir := t.TempDir()
	certFile, keyFile, err := tlsconf.SelfSigned(dir, []string{gwHost, "localhost", "127.0.0.1", "::1"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The admin socket lives in a short folder: unix socket paths are
	// limited to 107 bytes and t.TempDir() names can be long.
	sockDir, err := os.MkdirTemp("", "pe2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	for attempt := 1; ; attempt++ {
		g, err := tryGateway(t, bin, dir, sockDir, certFile, keyFile, c, attempt)
		if err == nil {
			return g
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("postern serve: %v", err)
		}
		t.Logf("postern serve, attempt %d: %v; retrying with other ports", attempt, err)
	}
}

func tryGateway(t *testing.T, bin, dir, sockDir, certFile, keyFile string, c gwConfig, attempt int) (*gateway, error) {
	mail := c.IMAP != "" || c.POP3 != ""
	ports := freePorts(t, 3+4*btoi(mail)+btoi(c.Metrics))
	g := &gateway{
		dir:        dir,
		cfg:        filepath.Join(dir, fmt.Sprintf("postern-%d.yaml", attempt)),
		logPath:    filepath.Join(dir, fmt.Sprintf("postern-%d.log", attempt)),
		SMTP:       ports[0],
		Submission: ports[1],
		SMTPS:      ports[2],
		CertFile:   certFile,
		exited:     make(chan struct{}),
	}
	wait := c.BackendWait
	if wait == "" {
		wait = "5s"
	}
	sub := c.Submission
	if sub == "" {
		sub = c.Backend
	}
	svc := func(name, listen, backend string) string {
		return fmt.Sprintf("  %s: { listen: %q, backend: %q, backend_proxy: v2, hostname: %s,\n"+
			"    tls: { cert: %q, key: %q }, timeouts: { data: 2s, connect: 2s, backend: %s } }\n",
			name, listen, backend, gwHost, certFile, keyFile, wait)
	}
	// IMAP and POP3: a country grant, plaintext login for some networks,
	// a 2 s pre-login idle timeout (for the bad-input tests).
	mailSvc := func(name, listen, backend string, backendTLS bool) string {
		if backend == "" {
			return ""
		}
		extra := ""
		if backendTLS {
			extra = "backend_tls: tls, backend_tls_verify: false, "
		}
		return fmt.Sprintf("  %s: { listen: %q, backend: %q, backend_proxy: v2, %sgrant: \"[GeoIP_MY]\",\n"+
			"    plaintext_login: \"[PlainOK]\", tls: { cert: %q, key: %q }, timeouts: { command: 2s, connect: 2s, backend: %s } }\n",
			name, listen, backend, extra, certFile, keyFile, wait)
	}
	var b strings.Builder
	if mail {
		g.IMAP, g.IMAPS, g.POP3, g.POP3S = ports[3], ports[4], ports[5], ports[6]
		fmt.Fprintf(&b, "geoip:\n  databases:\n    - path: %q\n", filepath.Join(moduleRoot, "test", "e2e", "testdata", "my.zone"))
		b.WriteString("patterns:\n  GeoIP_MY: \"country:MY\"\n  PlainOK: \"" + plaintextOK + "\"\n")
	}
	b.WriteString("services:\n")
	b.WriteString(svc("smtp", g.SMTP, c.Backend))
	b.WriteString(svc("submission", g.Submission, sub))
	b.WriteString(svc("smtps", g.SMTPS, c.Backend))
	if mail {
		b.WriteString(mailSvc("imap", g.IMAP, c.IMAP, false))
		b.WriteString(mailSvc("imaps", g.IMAPS, c.IMAPS, true))
		b.WriteString(mailSvc("pop3", g.POP3, c.POP3, false))
		b.WriteString(mailSvc("pop3s", g.POP3S, c.POP3S, true))
	}
	b.WriteString(`trusted_upstreams: "127.0.0.1"` + "\n")
	b.WriteString(`local_domains: "example.test; other.test"` + "\n")
	b.WriteString("login_restrictions:\n  - \"@other.test=203.0.113.0/24\"\n")
	if c.DefaultDomain != "" {
		fmt.Fprintf(&b, "logins: { default_domain: %q }\n", c.DefaultDomain)
	}
	if c.DNS != "" {
		fmt.Fprintf(&b, "dns: { resolver: %q, timeout: 1s }\n", c.DNS)
	}
	if c.Rspamd != "" {
		fmt.Fprintf(&b, "spam: { rspamd: %q, timeout: 10s }\n", c.Rspamd)
	}
	b.WriteString(contentRules)
	b.WriteString(ipsConfig)
	if c.CloseAll {
		b.WriteString("  close_all: true\n")
	}
	fmt.Fprintf(&b, "store: { path: %q }\n", filepath.Join(dir, "state", "postern.db"))
	fmt.Fprintf(&b, "admin: { listen: \"unix:%s\", token_file: %q }\n",
		filepath.Join(sockDir, fmt.Sprintf("admin-%d.sock", attempt)), filepath.Join(dir, "state", "admin.token"))
	b.WriteString("node: e2e-node\nlog: { level: debug }\n")
	switch os.Getenv("POSTERN_TEST_EVENT_LOOPS") {
	case "0":
		b.WriteString("event_loops: false\n") // every session on a goroutine of its own
	case "1":
		b.WriteString("event_loops: true\n") // the default on Linux, said
	}
	if c.Metrics {
		g.Metrics = ports[len(ports)-1]
		fmt.Fprintf(&b, "metrics: { listen: %q }\n", g.Metrics)
	}
	if err := os.WriteFile(g.cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	g.cmd = exec.Command(bin, "serve", "-c", g.cfg)
	g.cmd.Stdout, g.cmd.Stderr = logf, logf
	if len(c.Env) > 0 {
		g.cmd.Env = append(os.Environ(), c.Env...)
	}
	g.cmd.Dir = dir
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.waitErr = g.cmd.Wait()
		close(g.exited)
	}()
	sock := filepath.Join(sockDir, fmt.Sprintf("admin-%d.sock", attempt))
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-g.exited:
			return nil, fmt.Errorf("exited during start-up (%v):\n%s", g.waitErr, g.logTail(40))
		default:
		}
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			g.cmd.Process.Kill()
			<-g.exited
			return nil, fmt.Errorf("admin socket %s not up after 30s:\n%s", sock, g.logTail(40))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() { g.stop(t) })
	return g, nil
}

// stop ends postern with SIGTERM and checks that it stopped cleanly; the
// log goes into the test output when the test failed.
func (g *gateway) stop(t *testing.T) {
	select {
	case <-g.exited:
		t.Errorf("postern serve had exited before the end of the test: %v", g.waitErr)
	default:
		g.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.exited:
			if g.waitErr != nil {
				t.Errorf("postern serve exited with %v after SIGTERM", g.waitErr)
			}
		case <-time.After(40 * time.Second):
			g.cmd.Process.Kill()
			<-g.exited
			t.Errorf("postern serve did not stop within 40s of SIGTERM")
		}
	}
	log := g.logTail(0)
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(log, bad) {
			t.Errorf("postern's log has %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("postern log (%s), last lines:\n%s", g.logPath, g.logTail(120))
	}
}

// logTail returns the last n lines of postern's log (n ≤ 0: all of it).
func (g *gateway) logTail(n int) string {
	b, err := os.ReadFile(g.logPath)
	if err != nil {
		return err.Error()
	}
	if n <= 0 {
		return string(b)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// logLines polls postern's log until it holds at least n lines with every
// one of subs, for up to 5 s, and returns the lines it holds then:
// postern serve writes its log in batches, up to 50 ms late.
func (g *gateway) logLines(n int, subs ...string) []string {
	var got []string
	poll(5*time.Second, func() bool { got = linesWith(g.logTail(0), subs...); return len(got) >= n })
	return got
}

// logContains polls postern's log for substr.
func (g *gateway) logContains(substr string, timeout time.Duration) bool {
	return poll(timeout, func() bool { return strings.Contains(g.logTail(0), substr) })
}

// running reports whether the postern process is still up.
func (g *gateway) running() bool {
	select {
	case <-g.exited:
		return false
	default:
		return true
	}
}

// block is one entry of `postern blocks list --json`.
type block struct {
	Target     string `json:"target"`
	Reason     string `json:"reason"`
	ReasonName string `json:"reason_name"`
	Service    string `json:"service"`
	Detail     string `json:"detail"`
	Hits       int64  `json:"hits"`
	Node       string `json:"node"`
	By         string `json:"by"`
	Expired    bool   `json:"expired"`
}

// blocks runs `postern blocks list -c CFG --json` (the real CLI against
// the running gateway's API) and returns the blocks by target.
func (g *gateway) blocks(t testing.TB) map[string]block {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, posternBinary(t), "blocks", "list", "-c", g.cfg, "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("postern blocks list --json: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var resp struct {
		Blocks []block `json:"blocks"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &resp); err != nil {
		t.Fatalf("postern blocks list --json: %v\n%s", err, stdout.String())
	}
	m := make(map[string]block, len(resp.Blocks))
	for _, b := range resp.Blocks {
		m[b.Target] = b
	}
	return m
}

// noBlock fails the test if target is blocked.
func (g *gateway) noBlock(t testing.TB, target string) {
	t.Helper()
	if b, ok := g.blocks(t)[target]; ok {
		t.Fatalf("%s is blocked before its threshold: %+v", target, b)
	}
}

// wantBlock checks the block of target in `postern blocks list --json`.
// detail "" means the block must have an empty detail; a detail ending in
// "*" is a prefix.
func (g *gateway) wantBlock(t testing.TB, target, reason, service, detail string) block {
	t.Helper()
	var b block
	var ok bool
	// The block is stored before the client hears about it; the short
	// poll only covers the CLI's own start.
	poll(5*time.Second, func() bool { b, ok = g.blocks(t)[target]; return ok })
	if !ok {
		t.Fatalf("%s is not in postern blocks list (want reason %s)", target, reason)
	}
	detailOK := b.Detail == detail
	if p, isPrefix := strings.CutSuffix(detail, "*"); isPrefix {
		detailOK = strings.HasPrefix(b.Detail, p)
	}
	if b.Reason != reason || b.Service != service || !detailOK || b.By != "engine" || b.Node != "e2e-node" || b.Expired {
		t.Fatalf("block of %s = %+v\nwant reason %s, service %s, detail %q, by engine, node e2e-node", target, b, reason, service, detail)
	}
	return b
}

// alive checks that postern is still running and its API still answers.
func (g *gateway) alive(t testing.TB) {
	t.Helper()
	if !g.running() {
		t.Fatalf("postern serve exited: %v\n%s", g.waitErr, g.logTail(40))
	}
	g.blocks(t)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// freePorts returns n "127.0.0.1:port" addresses that were free a moment
// ago (postern's configuration cannot say :0).
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out
}

// poll calls cond every 20 ms until it is true or timeout has passed.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(min(20*time.Millisecond, time.Until(deadline)))
	}
}
