package web

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// roundcubeForm describes Roundcube as docs/CONFIGURATION.md does.
const roundcubeForm = `      - paths: ["/", "/index.php", "/index.php/*"]
        params: ["_task=login", "_action=login"]
        user_field: _user
        password_field: _pass
        fail_status: 401
`

// roundcube is PHP's built-in server running the Roundcube stand-in
// behind an nginx reverse proxy.
type roundcube struct {
	addr string // nginx
	log  string // the logins PHP performed, one JSON line each
}

func startRoundcube(t *testing.T) *roundcube {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		t.Fatalf("POSTERN_E2E=1 but php is not installed (apt-get install php-cli): %v", err)
	}
	dir := t.TempDir()
	rc := &roundcube{log: filepath.Join(dir, "logins.jsonl")}
	if err := os.WriteFile(rc.log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	phpAddr := testenv.FreeAddr(t)
	t.Setenv("RC_LOG", rc.log) // for the stand-in, inherited by php
	p := startProc(t, filepath.Join(dir, "php.log"), php, "-n", "-d", "max_input_vars=1000", "-d", "post_max_size=8M",
		"-d", "variables_order=EGPCS", "-d", "request_order=GP", "-S", phpAddr, filepath.Join(moduleRoot, "test", "web", "testdata", "roundcube.php"))
	if err := waitPort(phpAddr, p.exited, 10*time.Second); err != nil {
		t.Fatalf("php -S: %v\n%s", err, p.tail())
	}
	t.Cleanup(func() { p.stop(syscall.SIGTERM) })
	for _, d := range []string{"tmp"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	rc.addr = testenv.FreeAddr(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  client_max_body_size 10m;
  server {
    listen %[2]s;
    location / { proxy_pass http://%[3]s; proxy_set_header Host $host; }
  }
}
`, dir, rc.addr, phpAddr)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	ng := startProc(t, filepath.Join(dir, "nginx.out"), "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
	if err := waitPort(rc.addr, ng.exited, 10*time.Second); err != nil {
		t.Fatalf("nginx: %v\n%s", err, ng.tail())
	}
	t.Cleanup(func() { ng.stop(syscall.SIGQUIT) })
	return rc
}

// logins returns the accounts PHP logged in (or tried to).
func (rc *roundcube) logins(t *testing.T) string {
	b, err := os.ReadFile(rc.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// post sends body with curl from src and returns the status.
func post(t *testing.T, src, url, ctype, body string, extra ...string) int {
	t.Helper()
	f := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-H", "Content-Type: " + ctype, "--data-binary", "@" + f}
	for _, e := range extra {
		args = append(args, "-H", e)
	}
	return curl(t, src, url, args...).code
}

func multipart(boundary string, kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", boundary, kv[i], kv[i+1])
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.String()
}

// TestRoundcubeLoginEvasions replays the review's six ways around the
// Roundcube form through the real postern binary, nginx and PHP, for an
// account that may log in only from the admin address: each is refused by
// postern, or read as the login it is (the restriction's 401, counted).
func TestRoundcubeLoginEvasions(t *testing.T) {
	needE2E(t)
	rc := startRoundcube(t)
	gw := startGatewayWith(t, rc.addr, roundcubeForm, "")
	base := "https://" + gw.addr
	const (
		form     = "application/x-www-form-urlencoded"
		attacker = "127.0.0.23" // in MY, not an admin address
	)

	t.Run("the real login works on / and /index.php", func(t *testing.T) {
		for _, target := range []string{"/?_task=login", "/index.php?_task=login"} {
			if code := post(t, user, base+target, form, "_token=t&_task=login&_action=login&_timezone=UTC&_url=&_user=alice%40example.test&_pass=alice-pass-1"); code != 302 {
				t.Errorf("alice on %s: %d, want 302", target, code)
			}
		}
		if got := rc.logins(t); strings.Count(got, "alice@example.test") != 2 {
			t.Errorf("PHP's logins: %q", got)
		}
	})

	var tooMany, moreThan64 []string
	for i := range 1001 {
		tooMany = append(tooMany, fmt.Sprintf("p%d", i), "")
	}
	tooMany = append(tooMany, "_task", "login", "_action", "login", "_user", "ceo@example.test", "_pass", "x")
	for i := range 70 {
		moreThan64 = append(moreThan64, fmt.Sprintf("p%d", i), "x")
	}
	moreThan64 = append(moreThan64, "_task", "login", "_action", "login", "_user", "ceo@example.test", "_pass", "guess-1")

	t.Run("refused: cannot be read with certainty", func(t *testing.T) {
		for _, c := range []struct {
			name, target, ctype, body string
			want                      int
		}{
			{"repeated user field", "/?_task=login", form, "_task=login&_action=login&_user=alice%40example.test&_user=ceo%40example.test&_pass=x", 400},
			{"NUL after the name", "/?_task=login", form, "_task=login&_action=login&_user=ceo%40example.test%00&_pass=x", 400},
			{"user field as an array", "/?_task=login", form, "_task=login&_action=login&_user[]=ceo%40example.test&_pass=x", 400},
			{"body over the read limit", "/?_task=login", form, "_task=login&_action=login&_user=ceo%40example.test&_pass=x&pad=" + strings.Repeat("a", 70<<10), 413},
			{"more multipart parts than PHP reads", "/?_task=login", "multipart/form-data; boundary=b0", multipart("b0", tooMany...), 400},
		} {
			if code := post(t, attacker, base+c.target, c.ctype, c.body); code != c.want {
				t.Errorf("%s: %d, want %d", c.name, code, c.want)
			}
		}
	})

	t.Run("counted: read as the login it is", func(t *testing.T) {
		for i, c := range []struct{ name, target, ctype, body, cookie string }{
			{"more multipart parts than the old parser's 64", "/?_task=login", "multipart/form-data; boundary=b1", multipart("b1", moreThan64...), ""},
			{"the login task in the body", "/", form, "_task=login&_action=login&_user=ceo%40example.test&_pass=guess-2", ""},
			{"/index.php for /", "/index.php?_task=login", form, "_task=login&_action=login&_user=ceo%40example.test&_pass=guess-3", ""},
			{"PATH_INFO below /index.php", "/index.php/x", form, "_action=login&_user=ceo%40example.test&_pass=guess-4", ""},
			{"the action in a cookie", "/?_task=mail", form, "_user=ceo%40example.test&_pass=guess-5", "Cookie: _action=login"},
		} {
			var extra []string
			if c.cookie != "" {
				extra = append(extra, c.cookie)
			}
			code := post(t, attacker, base+c.target, c.ctype, c.body, extra...)
			if code != 401 && !(i == 4 && code == 403) {
				t.Errorf("%s: %d, want the restriction's 401", c.name, code)
			}
		}
		b, ok := gw.blocks(t)[attacker]
		if !ok || b.Reason != "L" || !strings.Contains(b.Detail, "ceo@example.test") {
			t.Errorf("after five refused logins for the CEO: %+v (blocked %v), want an L block", b, ok)
		}
	})

	t.Run("long bodies: streamed, or cut before a login field", func(t *testing.T) {
		upload := "--up\r\nContent-Disposition: form-data; name=\"_attachments[]\"; filename=\"big.bin\"\r\n\r\n" +
			strings.Repeat("0123456789\r\n--u\n", 20000) + "\r\n--up--\r\n"
		if code := post(t, user, base+"/?_task=mail&_action=upload", "multipart/form-data; boundary=up", upload); code != 200 {
			t.Errorf("a long upload: %d, want 200", code)
		}
		pad := "pad=" + strings.Repeat("a", 100<<10)
		for _, body := range []string{
			pad + "&_task=login&_action=login&_user=ceo%40example.test&_pass=guess-6",
			pad + "&_user=ceo%40example.test&_pass=guess-7&_action=login",
		} {
			if code := post(t, user, base+"/", form, body); code != 413 {
				t.Errorf("a login after 100 KiB: %d, want 413", code)
			}
		}
	})

	// PHP saw the restricted account only with decoy passwords (32 hex
	// digits), never a password the attacker sent.
	for _, l := range strings.Split(strings.TrimSpace(rc.logins(t)), "\n") {
		var e struct{ User, Pass string }
		if json.Unmarshal([]byte(l), &e) != nil || !strings.Contains(e.User, "ceo") {
			continue
		}
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(e.Pass) {
			t.Errorf("PHP checked a password the attacker sent for the restricted account: %s", l)
		}
	}
}

// TestWebBlockEveryRequest: 15 guesses over one HTTP/2 connection (curl
// --http2, one connection for every URL) for failed_logins 5, with
// refuse_blocked and close_blocked_connection off so that only the check
// of every request stands between the address and nginx: nginx sees 5.
func TestWebBlockEveryRequest(t *testing.T) {
	needE2E(t)
	ng := startNginx(t)
	gw := startGatewayWith(t, ng.addr, "      - { path: /login, user_field: username, password_field: password, fail_status: 401 }\n",
		"  refuse_blocked: false\n  close_blocked_connection: false\n")
	const src = "127.0.0.24"
	var args []string
	for i := range 15 {
		if i > 0 {
			args = append(args, "--next")
		}
		args = append(args, "-sk", "--http2", "--interface", src, "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{num_connects}\n",
			"-d", fmt.Sprintf("username=alice%%40example.test&password=h2-guess-%d", i), "https://"+gw.addr+"/login")
	}
	out, err := exec.Command("curl", args...).Output()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	codes, connects := map[string]int{}, 0
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var ver, code string
		var n int
		fmt.Sscanf(l, "%s %s %d", &ver, &code, &n)
		if ver != "2" {
			t.Fatalf("curl: %q, want HTTP/2", l)
		}
		codes[code]++
		connects += n
	}
	posts := 0
	for _, l := range ng.accessLog() {
		if strings.Contains(l, `"POST /login HTTP`) {
			posts++
		}
	}
	if connects != 1 || posts != 5 || codes["401"] != 5 || codes["403"] != 10 {
		t.Errorf("one connection (%d), nginx saw %d guesses, curl got %v; want 1, 5 and 5 401s + 10 403s", connects, posts, codes)
	}
}
