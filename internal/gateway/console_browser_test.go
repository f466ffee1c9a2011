package gateway

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/postern/postern/internal/console"
	"github.com/postern/postern/internal/service"
)

// The console of a running gateway in Chromium: a guessing loop against
// the POP3 gateway makes an L block that appears in the open queue without
// a reload; a block made in the browser makes the POP3 gateway refuse
// that address's login.
func TestConsoleBrowserAgainstGateway(t *testing.T) {
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("browser test: set POSTERN_E2E=1")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("browser test: no chromium (apt-get install chromium)")
	}
	_, backend := popBackend(t, "backend")
	dir := t.TempDir()
	if err := console.SetPassword(filepath.Join(dir, "console-users"), "alice", "alice console pw", console.HashParams{Time: 1, Memory: 64, Threads: 1}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`store: { path: %s }
admin: { listen: "tcp:127.0.0.1:0", token_file: %s }
console: { listen: "127.0.0.1:0", users_file: console-users }
intrusion_prevention:
  imap_pop3: { failed_logins: 3 }
services:
  pop3: { listen: "127.0.0.1:0", backend: "%s", plaintext_login: "127.0.0.0/8" }
`, filepath.Join(dir, "postern.db"), filepath.Join(dir, "admin.token"), backend))
	var logs syncBuffer
	g, _ := runGateway(t, cfg, Options{Log: &logs, Drain: time.Second})
	logs.waitLog(t, "console listening", 1)
	base := "http://" + g.ConsoleAddr().String()

	actx, cancelA := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	bc, cancelT := context.WithTimeout(bctx, 60*time.Second)
	defer cancelT()
	if err := chromedp.Do(bc,
		chromedp.Navigate(base+"/signin"),
		chromedp.WaitVisible(chromedp.CSS(`#password`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), "alice"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "alice console pw\n"),
		chromedp.WaitVisible(chromedp.CSS(`#h-reasons`)),
		chromedp.Navigate(base+"/blocks"),
		chromedp.WaitVisible(chromedp.CSS(`#rows`)),
		browserPoll(`document.getElementById("live").textContent === "live"`),
	); err != nil {
		t.Fatalf("sign in and open the queue: %v", err)
	}

	// the guessing loop
	pop := g.Addr(service.POP3)
	for i := range 3 {
		p := dialPOPFrom(t, pop, "127.0.0.5")
		p.line()
		p.cmd("USER alice@example.test", "+OK")
		p.cmd(fmt.Sprintf("PASS guess-%d", i), "-ERR")
		p.c.Close()
	}
	if err := chromedp.Do(bc, browserPoll(`document.getElementById("rows").textContent.includes("127.0.0.5")`)); err != nil {
		t.Fatalf("the L block did not appear in the open queue: %v", err)
	}
	rows, err := chromedp.Run(bc, chromedp.Text(chromedp.CSS(`#rows`)))
	if err != nil || !strings.Contains(rows, "failed logins") || !strings.Contains(rows, "pop3") {
		t.Fatalf("queue rows %q: %v", rows, err)
	}

	// a block made in the browser
	if err := chromedp.Do(bc,
		chromedp.SendKeys(chromedp.CSS(`#b-target`), "127.0.0.6"),
		chromedp.Submit(chromedp.CSS(`#b-target`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	); err != nil {
		t.Fatal(err)
	}
	p := dialPOPFrom(t, pop, "127.0.0.6")
	if l, err := p.r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "-ERR") || !strings.Contains(l, "Blocked") {
		t.Fatalf("the POP3 gateway did not refuse an address blocked in the console: %q, %v", l, err)
	}
	// and the same login from an address not blocked works
	ok := dialPOPFrom(t, pop, "127.0.0.8")
	ok.login()
}

// browserPoll waits (up to 10 s) until the expression is true in the page.
func browserPoll(expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))(ctx, t)
		return chromedp.Void{}, err
	}
}
