package webproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// roundcubeCfg describes Roundcube as postern's docs do: a login is
// _action=login (or _task=login) from the query, body or cookies, on /,
// /index.php or below /index.php (PATH_INFO).
const roundcubeCfg = `patterns:
  Boss: "127.0.0.3"
services:
  web:
    listen: ":443"
    backend: "http://127.0.0.1:1"
    login_forms:
      - paths: ["/", "/index.php", "/index.php/*"]
        params: ["_task=login", "_action=login"]
        user_field: _user
        password_field: _pass
        fail_status: 401
login_restrictions:
  - "boss@example.com=[Boss]"
intrusion_prevention:
  web: { failed_logins: 5, connections_per_minute: 1000 }
`

// legacyRoundcubeCfg is the layout older docs gave.
const legacyRoundcubeCfg = `patterns:
  Boss: "127.0.0.3"
services:
  web:
    listen: ":443"
    backend: "http://127.0.0.1:1"
    login_forms:
      - { path: "/?_task=login", user_field: _user, password_field: _pass, fail_status: 401 }
login_restrictions:
  - "boss@example.com=[Boss]"
intrusion_prevention:
  web: { failed_logins: 5, connections_per_minute: 1000 }
`

// send posts body to target from src on a new connection and returns the
// status.
func (h *harness) send(src, method, target, ctype, body string, extra ...string) int {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n", method, target)
	if ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
	return statusOf(h.raw(src, b.String()))
}

