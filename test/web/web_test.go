package web

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Addresses (the test's country MY is 127.0.0.16/28, see testdata/my.zone):
const (
	outside  = "127.0.0.1"  // not in MY
	user     = "127.0.0.17" // in MY
	adminIP  = "127.0.0.18" // in MY and the /admin grant list
	guesser  = "127.0.0.20" // in MY, guesses passwords
	ceoThief = "127.0.0.21" // in MY, tries the CEO's account
)

// TestWebGateway runs the web gateway in front of nginx through its
// checks, in order, on one postern and one nginx.
func TestWebGateway(t *testing.T) {
	needE2E(t)
	ng := startNginx(t)
	gw := startGateway(t, ng.addr)
	base := "https://" + gw.addr

	t.Run("static page identical to direct, over HTTP/2", func(t *testing.T) {
		direct := curl(t, user, "http://"+ng.addr+"/")
		via := curl(t, user, base+"/", "--http2")
		if direct.code != 200 || via.code != 200 || via.body != direct.body {
			t.Fatalf("direct %d %q, through postern %d %q", direct.code, direct.body, via.code, via.body)
		}
		if via.version != "2" {
			t.Errorf("HTTP version through postern %q, want 2 (ALPN h2)", via.version)
		}
		if via11 := curl(t, user, base+"/login", "--http1.1"); via11.code != 200 || via11.version != "1.1" || !strings.Contains(via11.body, "<form") {
			t.Errorf("HTTP/1.1 login page: %+v", via11)
		}
		last := ng.accessLog()[len(ng.accessLog())-1]
		if !strings.HasPrefix(last, "127.0.0.1 ") || !strings.Contains(last, `xff="`+user+`"`) ||
			!strings.Contains(last, `proto="https"`) || !strings.Contains(last, `fwd="for=`+user+`;`) {
			t.Errorf("nginx saw %q; want the client in X-Forwarded-For and Forwarded, proto https", last)
		}
	})

	t.Run("forged forwarding headers are replaced", func(t *testing.T) {
		r := curl(t, user, base+"/?forged", "-H", "X-Forwarded-For: 6.6.6.6", "-H", "Forwarded: for=6.6.6.6", "-H", "X-Forwarded-Proto: http")
		if r.code != 200 {
			t.Fatalf("status %d", r.code)
		}
		for _, l := range ng.accessLog() {
			if strings.Contains(l, "?forged") && (strings.Contains(l, "6.6.6.6") || !strings.Contains(l, `xff="`+user+`"`)) {
				t.Errorf("nginx saw forged headers: %q", l)
			}
		}
	})

	t.Run("webmail only from its countries", func(t *testing.T) {
		r := curl(t, outside, base+"/?from-outside")
		if r.code != 403 || !strings.Contains(r.body, "Access denied") {
			t.Errorf("from outside MY: %d %q", r.code, r.body)
		}
		for _, l := range ng.accessLog() {
			if strings.Contains(l, "from-outside") {
				t.Errorf("nginx saw a request from outside the country: %q", l)
			}
		}
	})

	t.Run("admin only from its grant list", func(t *testing.T) {
		for _, p := range []string{"/admin/", "/%61dmin/", "//admin/", "/x/../admin/", "/ADMIN/", "/admin%2f", "/%2e%2e/admin/",
			"/admin/index.html", "/Admin/./", "/%2561dmin/", "/admin;x=1/"} {
			if r := curl(t, user, base+p); r.code != 403 || !strings.Contains(r.body, "Access denied") {
				t.Errorf("%s from %s: %d, want 403", p, user, r.code)
			}
		}
		if r := curl(t, adminIP, base+"/admin/"); r.code != 200 || !strings.Contains(r.body, "Admin area") {
			t.Errorf("/admin/ from the admin address: %d %q", r.code, r.body)
		}
		for _, l := range ng.accessLog() {
			low := strings.ToLower(l)
			if (strings.Contains(low, "admin") || strings.Contains(low, "%61")) && !strings.Contains(l, `xff="`+adminIP+`"`) {
				t.Errorf("nginx saw an admin request from a non-admin: %q", l)
			}
		}
	})

	t.Run("right password logs in", func(t *testing.T) {
		r := curl(t, user, base+"/login", "-d", "username=alice%40example.test&password=alice-pass-1")
		if r.code != 302 || !strings.HasSuffix(r.location, "/inbox") {
			t.Errorf("login: %d location %q", r.code, r.location)
		}
	})

	t.Run("login restriction: the webmail sees only a decoy password", func(t *testing.T) {
		r := curl(t, ceoThief, base+"/login", "-d", "username=CEO%40example.test&password=whatever")
		if r.code != 401 {
			t.Errorf("refused login: %d, want the webmail's failure 401", r.code)
		}
		// The refused login reached nginx with a decoy in place of the
		// password: nginx fails it as a wrong password, and its log has
		// the client's own address.
		seen := false
		for _, l := range ng.accessLog() {
			seen = seen || strings.Contains(l, `xff="`+ceoThief+`"`) && strings.Contains(l, `"POST /login`)
		}
		if !seen {
			t.Errorf("nginx did not see the refused login with a decoy password")
		}
	})

	t.Run("password guessing ends in an L block", func(t *testing.T) {
		for i := 1; i <= 5; i++ {
			r := curl(t, guesser, base+"/login", "-d", fmt.Sprintf("username=alice%%40example.test&password=guess-%d", i))
			if r.code != 401 {
				t.Fatalf("guess %d: %d, want nginx's 401", i, r.code)
			}
		}
		b, ok := gw.blocks(t)[guesser]
		if !ok || b.Reason != "L" || b.Service != "web" || !strings.Contains(b.Detail, "alice@example.test") {
			t.Fatalf("after 5 wrong passwords: %+v (blocked %v)", b, ok)
		}
		before := len(ng.accessLog())
		r := curl(t, guesser, base+"/login", "-d", "username=alice%40example.test&password=alice-pass-1")
		if r.code != 403 || !strings.Contains(r.body, "Blocked") {
			t.Errorf("a blocked address: %d %q", r.code, r.body)
		}
		if len(ng.accessLog()) != before {
			t.Error("nginx saw a request from a blocked address")
		}
		if _, ok := gw.blocks(t)[user]; ok {
			t.Error("a good user was blocked")
		}
	})

	t.Run("bad input", func(t *testing.T) {
		huge := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
		if got := rawTLS(t, gw.addr, user, huge); !strings.HasPrefix(got, "HTTP/1.1 431") {
			t.Errorf("huge headers: %.60q", got)
		}
		smuggle := "POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\n\r\nGET /admin/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		got := rawTLS(t, gw.addr, user, smuggle)
		if n := strings.Count(got, "HTTP/1.1 "); n != 2 || !strings.Contains(got, "HTTP/1.1 403") {
			t.Errorf("CL+TE: %q", got)
		}
		for _, l := range ng.accessLog() {
			if strings.Contains(l, "admin") && !strings.Contains(l, `xff="`+adminIP+`"`) {
				t.Errorf("a smuggled request reached nginx: %q", l)
			}
		}
		if got := rawTLS(t, gw.addr, user, "GARBAGE\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400") {
			t.Errorf("garbage: %.60q", got)
		}
	})

	t.Run("per-address connection limit", func(t *testing.T) {
		const src = "127.0.0.22"
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for i := range 50 { // max_connections_per_address: 50
			d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := tls.DialWithDialer(d, "tcp", gw.addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatalf("connection %d within the limit: %v", i+1, err)
			}
			held = append(held, c)
		}
		if r := curlErr(src, base+"/"); r == nil {
			t.Error("the 51st connection from one address was served")
		}
		if r := curl(t, user, base+"/"); r.code != 200 {
			t.Errorf("another address is unaffected: %d", r.code)
		}
		for _, c := range held {
			c.Close()
		}
		held = nil
		deadline := time.Now().Add(5 * time.Second)
		for curlErr(src, base+"/") != nil {
			if time.Now().After(deadline) {
				t.Fatal("connections from the address are still refused after its others closed")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	if testing.Verbose() {
		t.Logf("nginx access log:\n%s", strings.Join(ng.accessLog(), "\n"))
	}

	t.Run("nginx down: 502, postern stays up", func(t *testing.T) {
		if err := ng.p.stop(syscall.SIGQUIT); err != nil {
			t.Fatalf("stopping nginx: %v", err)
		}
		r := curl(t, user, base+"/")
		if r.code != 502 {
			t.Errorf("backend down: %d %q", r.code, r.body)
		}
		if r := curl(t, outside, base+"/"); r.code != 403 {
			t.Errorf("refusals go on without a backend: %d", r.code)
		}
	})
}

// rawTLS sends text over a TLS connection from src and returns the answer
// until the gateway closes the connection (or 10 s pass).
func rawTLS(t *testing.T, addr, src, text string) string {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, text)
	var b strings.Builder
	r := bufio.NewReader(c)
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			break
		}
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(&b, "HTTP/1.1 %d\r\n%s\n", resp.StatusCode, body)
		if resp.Close {
			break
		}
	}
	return b.String()
}

// curlErr runs curl from src and returns its error (nil for any HTTP
// answer).
func curlErr(src, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "curl", "-sk", "-o", "/dev/null", "--interface", src, url).Run()
}
