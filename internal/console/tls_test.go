package console

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/tlsconf"
)

// With TLS the session cookie is Secure under the __Host- prefix, and
// answers carry HSTS.
func TestTLSCookieSecure(t *testing.T) {
	w := newWorld(t)
	cert, key, err := tlsconf.SelfSigned(t.TempDir(), []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	opts := w.srv.opts
	opts.TLS = certs.ServerConfig()
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	base := "https://" + ln.Addr().String()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(base + "/signin")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS over TLS")
	}
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no form token:\n%s", body)
	}
	resp, err = hc.PostForm(base+"/signin", url.Values{"csrf": {string(m[1])}, "user": {testUser}, "password": {testPassword}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var found bool
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(sc, "__Host-postern-console=") {
			found = true
			for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} {
				if !strings.Contains(sc, attr) {
					t.Errorf("session cookie %q lacks %s", sc, attr)
				}
			}
		}
	}
	if resp.StatusCode != http.StatusSeeOther || !found {
		t.Fatalf("sign-in over TLS: %d, cookies %q", resp.StatusCode, resp.Header.Values("Set-Cookie"))
	}
}
