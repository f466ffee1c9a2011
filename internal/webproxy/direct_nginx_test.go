package webproxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// startNginx serves dir/www with Debian's nginx on a loopback port until
// the test ends. keepalive_requests is low, so nginx closes keep-alive
// connections itself (with Connection: close) every few requests.
func startNginx(t *testing.T) (addr, www string) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatalf("POSTERN_E2E=1 but nginx is not installed: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"www/dir", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	page := "<html><body>" + strings.Repeat("x", 1000) + "</body></html>\n"
	if err := os.WriteFile(filepath.Join(dir, "www", "index.html"), []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "www", "dir", "index.html"), []byte("dir\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// nginx binds the port itself: a port found free may be taken before
	// it does, so a failed start is tried again on another one.
	for try := 0; try < 5; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = ln.Addr().String()
		ln.Close()
		conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  default_type text/html;
  keepalive_requests 7;
  server {
    listen %[2]s;
    root %[1]s/www;
    location /gone { return 410; }
  }
}
`, dir, addr)
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Cleanup(func() { cmd.Process.Kill(); <-exited })
				return addr, filepath.Join(dir, "www")
			}
			select {
			case <-exited:
			case <-time.After(20 * time.Millisecond):
				if time.Now().Before(deadline) {
					continue
				}
				cmd.Process.Kill()
				<-exited
				t.Fatal("nginx did not start listening")
			}
			break // exited: the port was taken, try another
		}
	}
	t.Fatal("nginx did not start")
	return "", ""
}

// exchangeOn sends one request on c and describes the answer (status,
// headers but Date, body).
func exchangeOn(t *testing.T, c net.Conn, br *bufio.Reader, method, path, extra string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: mail.example.com\r\n%s\r\n", method, path, extra)
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	resp.Header.Del("Date")
	var hs []string
	for k, vv := range resp.Header {
		hs = append(hs, k+"="+strings.Join(vv, "|"))
	}
	slices.Sort(hs)
	return fmt.Sprintf("%d %v %q", resp.StatusCode, hs, body)
}

// TestDirectNginx: against Debian's nginx as the backend, the direct path
// answers every request as the ReverseProxy path does — a page, HEAD, a
// conditional GET (304), a range (206), a redirect, 404 and 410 — over
// many keep-alive requests on one client connection while nginx closes
// its side of backend connections every seventh request.
func TestDirectNginx(t *testing.T) {
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("end-to-end test against nginx: set POSTERN_E2E=1")
	}
	ng, www := startNginx(t)
	fi, err := os.Stat(filepath.Join(www, "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	ims := "If-Modified-Since: " + fi.ModTime().UTC().Format(http.TimeFormat) + "\r\n"
	requests := []struct{ method, path, extra string }{
		{"GET", "/", ""},
		{"HEAD", "/index.html", ""},
		{"GET", "/index.html", ims},
		{"GET", "/index.html", "Range: bytes=0-9\r\n"},
		{"GET", "/dir", ""},
		{"GET", "/missing", ""},
		{"GET", "/gone", ""},
		{"GET", "/index.html", "Connection: X-Hop\r\nX-Hop: 1\r\nX-Forwarded-For: 6.6.6.6\r\n"},
	}
	var got [2][]string
	for i, direct := range []bool{false, true} {
		addr, p := startProxy(t, ng, direct)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		for round := 0; round < 6; round++ {
			for _, r := range requests {
				got[i] = append(got[i], exchangeOn(t, c, br, r.method, r.path, r.extra))
			}
		}
		c.Close()
		if direct {
			p.dc.mu.Lock()
			idle := len(p.dc.idle)
			p.dc.mu.Unlock()
			if idle != 1 {
				t.Errorf("%d idle backend connections after the run, want the one the direct path used", idle)
			}
		}
	}
	for k := range got[0] {
		if got[0][k] != got[1][k] {
			t.Errorf("request %d (%s %s):\nReverseProxy: %s\ndirect:       %s", k, requests[k%len(requests)].method,
				requests[k%len(requests)].path, got[0][k], got[1][k])
		}
	}
	for k, want := range []string{"200 ", "200 ", "304 ", "206 ", "301 ", "404 ", "410 ", "200 "} {
		if !strings.HasPrefix(got[1][k], want) {
			t.Errorf("%s %s: %s, want %s", requests[k].method, requests[k].path, got[1][k], want)
		}
	}
}
