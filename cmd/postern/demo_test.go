package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/postern/postern/internal/demo"
	"github.com/postern/postern/internal/tlsconf"
)

// runningDemo is a demo started by startDemo.
type runningDemo struct {
	g      demo.Gateway
	out    *syncBuffer // what the user sees on stdout
	logs   *syncBuffer // the gateway's and backends' log
	stop   context.CancelFunc
	done   chan error
	tmpdir string // TMPDIR during the run: the demo's directory is made in it
}

// startDemo runs postern demo on free ports with its directory in a short
// temporary directory, as a user would without --dir.
func startDemo(t *testing.T) *runningDemo {
	t.Helper()
	tmp, err := os.MkdirTemp("", "px")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	t.Setenv("TMPDIR", tmp)
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDemo{out: &syncBuffer{}, logs: &syncBuffer{}, stop: cancel, done: make(chan error, 1), tmpdir: tmp}
	ready := make(chan demo.Gateway, 1)
	go func() {
		d.done <- runDemo(ctx, demoOptions{host: "127.0.0.1", basePort: 0, postern: "go run ./cmd/postern"}, d.out, d.logs, func(g demo.Gateway) { ready <- g })
	}()
	select {
	case d.g = <-ready:
	case err := <-d.done:
		cancel()
		t.Fatalf("demo stopped before it was ready: %v\n%s", err, d.logs.String())
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatalf("demo not ready after 10s:\n%s", d.logs.String())
	}
	t.Cleanup(func() { d.shutdown(t) })
	return d
}

// shutdown stops the demo as Ctrl-C does and checks it ends cleanly.
func (d *runningDemo) shutdown(t *testing.T) {
	t.Helper()
	if d.stop == nil {
		return
	}
	d.stop()
	d.stop = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("demo ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop within 10s of its context ending")
	}
}

// stepCheck says what the output of a printed step must contain, by a
// word of its title.
var stepChecks = []struct {
	title  string
	exit   int // expected exit status of the command
	output []string
}{
	{"through the SMTP gateway", 0, []string{"250 2.0.0 OK: queued"}},
	{"curl sends mail", 0, nil},
	{"through submission", 0, []string{"235 2.0.0 Authentication succeeded", "250 2.0.0 OK: queued"}},
	{"over IMAP", 0, []string{"Subject: Hello through postern", "Received: from [127.0.0.1]"}},
	{"over POP3", 0, []string{"Subject: Hello through postern", "Received: from [127.0.0.1]"}},
	{"Log in to the webmail", 0, []string{"302 Found", "Location: /inbox"}},
	{"are in the Admins pattern", 0, []string{"200"}},
	{"postern answers 403", 0, []string{"403"}},
	{"refused at connect", 8, []string{"curl: (8)"}},
	{"Ask postern why", exitNo, []string{"127.0.1.1 is in no country", "decision  deny"}},
	{"his right password fails", 67, []string{"curl: (67) Login denied"}},
	{"Guess passwords", 8, []string{"curl: (67) Login denied\ncurl: (67) Login denied\ncurl: (67) Login denied\ncurl: (8)"}},
	{"See the block", 0, []string{demo.Guesser.String() + "  L failed logins  imap     account alice@example.com"}},
	{"Lift it", 0, []string{"removed 1 block"}},
}

