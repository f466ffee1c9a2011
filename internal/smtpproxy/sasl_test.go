package smtpproxy

import (
	"encoding/base64"
	"testing"
)

// AUTH reads credentials with the SASL reader of IMAP and POP3 (package
// gate): what that reader refuses never reaches the MTA, and a right
// login read by it does. Before, SMTP had its own lenient reader, which
// took non-zero padding bits and upper-cased the mechanism with Unicode
// rules (a dotless i read as I).
func TestAuthReadsSASLAsTheMailGateways(t *testing.T) {
	h := newHarness(t, guardIPS, nil, nil)
	for _, tc := range []struct {
		name  string
		lines []string // the AUTH command and the answers to its 334s
		codes []int    // the reply to each line
	}{
		{"padding bits", []string{"AUTH PLAIN AGJvYgBwdx=="}, []int{501}},
		{"padding bits, asked", []string{"AUTH PLAIN", "AGJvYgBwdx=="}, []int{334, 501}},
		{"no padding", []string{"AUTH PLAIN AGJvYgBwdw"}, []int{501}},
		{"dotless i", []string{"AUTH logın " + base64.StdEncoding.EncodeToString([]byte("alice@example.test"))}, []int{504}},
		{"LOGIN empty initial", []string{"AUTH LOGIN ="}, []int{501}},
		{"LOGIN cancelled", []string{"AUTH LOGIN", "*"}, []int{334, 501}},
		{"NUL in a LOGIN name", []string{"AUTH LOGIN " + base64.StdEncoding.EncodeToString([]byte("alice\x00x")), base64.StdEncoding.EncodeToString([]byte("pw"))}, []int{334, 501}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.ehloed("127.0.0.61")
			for i, l := range tc.lines {
				c.cmd(l, tc.codes[i])
			}
		})
	}
	if n := h.mta.auth.Count(); n != 0 {
		t.Fatalf("%d refused logins reached the MTA", n)
	}
	c := h.ehloed("127.0.0.61")
	c.cmd("auth plain "+saslPlain64("alice@example.test", "alice-pass-1"), 235)
	if n := h.mta.auth.Count(); n != 1 {
		t.Fatalf("%d logins reached the MTA, want 1", n)
	}
}
