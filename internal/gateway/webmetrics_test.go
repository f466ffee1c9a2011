package gateway

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/tlsconf"
)

// The web gateway counts the bytes its backend connections carry, both
// ways, and its failed TLS handshakes with clients.
func TestMetricsWebBytesAndHandshakes(t *testing.T) {
	answer := strings.Repeat("a", 5000)
	var got int
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = len(b)
		io.WriteString(w, answer)
	}))
	t.Cleanup(web.Close)
	dir := t.TempDir()
	cert, key, err := tlsconf.SelfSigned(dir, []string{"localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// the web service goes in through the imap line's tail
	g, _, _, _, _, _ := metricsGateway(t, "", fmt.Sprintf(` }
  web: { listen: "127.0.0.1:0", backend: %q, tls: { cert: %q, key: %q }`, web.URL, filepath.Clean(cert), filepath.Clean(key)))
	waitReady(t, "http://"+g.MetricsAddr().String())
	addr := g.Addr(service.Web).String()

	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.12")}}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	t.Cleanup(hc.CloseIdleConnections)
	body := bytes.Repeat([]byte("b"), 3000)
	resp, err := hc.Post("https://"+addr+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != answer || got != len(body) {
		t.Fatalf("through the gateway: %d, %d bytes back, %d bytes at the backend", resp.StatusCode, len(b), got)
	}
	waitMetric(t, g, float64(len(body)), "postern_relayed_bytes_total", "service", "web", "direction", "to_backend")
	waitMetric(t, g, float64(len(answer)), "postern_relayed_bytes_total", "service", "web", "direction", "to_client")
	if v := metricValue(t, g, "postern_tls_handshake_failures_total", "service", "web"); v != 0 {
		t.Fatalf("handshake failures after a good request: %v", v)
	}

	// plain HTTP to the HTTPS port: a failed handshake
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	io.Copy(io.Discard, c)
	c.Close()
	waitMetric(t, g, 1, "postern_tls_handshake_failures_total", "service", "web")
}
