package smtpproxy

import (
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
)

const guardIPS = `services:
  smtp: { listen: ":25", backend: "127.0.0.1:1" }
  submission: { listen: ":587", backend: "127.0.0.1:1" }
intrusion_prevention:
  smtp: { failed_logins: 5 }
`

func (h *harness) ehloed(src string) *client {
	c := h.dial(src)
	c.expect(220)
	c.cmd("EHLO client.example.test", 250)
	return c
}

// TestBlockReachesOpenSMTPConnections: twenty connections opened before the
// block (close_all off): none of them gets a login to the MTA after it, the
// right password included.
func TestBlockReachesOpenSMTPConnections(t *testing.T) {
	h := newHarness(t, guardIPS, nil, nil)
	var cs []*client
	for range 20 {
		cs = append(cs, h.ehloed("127.0.0.51"))
	}
	for i := range 5 {
		cs[i].cmd("AUTH PLAIN "+saslPlain64("alice@example.test", fmt.Sprintf("wrong%d", i)), 535)
	}
	for i, c := range cs[5:] {
		if text := c.cmd("AUTH PLAIN "+saslPlain64("alice@example.test", "alice-pass-1"), 421); !strings.Contains(text, "Blocked (failed logins)") {
			t.Fatalf("connection %d after the block: %q", i+5, text)
		}
		c.closed()
	}
	if n := h.mta.auth.Count(); n != 5 {
		t.Fatalf("%d logins reached the MTA, want 5", n)
	}
}

// TestConcurrentWrongSMTPLogins: ten wrong logins at once, failed_logins 5:
// exactly five reach the MTA.
func TestConcurrentWrongSMTPLogins(t *testing.T) {
	h := newHarness(t, guardIPS, nil, nil)
	release := h.mta.auth.Hold()
	codes := make(chan int, 10)
	var wg sync.WaitGroup
	for i := range 10 {
		c := h.ehloed("127.0.0.52")
		wg.Go(func() {
			c.send("AUTH PLAIN " + saslPlain64("alice@example.test", fmt.Sprintf("wrong%d", i)) + "\r\n")
			code, _ := c.read()
			codes <- code
		})
	}
	h.mta.auth.Wait(t, 5)
	close(release)
	wg.Wait()
	close(codes)
	got := map[int]int{}
	for c := range codes {
		got[c]++
	}
	if n := h.mta.auth.Count(); n != 5 || got[535] != 5 || got[421] != 5 {
		t.Fatalf("%d logins reached the MTA; answers %v; want 5, five 535 and five 421", n, got)
	}
}

// TestParallelRightSMTPLogins: five right logins at once are at the MTA
// together: none waits.
func TestParallelRightSMTPLogins(t *testing.T) {
	h := newHarness(t, guardIPS, nil, nil)
	release := h.mta.auth.Hold()
	var wg sync.WaitGroup
	for i := range 5 {
		c := h.ehloed("127.0.0.53")
		wg.Go(func() {
			c.send("AUTH PLAIN " + saslPlain64("alice@example.test", "alice-pass-1") + "\r\n")
			if code, text := c.read(); code != 235 {
				t.Errorf("login %d: %s", i, text)
			}
		})
	}
	h.mta.auth.Wait(t, 5)
	close(release)
	wg.Wait()
}

func saslPlain64(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}