// TestDemoPrintedStepsWork runs every printed command as printed: shell
// lines with bash (swaks, curl), postern lines through the CLI code path.
func TestDemoPrintedStepsWork(t *testing.T) {
	d := startDemo(t)
	steps := demo.Steps(d.g)
	if len(steps) != len(stepChecks) {
		t.Fatalf("%d steps, %d checks: keep stepChecks in step with demo.Steps", len(steps), len(stepChecks))
	}
	// What was printed is what is in use: every address in the output is
	// one of the gateway's, every step is printed.
	out := d.out.String()
	inUse := map[string]bool{d.g.SMTP.String(): true, d.g.Submission.String(): true, d.g.IMAP.String(): true, d.g.POP3.String(): true,
		strings.TrimPrefix(d.g.Web, "http://"): true}
	addrs := regexp.MustCompile(`127\.0\.\d+\.\d+:\d+`).FindAllString(out, -1)
	if len(addrs) < 10 {
		t.Fatalf("too few addresses printed:\n%s", out)
	}
	for _, a := range addrs {
		if !inUse[a] {
			t.Errorf("printed address %s is not one the gateway listens on (%v)", a, inUse)
		}
	}
	for _, st := range steps {
		if !strings.Contains(out, "\n"+st.Command+"\n") {
			t.Errorf("step not printed on a line of its own: %s", st.Command)
		}
	}
	if !strings.Contains(out, d.g.Config) || !strings.HasPrefix(d.g.Config, d.tmpdir) {
		t.Fatalf("config %s not printed or not in the temporary directory %s", d.g.Config, d.tmpdir)
	}

	for i, st := range steps {
		chk := stepChecks[i]
		if !strings.Contains(st.Title, chk.title) {
			t.Fatalf("step %d is %q, check is for %q", i+1, st.Title, chk.title)
		}
		var code int
		var output string
		if st.Postern != nil {
			var stdout, stderr string
			code, stdout, stderr = postern(t, st.Postern...)
			output = stdout + stderr
		} else {
			tool := strings.Fields(st.Command)[0]
			switch tool {
			case "printf", "for":
				tool = "curl"
			}
			if _, err := exec.LookPath(tool); err != nil {
				if chk.title == "Guess passwords" {
					t.Logf("step %d: %s not installed; guessing with a Go client instead", i+1, tool)
					guessIMAP(t, d.g.IMAP)
					continue
				}
				t.Logf("step %d skipped: %s not installed", i+1, tool)
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			b, err := exec.CommandContext(ctx, "bash", "-c", st.Command).CombinedOutput()
			cancel()
			output = string(b)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("step %d: %v", i+1, err)
			}
		}
		if code != chk.exit {
			t.Errorf("step %d (%s): exit status %d, want %d\n$ %s\n%s", i+1, st.Title, code, chk.exit, st.Command, output)
		}
		for _, want := range chk.output {
			if !strings.Contains(output, want) {
				t.Errorf("step %d (%s): output lacks %q\n$ %s\n%s", i+1, st.Title, want, st.Command, output)
			}
		}
	}
	// The log says what happened, in postern's words.
	for _, want := range []string{
		`msg="refused by a path rule" service=web client=127.0.0.2 path=/admin`,
		`msg="refused at connect" service=imap client=127.0.1.1`,
		`msg="login refused by the login IP restriction" service=imap client=127.0.0.2 account=bob@example.com`,
		`msg=blocked prefix=127.0.0.66/32 reason=L`,
		`msg="demo backend login" backend=imap user=alice@example.com client=127.0.0.66 ok=false`,
	} {
		if !strings.Contains(d.logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
	if strings.Contains(d.logs.String(), "client=127.0.1.1 ok=") {
		t.Error("the backend saw a login from the refused address")
	}
	dir := filepath.Dir(d.g.Config)
	d.shutdown(t)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the demo's temporary directory %s is left behind: %v", dir, err)
	}
	if !strings.Contains(d.out.String(), "postern demo stopped; "+dir+" removed.") {
		t.Errorf("no goodbye:\n%s", d.out.String())
	}
}

// guessIMAP sends wrong passwords from demo.Guesser until the connection
// is refused (the printed curl loop's equivalent).
func guessIMAP(t *testing.T, gw netip.AddrPort) {
	t.Helper()
	for i := range demo.FailedLogins + 1 {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(demo.Guesser, 0))}
		c, err := d.Dial("tcp", gw.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "a LOGIN alice@example.com guess-"+string(rune('1'+i))+"\r\nb LOGOUT\r\n")
		got, _ := io.ReadAll(c)
		c.Close()
		if i == demo.FailedLogins && !strings.HasPrefix(string(got), "* BYE") {
			t.Fatalf("connection %d after %d failures: want * BYE at connect, got %q", i+1, demo.FailedLogins, got)
		}
	}
}

