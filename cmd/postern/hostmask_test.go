package main

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/fcrdns/fcrdnstest"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
)

// explain and pattern test say which host mask matched and with what name,
// or why no name could be used, looking names up on a real DNS server.
func TestExplainHostMasks(t *testing.T) {
	z := fcrdnstest.Start(t,
		fcrdnstest.PTR(t, "192.0.2.1", "mail.partner.example."), "mail.partner.example. 300 IN A 192.0.2.1",
		fcrdnstest.PTR(t, "192.0.2.2", "spoof.partner.example."), "spoof.partner.example. 300 IN A 192.0.2.200",
		fcrdnstest.PTR(t, "192.0.2.4", "www.other.example."), "www.other.example. 300 IN A 192.0.2.4",
		fcrdnstest.PTR(t, "10.20.1.1", "pc.partner.example."), "pc.partner.example. 300 IN A 10.20.1.1",
	)
	z.Silent(fcrdnstest.Reverse(t, "192.0.2.3"))
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, `dns: { resolver: "`+z.Addr+`", timeout: 300ms, cache: 10m }
patterns:
  Partners: "*.partner.example; !guest.partner.example"
services:
  imap: { listen: ":143", backend: "127.0.0.1:1143", grant: "10.20.*; [Partners]" }
`)
	cases := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"pattern", "test", "-c", cfg, "Partners", "192.0.2.1"}, 0, []string{
			"192.0.2.1 is in [Partners]",
			"[Partners] item *.partner.example at " + cfg + ":3:14 (client name mail.partner.example, forward-confirmed)",
		}},
		{[]string{"pattern", "test", "-c", cfg, "Partners", "192.0.2.2"}, 1, []string{
			"192.0.2.2 is not in [Partners]: no item matches",
			"host masks matched nothing: no verified client name (not confirmed by the forward lookup: spoof.partner.example does not resolve back to 192.0.2.2)",
		}},
		{[]string{"pattern", "test", "-c", cfg, "Partners", "192.0.2.9"}, 1, []string{
			"host masks matched nothing: no verified client name (no PTR record for 192.0.2.9)",
		}},
		{[]string{"pattern", "test", "-c", cfg, "Partners", "192.0.2.3"}, 1, []string{
			"host masks matched nothing: no verified client name (PTR lookup of 192.0.2.3: DNS timeout",
		}},
		{[]string{"pattern", "test", "-c", cfg, "Partners", "192.0.2.4"}, 1, []string{
			"client name www.other.example (forward-confirmed) decided nothing here",
		}},
		{[]string{"explain", "-c", cfg, "--ip", "192.0.2.1", "--service", "imap"}, 0, []string{
			"imap grant  \"10.20.*; [Partners]\" at " + cfg + ":5:",
			"item [Partners] at " + cfg + ":5:",
			"[Partners] item *.partner.example at " + cfg + ":3:14 (client name mail.partner.example, forward-confirmed)",
			"decision  allow",
		}},
		{[]string{"explain", "-c", cfg, "--ip", "10.20.1.1", "--service", "imap"}, 0, []string{
			"item 10.20.* at " + cfg + ":5:",
			"client name pc.partner.example (forward-confirmed) decided nothing here",
			"decision  allow",
		}},
		{[]string{"explain", "-c", cfg, "--ip", "192.0.2.9", "--service", "imap"}, 1, []string{
			"does not grant",
			"host masks matched nothing: no verified client name (no PTR record for 192.0.2.9)",
			"decision  deny",
		}},
	}
	for _, c := range cases {
		code, out, errs := postern(t, c.args...)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d\n%s%s", c.args[:2], code, c.code, out, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v %s: output lacks %q:\n%s", c.args[:2], c.args[len(c.args)-1], w, out)
			}
		}
	}
}

// The running gateway admits by host masks: its engine's Admit (unchanged)
// asks the policy, which verifies the client's name on the configured DNS
// server, and logins are restricted by name the same way.
func TestGatewayAdmitsByHostMask(t *testing.T) {
	z := fcrdnstest.Start(t,
		fcrdnstest.PTR(t, "127.0.0.2", "client.partner.example."), "client.partner.example. 300 IN A 127.0.0.2",
		fcrdnstest.PTR(t, "127.0.0.3", "liar.partner.example."), "liar.partner.example. 300 IN A 127.0.0.99",
		fcrdnstest.PTR(t, "127.0.0.5", "ceo.office.example."), "ceo.office.example. 300 IN A 127.0.0.5",
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, `dns: { resolver: "`+z.Addr+`", timeout: 1s, cache: 10m }
services:
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:1", grant: "*.partner.example; *.office.example" }
login_restrictions:
  - "ceo@example.com=*.office.example"
`+stateConfig(t, dir))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	g, err := startGateway(ctx, cfg, &logs)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("gateway did not stop")
		}
	}()
	for addr, want := range map[string]guard.Action{
		"127.0.0.2": guard.Allow,  // forward-confirmed client.partner.example
		"127.0.0.3": guard.Refuse, // its PTR name does not resolve back
		"127.0.0.4": guard.Refuse, // no PTR
		"127.0.0.5": guard.Allow,
	} {
		if got := g.Engine().Admit(netip.MustParseAddr(addr), service.IMAP).Action; got != want {
			t.Errorf("Admit %s = %v, want %v", addr, got, want)
		}
	}
	pol := g.Snapshot().Policy
	if !pol.AllowLogin("ceo@example.com", netip.MustParseAddr("127.0.0.5")) || pol.AllowLogin("ceo@example.com", netip.MustParseAddr("127.0.0.2")) {
		t.Error("login restriction by host mask")
	}
	q := z.Queries()
	g.Engine().Admit(netip.MustParseAddr("127.0.0.2"), service.IMAP)
	g.Engine().Admit(netip.MustParseAddr("127.0.0.4"), service.IMAP)
	if z.Queries() != q {
		t.Errorf("cached names were looked up again (%d queries)", z.Queries()-q)
	}
}

// Access to postern's own surfaces never rests on DNS: a host mask in
// admin.grant, console.grant or metrics.grant is an error at start.
func TestSurfaceGrantsRefuseHostMasks(t *testing.T) {
	z := fcrdnstest.Start(t)
	for _, key := range []string{"admin", "console", "metrics"} {
		t.Run(key, func(t *testing.T) {
			dir := t.TempDir()
			grants := map[string]string{"admin": "", "console": "", "metrics": ""}
			grants[key] = `, grant: "127.0.0.1; *.admins.example"`
			cfg := filepath.Join(dir, "postern.yaml")
			writeFile(t, cfg, `dns: { resolver: "`+z.Addr+`" }
services:
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:1" }
store: { path: `+filepath.Join(dir, "state", "postern.db")+` }
admin: { listen: "tcp:127.0.0.1:0", token_file: `+filepath.Join(dir, "state", "admin.token")+grants["admin"]+` }
console: { listen: "127.0.0.1:0"`+grants["console"]+` }
metrics: { listen: "127.0.0.1:0"`+grants["metrics"]+` }
`)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var logs syncBuffer
			g, err := startGateway(ctx, cfg, &logs)
			if err == nil {
				cancel()
				g.Run(ctx, nil) // releases what Start bound
			}
			if want := key + ".grant takes addresses and networks, not host masks"; err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want %q", err, want)
			}
		})
	}
}
