package smtpproxy

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/spamscan"
)

// fakeScanner scores messages by a word in them and records what it saw.
type fakeScanner struct {
	seen []string
	fail bool
}

func (f *fakeScanner) Name() string { return "fake" }
func (f *fakeScanner) Scan(ctx context.Context, m spamscan.Message) (spamscan.Verdict, error) {
	b, _ := io.ReadAll(io.NewSectionReader(m.Body, 0, m.Size))
	f.seen = append(f.seen, string(b))
	if f.fail {
		return spamscan.Verdict{}, errors.New("scanner down")
	}
	if strings.Contains(string(b), "SPAMSPAM") {
		return spamscan.Verdict{Score: 20, Action: "reject"}, nil
	}
	return spamscan.Verdict{Score: 1, Action: "no action"}, nil
}

func TestSpamScanning(t *testing.T) {
	cfg := strings.Replace(baseIPS, "dnsbl: [bl.example.org] }", "dnsbl: [bl.example.org], spam_score: 8.5 }", 1)
	fs := &fakeScanner{}
	h := newHarness(t, cfg, func(c *Config) { c.Scan = Scanning{Scanner: fs, Reject: true, MemLimit: 64} }, nil)
	c := h.dial("127.0.0.60")
	c.expect(220)
	c.cmd("EHLO x", 250)
	// A clean message is scanned (dot-unstuffed) and relayed byte for byte.
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	c.send(msg + ".\r\n")
	if text := c.expect(250); !strings.Contains(text, "queued as") {
		t.Fatalf("final reply: %q", text)
	}
	want := strings.Replace(msg, "\r\n..", "\r\n.", 1)
	if len(fs.seen) != 1 || fs.seen[0] != want {
		t.Fatalf("scanner saw %q", fs.seen)
	}
	if m := h.mta.messages(); len(m) != 1 || string(m[0].Data) != want {
		t.Fatalf("delivered: %+v", m)
	}
	// Spam is refused before the backend sees it, and blocks the sender (S).
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: buy\r\n\r\nSPAMSPAM\r\n.\r\n")
	if text := c.expect(554); !strings.Contains(text, "spam") {
		t.Fatalf("spam reply: %q", text)
	}
	c.expect(421)
	if b, _ := h.eng.BlockOf(netip.MustParseAddr("127.0.0.60")); b.Reason != reason.Spam || !strings.Contains(b.Detail, "score 20.00") {
		t.Fatalf("S block: %+v", b)
	}
	if n := len(h.mta.messages()); n != 1 {
		t.Fatalf("spam was delivered (%d messages)", n)
	}
	// A failing scanner never loses mail.
	fs.fail = true
	c = h.dial("127.0.0.61")
	c.expect(220)
	c.cmd("EHLO x", 250)
	c.cmd("MAIL FROM:<a@example.org>", 250)
	c.cmd("RCPT TO:<alice@example.test>", 250)
	c.cmd("DATA", 354)
	c.send("Subject: buy\r\n\r\nSPAMSPAM\r\n.\r\n")
	c.expect(250)
	if n := len(h.mta.messages()); n != 2 {
		t.Fatalf("a message was lost when the scanner failed (%d)", n)
	}
}