// TestDemoWithOtherClients drives the demo with Python's smtplib, imaplib
// and poplib and with Go clients, and checks a block made over the web.
func TestDemoWithOtherClients(t *testing.T) {
	d := startDemo(t)
	alice, bob := demo.Users()[0], demo.Users()[1]

	// Go: submission with AUTH PLAIN (go-smtp's client).
	c, err := smtp.Dial(d.g.Submission.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewPlainClient("", bob.Name, bob.Password)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(bob.Name, []string{alice.Name}, strings.NewReader("Subject: from Go\r\n\r\nHello from go-smtp.\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	// Python: read it over IMAP and POP3, send one over SMTP.
	if _, err := exec.LookPath("python3"); err != nil {
		t.Log("python3 not installed: Python clients skipped")
	} else {
		script := `
import imaplib, poplib, smtplib, sys
host, smtp_port, imap_port, pop3_port, user, pw = sys.argv[1:]
s = smtplib.SMTP(host, int(smtp_port), timeout=10)
s.sendmail("carol@example.org", [user], b"Subject: from Python\r\n\r\nHello from smtplib.\r\n")
s.quit()
m = imaplib.IMAP4(host, int(imap_port), timeout=10)
m.login(user, pw)
m.select("INBOX")
typ, data = m.search(None, "ALL")
subjects = []
for n in data[0].split():
    typ, msg = m.fetch(n, "(BODY[HEADER.FIELDS (SUBJECT)])")
    subjects.append(msg[0][1].decode().strip())
m.logout()
print("imap:", " | ".join(subjects))
p = poplib.POP3(host, int(pop3_port), timeout=10)
p.user(user)
p.pass_(pw)
count, size = p.stat()
print("pop3:", count, b"\n".join(p.retr(count)[1]).decode().splitlines()[-1])
p.quit()
`
		host := d.g.IMAP.Addr().String()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := exec.CommandContext(ctx, "python3", "-c", script, host, port(d.g.SMTP), port(d.g.IMAP), port(d.g.POP3), alice.Name, alice.Password).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("python: %v\n%s", err, out)
		}
		for _, want := range []string{"imap: Subject: Welcome to the postern demo | Subject: from Go | Subject: from Python", "pop3: 3 Hello from smtplib."} {
			if !strings.Contains(string(out), want) {
				t.Errorf("python output lacks %q:\n%s", want, out)
			}
		}
	}

	// Go, web: wrong webmail passwords from the guesser end in a block.
	web := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(demo.Guesser, 0))}).DialContext}}
	var statuses []string
	for i := range demo.FailedLogins + 1 {
		resp, err := web.PostForm(d.g.Web+demo.LoginPath, url.Values{demo.UserField: {alice.Name}, demo.PasswordField: {"guess-" + string(rune('a'+i))}})
		if err != nil {
			statuses = append(statuses, "error")
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses = append(statuses, resp.Status)
	}
	if statuses[0] != "401 Unauthorized" || statuses[demo.FailedLogins] == "401 Unauthorized" {
		t.Errorf("web guesses: %v; want 401 until the block, then refused", statuses)
	}
	code, out, errOut := postern(t, "blocks", "list", "-c", d.g.Config, "--service", "web")
	if code != 0 || !strings.Contains(out, demo.Guesser.String()+"  L failed logins  web") {
		t.Fatalf("blocks list --service web: exit %d\n%s%s", code, out, errOut)
	}
}

func port(ap netip.AddrPort) string { return strings.TrimPrefix(ap.String(), ap.Addr().String()+":") }

