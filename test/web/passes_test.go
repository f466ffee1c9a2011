package web

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// passCmd runs `postern pass ARGS -c CFG` against the gateway's admin API.
func (g *gateway) passCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, posternBin, append(append([]string{"pass"}, args...), "-c", g.cfg)...).CombinedOutput()
	return string(out), err
}

// TestRoundcubeTravelPass: the CEO may log in to the webmail only from the
// admin address ("ceo@example.test=[Admins]"). From another address of
// the web service's country (127.0.0.16/28 is "MY") his right password is
// refused with the restriction's 401 and PHP sees a decoy; with a travel
// pass `--from country:MY --for 20s` the same login reaches PHP with his
// password and gets Roundcube's 302; once the pass has ended (nothing
// removes it) the login is refused again.
func TestRoundcubeTravelPass(t *testing.T) {
	needE2E(t)
	rc := startRoundcube(t)
	gw := startGatewayWith(t, rc.addr, roundcubeForm, "")
	base := "https://" + gw.addr
	const form = "application/x-www-form-urlencoded"
	const login = "_token=t&_task=login&_action=login&_timezone=UTC&_url=&_user=ceo%40example.test&_pass=ceo-pass-1"
	const away, during = "127.0.0.19", "127.0.0.31"

	if code := post(t, away, base+"/?_task=login", form, login); code != 401 {
		t.Fatalf("the CEO from %s without a pass: %d, want the restriction's 401", away, code)
	}
	out, err := gw.passCmd(t, "add", "ceo@example.test", "--from", "country:MY", "--for", "20s", "--comment", "web e2e")
	if err != nil {
		t.Fatalf("pass add: %v\n%s", err, out)
	}
	out, err = gw.passCmd(t, "list", "--json")
	var l struct{ Passes []struct{ Until time.Time } }
	if err != nil || json.Unmarshal([]byte(out), &l) != nil || len(l.Passes) != 1 {
		t.Fatalf("pass list: %v\n%s", err, out)
	}
	until := l.Passes[0].Until

	if code := post(t, during, base+"/?_task=login", form, login); code != 302 {
		t.Fatalf("the CEO from %s with the pass: %d, want Roundcube's 302", during, code)
	}
	if time.Now().After(until) {
		t.Fatalf("the login under the pass took longer than the pass (%s)", until)
	}
	// The pass ends on the clock: poll the list, which hides ended passes.
	for deadline := until.Add(10 * time.Second); ; {
		out, err := gw.passCmd(t, "list")
		if err == nil && strings.Contains(out, "no travel passes") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pass is still listed 10s after its end (%s): %v\n%s", until, err, out)
		}
		time.Sleep(500 * time.Millisecond) // each poll runs the CLI
	}
	if code := post(t, during, base+"/?_task=login", form, login); code != 401 {
		t.Fatalf("the CEO from %s after the pass: %d, want the restriction's 401", during, code)
	}

	// PHP checked the CEO's password once: the login under the pass; the
	// two refused logins carried decoys.
	var real, decoys int
	for _, line := range strings.Split(strings.TrimSpace(rc.logins(t)), "\n") {
		var e struct{ User, Pass string }
		if json.Unmarshal([]byte(line), &e) != nil || e.User != "ceo@example.test" {
			continue
		}
		if e.Pass == "ceo-pass-1" {
			real++
		} else {
			decoys++
		}
	}
	if real != 1 || decoys != 2 {
		t.Errorf("PHP saw the CEO's password %d times and decoys %d times, want 1 and 2:\n%s", real, decoys, rc.logins(t))
	}
}
