package console

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser starts headless Chromium for a test, or skips: the browser
// tests run with POSTERN_E2E=1 on a machine with Debian's chromium.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	if os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("browser test: set POSTERN_E2E=1")
	}
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("browser test: no chromium (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root
		chromedp.DisableGPU,
		chromedp.WindowSize(width, height),
		chromedp.Flag("lang", "en-US"),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelC := chromedp.NewContext(actx)
	if err := chromedp.Do(bctx); err != nil { // starts the browser: no deadline on this one
		cancelC()
		cancelA()
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancelT := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return ctx
}

// shot saves a screenshot of the viewport under POSTERN_CONSOLE_SHOTS,
// when set (docs/console is made so).
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("POSTERN_CONSOLE_SHOTS")
	if dir == "" {
		return
	}
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), buf, 0o644); err != nil {
		t.Fatal(err)
	}
}

func signInBrowser(t *testing.T, ctx context.Context, w *world) {
	t.Helper()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.url+"/blocks"),
		chromedp.WaitVisible(chromedp.CSS(`#password`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), testUser),
		chromedp.SendKeys(chromedp.CSS(`#password`), testPassword+"\n"),
		chromedp.WaitVisible(chromedp.CSS(`#h-reasons`)),
	); err != nil {
		t.Fatalf("sign in: %v", err)
	}
}

// The Blocked IPs queue in a real browser: sign in; a block the engine
// makes from failed logins appears without a reload; filter and search;
// unblock a selected row; block an address by hand and see the engine
// refuse it.
func TestBrowserQueue(t *testing.T) {
	ctx := browser(t, 1280, 860)
	w := newWorld(t)
	ctx0 := context.Background()
	for _, a := range []string{"198.51.100.7", "203.0.113.9"} {
		if _, err := w.eng.BlockManual(ctx0, netip.MustParsePrefix(a+"/32"), 4*time.Hour, "seen spraying", "admin:test"); err != nil {
			t.Fatal(err)
		}
	}
	failLogins(t, w, "192.0.2.44", 3)
	shotSignin(t, ctx, w)
	signInBrowser(t, ctx, w)
	// the dashboard follows new blocks: two L blocks in the last hour
	failLogins(t, w, "192.0.2.45", 3)
	if err := chromedp.Do(ctx, void(chromedp.Poll[bool](`document.getElementById("dash").textContent.includes("4 active blocks")`, chromedp.WithPollingTimeout(10*time.Second)))); err != nil {
		t.Fatalf("the dashboard did not follow a new block: %v", err)
	}
	shot(t, ctx, "dashboard")

	// the queue, then a block made by the engine appears by itself
	var text string
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.url+"/blocks"),
		chromedp.WaitVisible(chromedp.CSS(`#rows`)),
		chromedp.WaitReady(chromedp.CSS(`#live`)),
		void(chromedp.Poll[bool](`document.getElementById("live").textContent === "live"`, chromedp.WithPollingTimeout(10*time.Second))),
	); err != nil {
		t.Fatalf("queue: %v", err)
	}
	failLogins(t, w, "192.0.2.99", 3)
	if err := chromedp.Do(ctx,
		void(chromedp.Poll[bool](`document.getElementById("rows").textContent.includes("192.0.2.99")`, chromedp.WithPollingTimeout(10*time.Second))),
	); err != nil {
		t.Fatalf("the new block did not appear without a reload: %v", err)
	}
	shot(t, ctx, "blocks")

	// filter by reason, then search by prefix
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#f-reason`), "L"),
		chromedp.Click(chromedp.CSS(`.filters button[type=submit]`)),
		loaded("reason=L"),
	); err != nil {
		t.Fatal(err)
	}
	text = textOf(t, ctx, "#rows")
	if !strings.Contains(text, "192.0.2.44") || strings.Contains(text, "198.51.100.7") {
		t.Fatalf("filter by reason L:\n%s", text)
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.url+"/blocks"),
		chromedp.SendKeys(chromedp.CSS(`#f-search`), "203.0.113.0/24\n"),
		loaded("search=203.0.113.0"),
	); err != nil {
		t.Fatal(err)
	}
	text = textOf(t, ctx, "#rows")
	if !strings.Contains(text, "203.0.113.9") || strings.Contains(text, "192.0.2.44") {
		t.Fatalf("search 203.0.113.0/24:\n%s", text)
	}

	// unblock the selected row
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`input[name=target][value="203.0.113.9"]`)),
		chromedp.Click(chromedp.CSS(`button[value=unblock]`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	); err != nil {
		t.Fatal(err)
	}
	text = textOf(t, ctx, ".flash")
	if text != "Unblocked 1." || w.refuses("203.0.113.9") {
		t.Fatalf("unblock: %q, still refused: %v", text, w.refuses("203.0.113.9"))
	}

	// a manual block: the engine refuses the address
	if err := chromedp.Do(ctx,
		chromedp.Navigate(w.url+"/blocks"),
		chromedp.SendKeys(chromedp.CSS(`#b-target`), "192.0.2.200"),
		chromedp.SendKeys(chromedp.CSS(`#b-duration`), "2h"),
		chromedp.SendKeys(chromedp.CSS(`#b-comment`), "from the console"),
		chromedp.Submit(chromedp.CSS(`#b-target`)),
		chromedp.WaitVisible(chromedp.CSS(`.flash`)),
	); err != nil {
		t.Fatal(err)
	}
	text = textOf(t, ctx, ".flash")
	if text != "Blocked 192.0.2.200." || !w.refuses("192.0.2.200") {
		t.Fatalf("manual block: %q, refused: %v", text, w.refuses("192.0.2.200"))
	}

	// the other pages
	for _, p := range []struct{ path, wait, name string }{
		{"/explain?ip=192.0.2.44&service=imap", ".verdict", "explain"},
		{"/audit", "table", "audit"},
		{"/config", "pre.config", "config"},
	} {
		if err := chromedp.Do(ctx, chromedp.Navigate(w.url+p.path), chromedp.WaitVisible(chromedp.CSS(p.wait))); err != nil {
			t.Fatalf("%s: %v", p.path, err)
		}
		shot(t, ctx, p.name)
	}
}

