package web

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestWebRefusalTiming: a webmail login the login IP restriction refuses
// (the CEO's account from a non-admin address) goes to the webmail with a
// decoy password: the answer is the webmail's own failure, byte for byte
// the answer to a wrong password, from the first login after start, in the
// webmail's own time. The medians of interleaved refused logins and wrong
// passwords (alice, no restriction) differ by less than 20% (or 3 ms: the
// stand-in answers a wrong password at once, so the times are scheduling
// noise). See docs/security/refusals.md.
func TestWebRefusalTiming(t *testing.T) {
	needE2E(t)
	ng := startNginx(t)
	gw := startGateway(t, ng.addr)
	login := "https://" + gw.addr + "/login"
	try := func(src, user, pass string) (int, string, time.Duration) {
		t.Helper()
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}).DialContext,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
			DisableKeepAlives: true,
		}}
		defer c.CloseIdleConnections()
		// The connection first: the time is the login's, not the TLS
		// handshake's.
		if resp, err := c.Get("https://" + gw.addr + "/"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		body := url.Values{"username": {user}, "password": {pass}}.Encode()
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, login, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("login of %s from %s: %v", user, src, err)
		}
		d := time.Since(start)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b), d
	}
	const ceo, alice = "ceo@example.test", "alice@example.test"
	// The first login since start: refused, and already the webmail's own
	// failure page.
	code, page, _ := try("127.0.0.25", ceo, "first")
	_, wrongPage, _ := try("127.0.0.30", alice, "wrong-first")
	if code != 401 || page != wrongPage {
		t.Fatalf("first refused login: %d %q, want the webmail's 401 page %q", code, page, wrongPage)
	}
	var refused, wrong []time.Duration
	srcs := []string{"127.0.0.26", "127.0.0.27", "127.0.0.28", "127.0.0.29"}
	for i := range 8 { // two pairs per address: 4 failures, below failed_logins 5
		src := srcs[i/2]
		w, wb, dw := try(src, alice, "wrong")
		r, rb, dr := try(src, ceo, "guess")
		if w != 401 || r != w || rb != wb {
			t.Fatalf("pair %d from %s: wrong password %d, refused %d: want the same 401", i, src, w, r)
		}
		refused, wrong = append(refused, dr), append(wrong, dw)
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	mr, mw := med(refused), med(wrong)
	t.Logf("web: refused median %v (max %v), wrong password median %v (max %v)", mr, slices.Max(refused), mw, slices.Max(wrong))
	if diff := (mr - mw).Abs(); float64(diff) >= 0.2*float64(max(mr, mw)) && diff >= 3*time.Millisecond {
		t.Fatalf("medians differ by %v: refused %v, wrong password %v", diff, mr, mw)
	}
}