func multipartBody(boundary string, parts ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(parts); i += 2 {
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", boundary, parts[i], parts[i+1])
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.String()
}

// TestLoginEvasions replays the review's six ways around the Roundcube
// form (and a few more of each class) for a restricted account from an
// address it may not log in from: each is refused by postern (4xx, the
// backend sees nothing) or read as the login it is (the restriction's
// failure, counted as L).
func TestLoginEvasions(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	var parts []string
	for i := range 70 {
		parts = append(parts, fmt.Sprintf("pad%d", i), "x")
	}
	parts = append(parts, "_task", "login", "_action", "login", "_user", "boss@example.com", "_pass", "p1")
	var tooMany []string
	for i := range 1001 {
		tooMany = append(tooMany, fmt.Sprintf("p%d", i), "")
	}
	tooMany = append(tooMany, "_user", "boss@example.com")
	refused := []struct {
		name, target, ctype, body string
		want                      int
	}{
		{"repeated user field", "/?_task=login", form, "_task=login&_action=login&_user=alice%40example.com&_user=boss%40example.com&_pass=x", 400},
		{"NUL after the name", "/?_task=login", form, "_task=login&_action=login&_user=boss%40example.com%00&_pass=x", 400},
		{"array", "/?_task=login", form, "_task=login&_action=login&_user[]=boss%40example.com&_pass=x", 400},
		{"body over the read limit", "/?_task=login", form, "_task=login&_action=login&_user=boss%40example.com&_pass=x&pad=" + strings.Repeat("a", 70<<10), 413},
		{"more parts than PHP reads", "/?_task=login", "multipart/form-data; boundary=b0", multipartBody("b0", tooMany...), 400},
	}
	counted := []struct{ name, target, ctype, body, cookie string }{
		{"more multipart parts than the old parser's 64", "/?_task=login", "multipart/form-data; boundary=b1", multipartBody("b1", parts...), ""},
		{"the login task in the body", "/", form, "_task=login&_action=login&_user=boss%40example.com&_pass=p2", ""},
		{"/index.php for /", "/index.php?_task=login", form, "_task=login&_action=login&_user=boss%40example.com&_pass=p3", ""},
		{"PATH_INFO", "/index.php/x?_task=login", form, "_action=login&_user=boss%40example.com&_pass=p4", ""},
		{"the action in a cookie, another task in the query", "//./?_task=mail", form, "_user=boss%40example.com&_pass=p5", "_action=login"},
	}
	h := newHarness(t, harnessOpts{cfg: roundcubeCfg})
	for _, c := range refused {
		if got := h.send("127.0.0.1", "POST", c.target, c.ctype, c.body); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	for i, c := range counted {
		var extra []string
		if c.cookie != "" {
			extra = append(extra, "Cookie: "+c.cookie)
		}
		if got := h.send("127.0.0.1", "POST", c.target, c.ctype, c.body, extra...); got != http.StatusUnauthorized && !(i == len(counted)-1 && got == http.StatusForbidden) {
			t.Errorf("%s: %d, want the restriction's 401", c.name, got)
		}
	}
	onlyDecoys(t, h.be.requests(), "boss", "_pass")
	if ok, reason := h.blocked("127.0.0.1"); !ok || reason != "L" {
		t.Errorf("five refused logins must block (L): blocked=%v %q", ok, reason)
	}
	// The real login still works from elsewhere, on / and /index.php.
	for _, target := range []string{"/?_task=login", "/index.php?_task=login"} {
		if got := h.send("127.0.0.7", "POST", target, form, "_token=t&_task=login&_action=login&_timezone=UTC&_url=&_user=alice%40example.com&_pass=right-password"); got != http.StatusFound {
			t.Errorf("alice's login on %s: %d, want 302", target, got)
		}
	}
	// A large upload that is not a login is refused on the login paths
	// only when its body is over the limit.
	if got := h.send("127.0.0.7", "POST", "/?_task=mail&_action=upload", form, "_to=x&_body="+strings.Repeat("a", 1000)); got != 200 {
		t.Errorf("a mail request on /: %d", got)
	}
}

// TestLegacyRoundcubeForm: the older layout (path "/?_task=login") keeps
// working and now reads the task from the body and refuses unreadable
// requests; /index.php needs the paths list.
func TestLegacyRoundcubeForm(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	h := newHarness(t, harnessOpts{cfg: legacyRoundcubeCfg})
	if got := h.send("127.0.0.1", "POST", "/", form, "_task=login&_action=login&_user=boss%40example.com&_pass=x"); got != 401 {
		t.Errorf("task in the body: %d, want 401", got)
	}
	if got := h.send("127.0.0.1", "POST", "/?_task=login", form, "_user=a&_user=boss%40example.com"); got != 400 {
		t.Errorf("repeated user field: %d, want 400", got)
	}
	if got := h.send("127.0.0.7", "POST", "/?_task=login", form, "_task=login&_action=login&_user=alice%40example.com&_pass=right-password"); got != 302 {
		t.Errorf("alice: %d, want 302", got)
	}
	onlyDecoys(t, h.be.requests(), "boss", "_pass")
}

// blockingCfg keeps blocked addresses' connections open: only the
// per-request check stands between a blocked address and the backend.
const blockingCfg = `services:
  web:
    listen: ":443"
    backend: "http://127.0.0.1:1"
    login_forms:
      - { path: /login, user_field: user, password_field: pass, fail_status: 401 }
intrusion_prevention:
  refuse_blocked: false
  close_blocked_connection: false
  close_all: false
  web: { failed_logins: 5, connections_per_minute: 1000 }
`

func loginPosts(h *harness) int {
	n := 0
	for _, r := range h.be.requests() {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URI, "/login") {
			n++
		}
	}
	return n
}

// TestBlockEveryRequestHTTP2: 15 guesses over one HTTP/2 connection for a
// threshold of 5: the backend sees 5, the rest get the Blocked page.
func TestBlockEveryRequestHTTP2(t *testing.T) {
	h := newHarness(t, harnessOpts{cfg: blockingCfg, tls: true})
	c := h.client("127.0.0.1")
	blocked := 0
	for i := range 15 {
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "POST", h.url("/login"),
			strings.NewReader(url.Values{"user": {"alice@example.com"}, "pass": {"guess-" + strconv.Itoa(i)}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("guess %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || (i > 0 && !reused) {
			t.Fatalf("guess %d: %s, reused connection %v; want one HTTP/2 connection", i, resp.Proto, reused)
		}
		if resp.StatusCode == 403 && strings.Contains(string(b), "Blocked") {
			blocked++
		}
	}
	if n := loginPosts(h); n != 5 || blocked != 10 {
		t.Errorf("the backend saw %d guesses and %d got the Blocked page; want 5 and 10", n, blocked)
	}
}

// TestBlockEveryRequestCurl: the same with curl --http2 (one connection,
// reused for every URL).
func TestBlockEveryRequestCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	h := newHarness(t, harnessOpts{cfg: blockingCfg, tls: true})
	var args []string
	for i := range 15 {
		if i > 0 {
			args = append(args, "--next")
		}
		args = append(args, "-sk", "--http2", "--interface", "127.0.0.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %{num_connects}\n",
			"-d", fmt.Sprintf("user=alice@example.com&pass=curl-%d", i), h.url("/login"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", args...).Output()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	codes := map[string]int{}
	connects := 0
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "2" {
			t.Fatalf("curl: %q, want HTTP/2", l)
		}
		codes[f[1]]++
		n, _ := strconv.Atoi(f[2])
		connects += n
	}
	if connects != 1 {
		t.Errorf("curl made %d connections, want 1", connects)
	}
	if n := loginPosts(h); n != 5 || codes["401"] != 5 || codes["403"] != 10 {
		t.Errorf("the backend saw %d guesses; curl got %v; want 5 401s and 10 403s", n, codes)
	}
}

// TestBlockReachesWaitingRequest: a block made while a login request waits
// for its body applies to it when the body arrives, with refuse_blocked on
// or off.
func TestBlockReachesWaitingRequest(t *testing.T) {
	for _, refuse := range []bool{true, false} {
		t.Run(fmt.Sprintf("refuse_blocked=%v", refuse), func(t *testing.T) {
			cfg := strings.Replace(blockingCfg, "refuse_blocked: false", fmt.Sprintf("refuse_blocked: %v", refuse), 1)
			blockWhileWaiting(t, newHarness(t, harnessOpts{cfg: cfg}))
		})
	}
}

func blockWhileWaiting(t *testing.T, h *harness) {
	const src = "127.0.0.41"
	body := "user=alice%40example.com&pass=right-password"
	c := h.dial(src)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
	br := bufio.NewReader(c)
	// 100 Continue comes when the gateway starts reading the body: the
	// request is past its admission.
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	br.ReadString('\n')
	if _, err := h.eng.BlockManual(context.Background(), netip.MustParsePrefix(src+"/32"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		rest, _ := io.ReadAll(br)
		t.Fatalf("%v; %q", err, rest)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(b), "Blocked") {
		t.Errorf("the waiting login after the block: %d %q", resp.StatusCode, b)
	}
	if loginPosts(h) != 0 {
		t.Error("the backend saw a login from an address blocked while it waited")
	}
}

// TestLongBodiesOnLoginPaths: bodies over the read limit on the login
// form's paths are streamed when they are not logins (attachments, long
// messages), and cut before a login field when they hide one.
func TestLongBodiesOnLoginPaths(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	h := newHarness(t, harnessOpts{cfg: roundcubeCfg})
	upload := "--up\r\nContent-Disposition: form-data; name=\"_attachments[]\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n" +
		strings.Repeat("0123456789\r\n--u\n", 20000) + "\r\n--up\r\nContent-Disposition: form-data; name=\"_id\"\r\n\r\n42\r\n--up--\r\n"
	message := "_to=bob%40example.com&_subject=hi&_message=" + strings.Repeat("long+text%0D%0A", 20000) + "&_draft=0"
	for _, c := range []struct{ name, target, ctype, body string }{
		{"an attachment upload", "/?_task=mail&_action=upload", "multipart/form-data; boundary=up", upload},
		{"a long message", "/?_task=mail&_action=send", form, message},
	} {
		if got := h.send("127.0.0.1", "POST", c.target, c.ctype, c.body); got != 200 {
			t.Errorf("%s: %d, want the backend's 200", c.name, got)
			continue
		}
		reqs := h.be.requests()
		if last := reqs[len(reqs)-1]; last.Body != c.body {
			t.Errorf("%s: the backend got %d bytes, want the %d sent", c.name, len(last.Body), len(c.body))
		}
	}
	before := len(h.be.requests())
	for _, c := range []struct{ name, target, ctype, body string }{
		{"a login after a long field", "/", form, "pad=" + strings.Repeat("a", 100<<10) + "&_task=login&_action=login&_user=boss%40example.com&_pass=x"},
		{"a user field after a long field", "/?_task=mail", form, "pad=" + strings.Repeat("a", 100<<10) + "&_user=boss%40example.com"},
		{"a login part after a long upload", "/?_task=mail&_action=upload", "multipart/form-data; boundary=up",
			strings.TrimSuffix(upload, "--up--\r\n") + "--up\r\nContent-Disposition: form-data; name=\"_action\"\r\n\r\nlogin\r\n--up\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss@example.com\r\n--up--\r\n"},
		{"a JSON body over the limit", "/", "application/json", `{"pad":"` + strings.Repeat("a", 100<<10) + `","_user":"boss@example.com"}`},
		{"a bare LF boundary in a long upload", "/?_task=mail&_action=upload", "multipart/form-data; boundary=up",
			strings.Replace(upload, "\r\n--up\r\nContent-Disposition: form-data; name=\"_id\"", "\n--up\r\nContent-Disposition: form-data; name=\"_user\"", 1)},
	} {
		if got := h.send("127.0.0.1", "POST", c.target, c.ctype, c.body); got != 413 && got != 400 {
			t.Errorf("%s: %d, want 413 or 400", c.name, got)
		}
	}
	for _, r := range h.be.requests()[before:] {
		if strings.Contains(r.Body, "boss") || strings.Contains(r.Body, "_user") {
			t.Errorf("the backend got a login field from a long body: %s %s (%d bytes)", r.Method, r.URI, len(r.Body))
		}
	}
}