func TestDemoFlags(t *testing.T) {
	ctx := context.Background()
	for _, host := range []string{"0.0.0.0", "::1", "192.0.2.1", "nonsense"} {
		err := runDemo(ctx, demoOptions{host: host, basePort: 0}, io.Discard, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "IPv4 loopback") {
			t.Errorf("--listen-host %s: %v", host, err)
		}
	}
	if err := runDemo(ctx, demoOptions{host: "127.0.0.1", basePort: 65533}, io.Discard, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "65535") {
		t.Errorf("--base-port 65533: %v", err)
	}
	// A taken port: a clear error naming the way out.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	dir, err := os.MkdirTemp("", "px")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	err = runDemo(ctx, demoOptions{host: "127.0.0.1", basePort: taken, dir: dir}, io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "--base-port") {
		t.Fatalf("taken port: %v", err)
	}
	// The command is registered and documented.
	code, out, _ := postern(t, "demo", "--help")
	if code != 0 || !strings.Contains(out, "--base-port") || !strings.Contains(out, "2525") {
		t.Fatalf("demo --help: %d\n%s", code, out)
	}
}

// TestExampleConfigChecks runs postern check on examples/postern.yaml, so
// the production example never rots: as shipped, the only errors are the
// certificate files this machine lacks; with its absolute paths moved into
// a temporary directory holding a certificate and a small country
// database, it passes without warnings.
func TestExampleConfigChecks(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "examples", "postern.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := postern(t, "check", "-c", filepath.Join("..", "..", "examples", "postern.yaml"))
	if code != exitError {
		t.Fatalf("check on the shipped example: exit %d\n%s", code, stderr)
	}
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if !strings.Contains(line, "/etc/postern/tls/") && !strings.HasSuffix(line, " errors") {
			t.Errorf("the shipped example has an error other than a missing certificate: %s", line)
		}
	}

	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock, err := os.MkdirTemp("", "px")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sock)
	for _, d := range []string{"tls", "lib/geoip"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cert, key, err := tlsconf.SelfSigned(filepath.Join(dir, "tls"), []string{"mail.example.com"}, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeMMDB(t, filepath.Join(dir, "lib", "geoip", "country.mmdb"), map[string]string{"175.139.0.0/16": "MY", "2001:e68::/32": "MY", "8.8.8.0/24": "US", "111.65.0.0/16": "SG"})
	text := strings.NewReplacer(
		"/etc/postern/tls/fullchain.pem", cert,
		"/etc/postern/tls/privkey.pem", key,
		"/var/lib/postern/", filepath.Join(dir, "lib")+"/",
		"/run/postern/", sock+"/",
		"run_as: postern ", "run_as: "+me.Username+" ", // check looks the user up
	).Replace(string(src))
	for _, line := range strings.Split(text, "\n") {
		if value, _, _ := strings.Cut(line, "#"); strings.Contains(value, "/etc/") || strings.Contains(value, "/var/") || strings.Contains(value, "/run/") {
			t.Fatalf("the example names a system path the test does not move: %s", line)
		}
	}
	writeFile(t, filepath.Join(dir, "postern.yaml"), text)
	bypass, err := os.ReadFile(filepath.Join("..", "..", "examples", "bypass.txt"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "bypass.txt"), string(bypass))
	code, stdout, stderr := postern(t, "check", "-c", filepath.Join(dir, "postern.yaml"), "--bind=false") // the standard ports may be taken here
	if code != 0 || stderr != "" {
		t.Fatalf("check: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"service   smtp       :25 -> 127.0.0.1:10025; open to all", "service   web        :443 -> http://127.0.0.1:8080; grant [Staff]; path /admin; path /installer",
		"ips       smtp       triggers", "login     *=[Staff]"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, stdout)
		}
	}
	// The example means what its comments say.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"--ip", "175.139.1.1", "--service", "imap"}, exitYes},                                  // Malaysia reads mail
		{[]string{"--ip", "8.8.8.8", "--service", "imap"}, exitNo},                                       // elsewhere does not
		{[]string{"--ip", "8.8.8.8", "--service", "smtp"}, exitYes},                                      // port 25 is open to all
		{[]string{"--ip", "175.139.1.1", "--service", "web", "--path", "/%61dmin/"}, exitNo},             // /admin for Admins only
		{[]string{"--ip", "198.51.100.7", "--service", "web", "--path", "/admin/"}, exitYes},             // the administrators reach it
		{[]string{"--ip", "203.0.113.9", "--service", "imap", "--account", "ceo@example.com"}, exitYes},  // the CEO from the office
		{[]string{"--ip", "175.139.1.1", "--service", "imap", "--account", "ceo@example.com"}, exitNo},   // but not from home
		{[]string{"--ip", "175.139.1.1", "--service", "imap", "--account", "user@example.net"}, exitNo},  // example.net: office only
		{[]string{"--ip", "175.139.1.1", "--service", "imap", "--account", "user@example.com"}, exitYes}, // everyone else from Staff
	} {
		code, out, errOut := postern(t, append([]string{"explain", "-c", filepath.Join(dir, "postern.yaml")}, c.args...)...)
		if code != c.code {
			t.Errorf("explain %v: exit %d, want %d\n%s%s", c.args, code, c.code, out, errOut)
		}
	}
}

