package smtpproxy

import (
	"crypto/tls"
	"strings"
	"testing"
)

// What postern answers to EHLO, for each kind of session, from one
// backend answer kept for every session while the backend answers alike;
// an answer that changes is followed.
func TestEHLOKept(t *testing.T) {
	backend := reply{code: 250, lines: []string{"250-mx.example.test", "250-PIPELINING", "250-SIZE 10240000",
		"250-ETRN", "250-AUTH PLAIN LOGIN", "250-BINARYMIME", "250 8BITMIME"}}
	p := &Proxy{cfg: Config{TLS: &tls.Config{}}}
	answer := func(tlsOn, authed, insecure bool, r reply) string {
		p.cfg.AllowInsecureAuth = insecure
		s := &session{p: p, tls: tlsOn, authed: authed}
		out := s.filterEHLO(r)
		if s.sizeLimit != 10240000 {
			t.Errorf("size limit %d", s.sizeLimit)
		}
		return strings.Join(out.lines, "|")
	}
	const base = "250-mx.example.test|250-PIPELINING|250-SIZE 10240000|250-BINARYMIME|"
	cases := []struct {
		tls, authed, insecure bool
		want                  string
	}{
		{false, false, false, base + "250-8BITMIME|250 STARTTLS"},
		{false, false, true, base + "250-8BITMIME|250-STARTTLS|250 AUTH PLAIN LOGIN"},
		{true, false, false, base + "250-8BITMIME|250 AUTH PLAIN LOGIN"},
		{true, true, false, base + "250 8BITMIME"},
	}
	for round := range 2 { // the second from the kept set
		for _, c := range cases {
			if got := answer(c.tls, c.authed, c.insecure, backend); got != c.want {
				t.Errorf("round %d, tls %v authed %v insecure %v:\n got %s\nwant %s", round, c.tls, c.authed, c.insecure, got, c.want)
			}
		}
	}
	kept := p.ehlo.Load()
	changed := reply{code: 250, lines: []string{"250-mx.example.test", "250-SIZE 10240000", "250 DSN"}}
	if got := answer(true, true, false, changed); got != "250-mx.example.test|250-SIZE 10240000|250 DSN" {
		t.Errorf("after the backend's answer changed: %s", got)
	}
	if p.ehlo.Load() == kept {
		t.Error("the changed answer was not kept")
	}
	// A scanner drops BINARYMIME: not the set kept without one.
	p.cfg.Scan.Scanner = &fakeScanner{}
	if got := answer(true, true, false, backend); strings.Contains(got, "BINARYMIME") {
		t.Errorf("with a scanner: %s", got)
	}
}
