package web

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"

	"github.com/postern/postern/internal/testenv"
)

// Set by TestMain when POSTERN_E2E=1.
var (
	moduleRoot string
	posternBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	flag.Parse()
	var dir string
	if os.Getenv("POSTERN_E2E") == "1" {
		dir, buildErr = os.MkdirTemp("", "postern-web-bin-")
		if buildErr == nil {
			buildErr = buildPostern(dir)
		}
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// buildPostern builds ./cmd/postern into dir.
func buildPostern(dir string) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			moduleRoot = d
			break
		}
		if filepath.Dir(d) == d {
			return fmt.Errorf("no go.mod above %s", wd)
		}
	}
	bin := filepath.Join(dir, "postern")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/postern")...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building postern: %v\n%s", err, out)
	}
	posternBin = bin
	return nil
}

// needE2E skips without POSTERN_E2E=1 and fails when asked for but unable.
func needE2E(t *testing.T) {
	t.Helper()
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("end-to-end: set POSTERN_E2E=1 (needs nginx, curl, php-cli)")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	for _, tool := range []string{"nginx", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("POSTERN_E2E=1 but %s is not installed (apt-get install nginx-light curl): %v", tool, err)
		}
	}
}

// waitPort polls until addr accepts connections or the process exits.
func waitPort(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not up after %v", addr, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is a child process stopped at the end of the test.
type proc struct {
	stopped bool // stop was called
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	log     string
}

func startProc(t *testing.T, logPath string, name string, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	p := &proc{cmd: exec.Command(name, args...), exited: make(chan struct{}), log: logPath}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	return p
}

// stop sends sig and waits up to 30 s, then kills.
func (p *proc) stop(sig syscall.Signal) error {
	if p.stopped {
		return nil
	}
	p.stopped = true
	select {
	case <-p.exited:
		return fmt.Errorf("had exited: %v", p.waitErr)
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
		return p.waitErr
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("did not stop within 30s")
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(string(b), "\n")
	return strings.Join(lines[max(0, len(lines)-60):], "\n")
}

// nginx is a running nginx serving the webmail stand-in.
type nginx struct {
	addr, dir string
	p         *proc
}

// The webmail stand-in. POST /login goes (internally, with the body in a
// header) to /login-check, which redirects alice with her password to
// /inbox and answers 401 to everything else.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log info;
events { worker_connections 512; }
http {
  log_format e2e '$remote_addr "$request" $status xff="$http_x_forwarded_for" proto="$http_x_forwarded_proto" fwd="$http_forwarded" host="$host"';
  access_log {{DIR}}/access.log e2e;
  client_body_temp_path {{DIR}}/tmp/body;
  proxy_temp_path {{DIR}}/tmp/proxy;
  fastcgi_temp_path {{DIR}}/tmp/fastcgi;
  uwsgi_temp_path {{DIR}}/tmp/uwsgi;
  scgi_temp_path {{DIR}}/tmp/scgi;
  default_type text/html;
  absolute_redirect off;
  keepalive_requests 100000;
  server {
    listen {{ADDR}};
    root {{DIR}}/www;
    location = /login {
      if ($request_method = POST) { rewrite ^ /login-post last; }
      try_files /login.html =404;
    }
    location = /login-post {
      internal;
      proxy_set_header X-Login-Body $request_body;
      proxy_set_header X-Login-Check "1";
      proxy_set_header Host $host;
      proxy_pass http://{{ADDR}}/login-check;
    }
    location = /login-check {
      if ($http_x_login_check != "1") { return 404; }
      if ($http_x_login_body = "username=alice%40example.test&password=alice-pass-1") { return 302 /inbox; }
      return 401 "<html><body><p>Login failed.</p></body></html>\n";
    }
  }
}
`

const loginPage = `<!DOCTYPE html>
<html><head><title>Webmail</title></head><body>
<form method="post" action="/login">
<input name="username"> <input name="password" type="password"> <button>Log in</button>
</form></body></html>
`

func startNginx(t *testing.T) *nginx {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"www/admin", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"www/index.html":       "<html><body>Webmail home</body></html>\n",
		"www/login.html":       loginPage,
		"www/inbox":            "<html><body>Inbox</body></html>\n",
		"www/admin/index.html": "<html><body>Admin area</body></html>\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for attempt := 1; ; attempt++ {
		addr := testenv.FreeAddr(t)
		conf := strings.NewReplacer("{{DIR}}", dir, "{{ADDR}}", addr).Replace(nginxConf)
		confPath := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, filepath.Join(dir, "nginx.out"), "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
		if err := waitPort(addr, p.exited, 10*time.Second); err != nil {
			p.stop(syscall.SIGKILL)
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			if attempt < 3 && strings.Contains(string(errLog), "in use") {
				continue
			}
			t.Fatalf("nginx: %v\n%s\n%s", err, p.tail(), errLog)
		}
		n := &nginx{addr: addr, dir: dir, p: p}
		t.Cleanup(func() {
			if err := p.stop(syscall.SIGQUIT); err != nil {
				t.Logf("nginx stop: %v", err)
			}
		})
		return n
	}
}

// accessLog returns nginx's access log lines.
func (n *nginx) accessLog() []string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "access.log"))
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// gateway is a running `postern serve` with a web service in front of
// nginx.
type gateway struct {
	addr, cfg string
	p         *proc
}

func startGateway(t *testing.T, backend string) *gateway {
	t.Helper()
	return startGatewayWith(t, backend, "      - { path: /login, user_field: username, password_field: password, fail_status: 401 }\n", "")
}

// startGatewayWith starts `postern serve` with these login_forms entries
// (YAML list items, indented six spaces) and intrusion_prevention extras
// (indented two spaces).
func startGatewayWith(t *testing.T, backend, forms, ips string) *gateway {
	t.Helper()
	dir := t.TempDir()
	cert, key, err := tlsconf.SelfSigned(dir, []string{"localhost", "127.0.0.1"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "pweb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	for attempt := 1; ; attempt++ {
		g := &gateway{addr: testenv.FreeAddr(t), cfg: filepath.Join(dir, fmt.Sprintf("postern-%d.yaml", attempt))}
		sock := filepath.Join(sockDir, fmt.Sprintf("admin-%d.sock", attempt))
		conf := fmt.Sprintf(`geoip:
  databases:
    - path: %q
patterns:
  GeoIP_MY: "country:MY"
  Admins: "127.0.0.18"
services:
  web:
    listen: %q
    backend: %q
    grant: "[GeoIP_MY]"
    tls: { cert: %q, key: %q }
    max_connections_per_address: 50
    paths:
      - { prefix: /admin, grant: "[Admins]" }
    login_forms:
%s    timeouts: { command: 2s, connect: 2s, backend: 10s }
login_restrictions:
  - "ceo@example.test=[Admins]"
intrusion_prevention:
  block_minutes: 60
%s  web: { failed_logins: 5, connections_per_minute: 10000 }
store: { path: %q }
admin: { listen: "unix:%s", token_file: %q }
node: e2e-web
log: { level: debug }
`, filepath.Join(moduleRoot, "test", "web", "testdata", "my.zone"), g.addr, "http://"+backend, cert, key, forms, ips,
			filepath.Join(dir, "state", "postern.db"), sock, filepath.Join(dir, "state", "admin.token"))
		if err := os.WriteFile(g.cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		g.p = startProc(t, filepath.Join(dir, fmt.Sprintf("postern-%d.log", attempt)), posternBin, "serve", "-c", g.cfg)
		if err := waitPort(g.addr, g.p.exited, 30*time.Second); err != nil {
			g.p.stop(syscall.SIGKILL)
			if attempt < 3 && strings.Contains(g.p.tail(), "in use") {
				continue
			}
			t.Fatalf("postern serve: %v\n%s", err, g.p.tail())
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				g.p.stop(syscall.SIGKILL)
				t.Fatalf("admin socket not up:\n%s", g.p.tail())
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Cleanup(func() {
			if err := g.p.stop(syscall.SIGTERM); err != nil {
				t.Errorf("postern serve: %v", err)
			}
			log := g.p.tail()
			for _, bad := range []string{"panic:", "fatal error:", "DATA RACE"} {
				if strings.Contains(log, bad) {
					t.Errorf("postern's log has %q", bad)
				}
			}
			if t.Failed() {
				t.Logf("postern log:\n%s", log)
			}
		})
		return g
	}
}

// block is one entry of `postern blocks list --json`.
type block struct {
	Target  string `json:"target"`
	Reason  string `json:"reason"`
	Service string `json:"service"`
	Detail  string `json:"detail"`
}

// blocks runs the real CLI against the running gateway's API.
func (g *gateway) blocks(t *testing.T) map[string]block {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, posternBin, "blocks", "list", "-c", g.cfg, "--json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("postern blocks list: %v\n%s", err, errb.String())
	}
	var resp struct {
		Blocks []block `json:"blocks"`
	}
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		t.Fatalf("postern blocks list: %v\n%s", err, out.String())
	}
	m := make(map[string]block)
	for _, b := range resp.Blocks {
		m[strings.TrimSuffix(b.Target, "/32")] = b
	}
	return m
}

// curlResult is what curl reported.
type curlResult struct {
	code     int
	version  string
	body     string
	location string
}

// curl runs curl from src against url with extra arguments.
func curl(t *testing.T, src, url string, args ...string) curlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := append([]string{"-sk", "--interface", src, "--path-as-is", "-w", "\n%{http_code} %{http_version} %{redirect_url}"}, args...)
	out, err := exec.CommandContext(ctx, "curl", append(all, url)...).Output()
	if err != nil {
		t.Fatalf("curl %v %s: %v\n%s", args, url, err, out)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	var r curlResult
	r.body = s[:i]
	f := strings.Fields(s[i+1:])
	r.code, _ = strconv.Atoi(f[0])
	if len(f) > 1 {
		r.version = f[1]
	}
	if len(f) > 2 {
		r.location = f[2]
	}
	return r
}
