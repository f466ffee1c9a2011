package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/webhook"
)

// A gateway with a webhook announces a rejected reload (reload_failed)
// and a block made through its engine, signed with the configured
// secret; deliveries are counted in the metrics.
func TestWebhooksReloadFailedAndBlock(t *testing.T) {
	secret := "webhook-secret-0123456789"
	got := make(chan webhook.Event, 8)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := webhook.Verify([]byte(secret), r.Header.Get(webhook.SignatureHeader), b, time.Now(), 0); err != nil {
			t.Errorf("signature: %v", err)
		}
		var ev webhook.Event
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Errorf("body %s: %v", b, err)
		}
		got <- ev
	}))
	defer recv.Close()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.key"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := fmt.Sprintf("store: { path: %s }\nadmin: { listen: \"tcp:127.0.0.1:0\", token_file: %s }\nmetrics: { listen: \"127.0.0.1:0\" }\nnode: gw1\n",
		filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"))
	hooks := `webhooks:
  - { name: ops, url: "` + recv.URL + `/hook", events: [reload_failed, block], secret_file: hook.key, timeout: 2s }
`
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, state+hooks)
	var logs syncBuffer
	g, reload := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second})

	writeConfig(t, cfg, state+hooks+"no_such_key: 1\n")
	reload <- struct{}{}
	ev := next(t, got)
	if ev.Type != "reload_failed" || ev.Node != "gw1" || ev.Reload == nil || !strings.Contains(ev.Reload.Error, "no_such_key") ||
		!strings.HasPrefix(ev.Text, "postern gw1: configuration reload failed") {
		t.Fatalf("reload_failed: %+v", ev)
	}
	if strings.Contains(logs.String(), secret) {
		t.Fatal("the webhook secret is in the log")
	}

	p := netip.MustParsePrefix("192.0.2.0/24")
	if _, err := g.Engine().BlockManual(t.Context(), p, time.Hour, "test", "cli"); err != nil {
		t.Fatal(err)
	}
	ev = next(t, got)
	if ev.Type != "block" || ev.Block == nil || ev.Block.Prefix != p.String() || ev.Block.Actor != "admin:cli" {
		t.Fatalf("block: %+v", ev)
	}
	if _, err := g.Engine().Unblock(t.Context(), []netip.Prefix{p}, "cli"); err != nil { // not subscribed
		t.Fatal(err)
	}

	// A reload that changes the webhook's events takes effect.
	writeConfig(t, cfg, state+strings.Replace(hooks, "[reload_failed, block]", "[unblock]", 1))
	reload <- struct{}{}
	logs.waitLog(t, "webhooks reconfigured", 1)
	if _, err := g.Engine().BlockManual(t.Context(), p, time.Hour, "test", "cli"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Engine().Unblock(t.Context(), []netip.Prefix{p}, "cli"); err != nil {
		t.Fatal(err)
	}
	if ev = next(t, got); ev.Type != "unblock" {
		t.Fatalf("after the reload: %+v", ev)
	}
	deadline := time.Now().Add(10 * time.Second)
	for delivered(t, g) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("deliveries not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func next(t *testing.T, ch <-chan webhook.Event) webhook.Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook event")
		return webhook.Event{}
	}
}

// delivered reads postern_webhook_deliveries_total{webhook="ops",outcome="delivered"}.
func delivered(t *testing.T, g *Gateway) float64 {
	t.Helper()
	mfs, err := g.obs.m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "postern_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["webhook"] == "ops" && labels["outcome"] == "delivered" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
