package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The gateway serves the policy servers of its configuration on the
// engine it shares with the inline gateways: a manual block is refused by
// Postfix's and Dovecot's policy and nginx's auth_http; Dovecot's nonce file is created; a
// reload applies a new grant to the next connection.
func TestPolicyServers(t *testing.T) {
	dir := t.TempDir()
	nonce := filepath.Join(dir, "dovecot-nonce")
	state := fmt.Sprintf("store: { path: %s }\nadmin: { listen: \"tcp:127.0.0.1:0\", token_file: %s }\n",
		filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"))
	cfg := filepath.Join(dir, "postern.yaml")
	body := func(grant string) string {
		return state + `policy:
  postfix: { listen: "127.0.0.1:0", grant: "` + grant + `", max_connections: ` + strconv.Itoa(len(grant)) + ` }
  dovecot: { listen: "127.0.0.1:0", grant: "127.0.0.1", hash_nonce_file: dovecot-nonce }
  nginx: { listen: "127.0.0.1:0", backends: { imap: "127.0.0.1:1" }, secret_file: nginx.key, secret_header: X-Mail-Key }
`
	}
	const secret = "gateway-test-secret-42"
	if err := os.WriteFile(filepath.Join(dir, "nginx.key"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, cfg, body("127.0.0.1"))
	var logs syncBuffer
	g, reload := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second})
	ctx := context.Background()
	if b, err := os.ReadFile(nonce); err != nil || len(b) != 64 {
		t.Fatalf("nonce file: %q %v", b, err)
	}
	if _, err := g.Engine().BlockManual(ctx, netip.MustParsePrefix("192.0.2.1/32"), time.Hour, "test", "test"); err != nil {
		t.Fatal(err)
	}
	pf := g.PolicyAddr("postfix").String()
	ask := func() (string, error) {
		c, err := net.DialTimeout("tcp", pf, 5*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=192.0.2.1\n\n")
		return bufio.NewReader(c).ReadString('\n')
	}
	if a, err := ask(); a != "action=554 5.7.1 Blocked (manual)\n" {
		t.Fatalf("postfix policy: %q %v", a, err)
	}
	resp, err := http.Post("http://"+g.PolicyAddr("dovecot").String()+"/?command=allow", "application/json",
		strings.NewReader(`{"login":"bob","pwhash":"1","remote":"192.0.2.1","protocol":"imap"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(b)) != `{"status":-1,"msg":"Blocked (manual)"}` {
		t.Fatalf("dovecot policy: %s", b)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+g.PolicyAddr("nginx").String()+"/auth", nil)
	for k, v := range map[string]string{"Auth-Method": "plain", "Auth-User": "bob", "Auth-Pass": "x", "Auth-Protocol": "imap", "Client-IP": "192.0.2.1"} {
		req.Header.Set(k, v)
	}
	// Without the shared secret of secret_file: 403.
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("nginx auth_http without the secret: HTTP %d", resp.StatusCode)
	}
	req.Header.Set("X-Mail-Key", secret)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := resp.Header.Get("Auth-Status"); st != "Blocked (manual)" || g.PolicyStats("nginx").Requests.Load() != 1 {
		t.Fatalf("nginx auth_http: %q", st)
	}

	writeConfig(t, cfg, body("192.0.2.99"))
	reload <- struct{}{}
	logs.waitLog(t, "configuration reloaded", 1)
	if a, err := ask(); err == nil && a != "" {
		t.Fatalf("postfix policy after the grant moved away: %q", a)
	}
	if log := logs.String(); !strings.Contains(log, "policy.postfix.max_connections") || !strings.Contains(log, "these settings take effect at the next restart") {
		t.Errorf("the reload log does not name the policy key that waits for a restart:\n%s", log)
	}

	// A grant with a host mask does not build: the reload is refused and
	// the running grant stays.
	writeConfig(t, cfg, body("*.example.com"))
	reload <- struct{}{}
	logs.waitLog(t, "configuration reload failed", 1)
	if !strings.Contains(logs.String(), "policy.postfix.grant takes addresses and networks") {
		t.Errorf("reload log:\n%s", logs.String())
	}
}