// TestExampleServerConfigs checks that the Postfix and Dovecot snippets in
// examples/ parse with the real postconf and doveconf (when installed, as
// in CI) and point at the backends examples/postern.yaml relays to.
func TestExampleServerConfigs(t *testing.T) {
	ex := filepath.Join("..", "..", "examples")
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(ex, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	master, dovecot, roundcube := read("postfix/master.cf.snippet"), read("dovecot/conf.d/99-postern.conf"), read("roundcube/config.inc.php.snippet")
	// The Dovecot 2.4 file is the 2.3 one in 2.4's names: same listeners
	// and ports, auth_allow_cleartext for disable_plaintext_auth, listen
	// for address.
	dovecot24 := read("dovecot/conf.d/99-postern-2.4.conf")
	for _, want := range []string{"haproxy_trusted_networks = 127.0.0.1/32 ::1/128", "auth_allow_cleartext = yes",
		"inet_listener imap_postern {\n    listen = 127.0.0.1\n    port = 10143\n    haproxy = yes",
		"inet_listener pop3_postern {\n    listen = 127.0.0.1\n    port = 10110\n    haproxy = yes",
		"inet_listener imap_roundcube {\n    listen = 127.0.0.1\n    port = 10144", "unix_listener /var/spool/postfix/private/auth"} {
		if !strings.Contains(dovecot24, want) {
			t.Errorf("99-postern-2.4.conf lacks %q", want)
		}
	}
	var settings24 strings.Builder // without comments
	for _, l := range strings.Split(dovecot24, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			settings24.WriteString(l + "\n")
		}
	}
	for _, old := range []string{"disable_plaintext_auth", "address ="} {
		if strings.Contains(settings24.String(), old) {
			t.Errorf("99-postern-2.4.conf uses the 2.3 setting %q", old)
		}
	}
	for _, c := range []struct{ backend, where, text string }{
		{"127.0.0.1:10025", "master.cf", master},
		{"127.0.0.1:10587", "master.cf", master},
		{"port = 10143", "dovecot", dovecot},
		{"port = 10110", "dovecot", dovecot},
		{"port = 10144", "dovecot (for Roundcube)", dovecot},
		{"localhost:10144", "roundcube", roundcube},
		{"127.0.0.1:10588", "master.cf (for Roundcube)", master},
		{"localhost:10588", "roundcube", roundcube},
	} {
		if !strings.Contains(c.text, c.backend) {
			t.Errorf("%s does not have %s", c.where, c.backend)
		}
	}
	yaml := read("postern.yaml")
	for _, b := range []string{`backend: "127.0.0.1:10025"`, `backend: "127.0.0.1:10587"`, `backend: "127.0.0.1:10143"`, `backend: "127.0.0.1:10110"`, `backend: "http://127.0.0.1:8080"`} {
		if !strings.Contains(yaml, b) {
			t.Errorf("postern.yaml lacks %s", b)
		}
	}

	t.Run("postconf", func(t *testing.T) {
		if _, err := exec.LookPath("postconf"); err != nil {
			t.Skip("postconf not installed")
		}
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "main.cf"), read("postfix/main.cf.snippet"))
		writeFile(t, filepath.Join(dir, "master.cf"), master)
		out, err := exec.Command("postconf", "-c", dir, "-P").CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") {
			t.Fatalf("postconf -P: %v\n%s", err, out)
		}
		for _, want := range []string{"127.0.0.1:10025/inet/smtpd_upstream_proxy_protocol = haproxy", "127.0.0.1:10587/inet/smtpd_upstream_proxy_protocol = haproxy", "127.0.0.1:10587/inet/smtpd_sasl_auth_enable = yes"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("postconf -P lacks %q:\n%s", want, out)
			}
		}
		if out, err := exec.Command("postconf", "-c", dir, "-n").CombinedOutput(); err != nil || strings.Contains(string(out), "warning") || !strings.Contains(string(out), "inet_interfaces = loopback-only") {
			t.Fatalf("postconf -n: %v\n%s", err, out)
		}
	})
	t.Run("doveconf", func(t *testing.T) {
		if _, err := exec.LookPath("doveconf"); err != nil {
			t.Skip("doveconf not installed")
		}
		dir := t.TempDir()
		abs, err := filepath.Abs(filepath.Join(ex, "dovecot", "conf.d", "99-postern.conf"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "dovecot.conf"), "protocols = imap pop3\n!include "+abs+"\n")
		out, err := exec.Command("doveconf", "-c", filepath.Join(dir, "dovecot.conf"), "-n").CombinedOutput()
		if err != nil || strings.Contains(string(out), "Warning") || strings.Contains(string(out), "Error") {
			t.Fatalf("doveconf -n: %v\n%s", err, out)
		}
		for _, want := range []string{"haproxy_trusted_networks = 127.0.0.1/32 ::1/128", "inet_listener imap_postern {\n    address = 127.0.0.1\n    haproxy = yes\n    port = 10143", "inet_listener pop3_postern {\n    address = 127.0.0.1\n    haproxy = yes\n    port = 10110"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("doveconf -n lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestDemoStopsEverything checks that stopping the demo ends every
// goroutine it started: the gateway, its front-ends and the backends.
func TestDemoStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	d := startDemo(t)
	// One session through each mail service, ended by the client.
	for _, ap := range []netip.AddrPort{d.g.SMTP, d.g.Submission, d.g.IMAP, d.g.POP3} {
		c, err := net.DialTimeout("tcp", ap.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		if n, err := c.Read(buf); err != nil || n == 0 {
			t.Fatalf("%s: no greeting: %v", ap, err)
		}
		c.Close()
	}
	web := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := web.Get(d.g.Web + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	d.shutdown(t)
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the demo stopped, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestListenWatch checks the log reader that finds the bound addresses:
// lines split across writes, other lines passed through untouched.
func TestListenWatch(t *testing.T) {
	var out strings.Builder
	w := newListenWatch(&out)
	log := "time=x level=INFO msg=listening service=smtp addr=127.0.0.1:2525\n" +
		"time=x level=INFO msg=listening service=web addr=[::1]:8080\n" +
		"time=x level=WARN msg=\"something else\" addr=1.2.3.4:5\n" +
		"time=x level=INFO msg=\"postern running\" store=/x\n" +
		"time=x level=INFO msg=listening service=imap addr=127.0.0.1:1143\n"
	for i := 0; i < len(log); i += 7 {
		if _, err := w.Write([]byte(log[i:min(i+7, len(log))])); err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != log {
		t.Fatalf("the log must pass through unchanged:\n%s", out.String())
	}
	select {
	case got := <-w.ready:
		want := map[string]netip.AddrPort{"smtp": netip.MustParseAddrPort("127.0.0.1:2525"), "web": netip.MustParseAddrPort("[::1]:8080")}
		if len(got) != len(want) || got["smtp"] != want["smtp"] || got["web"] != want["web"] {
			t.Fatalf("addresses %v, want %v (nothing after postern running)", got, want)
		}
	default:
		t.Fatal("not ready after postern running")
	}
}
