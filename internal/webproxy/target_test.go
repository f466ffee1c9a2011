package webproxy

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// A request target that is not a path — an opaque URI ("a:/admin", which
// Go reads as scheme "a" and no path) or a scheme other than http(s) —
// gets 400 and never reaches the backend: the path rules could not judge
// it as the backend would read it. Paths, "*" and http absolute URIs go
// on, on both of the gateway's paths to the backend.
func TestRefusesTargetsThatAreNotPaths(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		w.Write([]byte("ok"))
	}), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go be.Serve(ln)
	t.Cleanup(func() { be.Close() })
	for _, direct := range []bool{true, false} {
		addr, _ := startProxy(t, ln.Addr().String(), direct)
		for _, tc := range []struct {
			target string
			status int
		}{
			{"A:A:/Admin", http.StatusBadRequest},
			{"a:/admin", http.StatusBadRequest},
			{"mailto:/admin", http.StatusBadRequest},
			{"ftp://x/admin", http.StatusBadRequest},
			{"urn:x:/webmail/", http.StatusBadRequest},
			{"/webmail/", http.StatusOK},
			{"http://x/webmail/", http.StatusOK},
			{"HTTPS://x/webmail/", http.StatusOK},
		} {
			mu.Lock()
			seen = nil
			mu.Unlock()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte("GET " + tc.target + " HTTP/1.1\r\nHost: x\r\n\r\n"))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			c.Close()
			if err != nil {
				t.Fatalf("direct=%v %s: %v", direct, tc.target, err)
			}
			resp.Body.Close()
			mu.Lock()
			got := seen
			mu.Unlock()
			if resp.StatusCode != tc.status {
				t.Errorf("direct=%v GET %s: status %d, want %d", direct, tc.target, resp.StatusCode, tc.status)
			}
			if reached := len(got) > 0; reached != (tc.status == http.StatusOK) {
				t.Errorf("direct=%v GET %s: backend saw %q", direct, tc.target, strings.Join(got, " "))
			}
		}
	}
}