func shotSignin(t *testing.T, ctx context.Context, w *world) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(w.url+"/signin"), chromedp.WaitVisible(chromedp.CSS(`#password`))); err != nil {
		t.Fatal(err)
	}
	shot(t, ctx, "signin")
}

// The queue at a phone's width, keyboard only: the sign-in form is
// reached and sent with the keyboard, and the queue fits.
func TestBrowserNarrowAndKeyboard(t *testing.T) {
	ctx := browser(t, 800, 900)
	w := newWorld(t)
	failLogins(t, w, "192.0.2.44", 3)
	if err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(w.url+"/signin"),
		chromedp.WaitVisible(chromedp.CSS(`#user`)),
		chromedp.KeyEvent(testUser), // the user field has the focus
		chromedp.KeyEvent("\t"),
		chromedp.KeyEvent(testPassword),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`#h-reasons`)),
		chromedp.Navigate(w.url+"/blocks"),
		chromedp.WaitVisible(chromedp.CSS(`#rows`)),
	); err != nil {
		t.Fatalf("keyboard sign-in: %v", err)
	}
	overflow, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Error("the queue page is wider than a 390 px screen")
	}
	shot(t, ctx, "blocks-390")
}

// Wrong passwords typed in the browser get the address blocked; the
// console then refuses it.
func TestBrowserWrongPasswordsBlock(t *testing.T) {
	ctx := browser(t, 1280, 860)
	w := newWorld(t)
	for i := range 3 {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(w.url+"/signin"),
			chromedp.WaitVisible(chromedp.CSS(`#password`)),
			chromedp.SendKeys(chromedp.CSS(`#user`), testUser),
			chromedp.SendKeys(chromedp.CSS(`#password`), "guess "+string(rune('a'+i))+"\n"),
			chromedp.WaitVisible(chromedp.CSS(`.error`)),
		); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if !w.refuses("127.0.0.1") {
		t.Fatal("three wrong passwords did not block the address")
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(w.url+"/signin")); err != nil {
		t.Fatal(err)
	}
	body := textOf(t, ctx, "body")
	if !strings.Contains(body, "blocked") {
		t.Fatalf("a blocked address got: %q", body)
	}
}

// textOf returns the text of the first element matching the CSS selector.
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// void drops an action's value, for chromedp.Do.
func void[T any](a chromedp.Action[T]) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := a(ctx, t)
		return chromedp.Void{}, err
	}
}

// loaded waits until the page at a URL holding query has loaded (after a
// form was sent, the old page is still there for a moment). It asks the
// page again while it navigates, up to 10 s.
func loaded(query string) chromedp.Action[chromedp.Void] {
	expr := `location.search.includes(` + strconv.Quote(query) + `) && document.readyState === "complete" && document.getElementById("rows") !== null`
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			ok, err := chromedp.Evaluate[bool](expr)(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			if time.Now().After(deadline) {
				return chromedp.Void{}, fmt.Errorf("page with %q not loaded: %v", query, err)
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}
