package gate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
)

// handshaker counts handshakes and fails them with err.
type handshaker struct {
	n   int
	err error
}

func (h *handshaker) Handshake(time.Duration) error { h.n++; return h.err }

// The verdict at the door, the same for SMTP, IMAP and POP3: what is
// said, whether the handshake runs, the tarpit, and whether the session
// ends.
func TestDoor(t *testing.T) {
	blocked := guard.Decision{Action: guard.Refuse, Blocked: true, Reason: reason.Login}
	for _, tc := range []struct {
		name        string
		v           guard.Verdict
		implicitTLS bool
		hsErr       error
		ends        bool
		handshakes  int
		said        string // "connect: …" or "close: …"
		tarpit      time.Duration
	}{
		{name: "allow", v: guard.Verdict{}},
		{name: "allow, implicit TLS", v: guard.Verdict{}, implicitTLS: true, handshakes: 1},
		{name: "tarpit", v: guard.Verdict{Decision: guard.Decision{Action: guard.Tarpit, Delay: time.Second}}, tarpit: time.Second},
		{name: "refuse", v: guard.Verdict{Decision: blocked}, ends: true, said: "connect: " + blocked.Refusal()},
		{name: "refuse, implicit TLS", v: guard.Verdict{Decision: blocked}, implicitTLS: true, ends: true, handshakes: 1, said: "connect: " + blocked.Refusal()},
		{name: "quiet, implicit TLS", v: guard.Verdict{Decision: blocked, Quiet: true}, implicitTLS: true, ends: true},
		{name: "quiet, plain", v: guard.Verdict{Decision: blocked, Quiet: true}, ends: true, said: "connect: " + blocked.Refusal()},
		{name: "handshake fails", v: guard.Verdict{}, implicitTLS: true, hsErr: errors.New("bad record"), ends: true, handshakes: 1},
		{name: "close", v: guard.Verdict{Decision: guard.Decision{Action: guard.Close, Reason: reason.Connections}}, ends: true,
			said: "close: " + guard.Decision{Action: guard.Close, Reason: reason.Connections}.Refusal()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := &handshaker{err: tc.hsErr}
			var tarpit time.Duration
			var said []string
			ends := gate.Door(tc.v, hs, tc.implicitTLS, &tarpit, discard,
				func(why string) { said = append(said, "connect: "+why) },
				func(why string) { said = append(said, "close: "+why) })
			if ends != tc.ends || hs.n != tc.handshakes || strings.Join(said, "|") != tc.said || tarpit != tc.tarpit {
				t.Fatalf("Door: ends %v, %d handshakes, said %q, tarpit %v; want %v, %d, %q, %v",
					ends, hs.n, said, tarpit, tc.ends, tc.handshakes, tc.said, tc.tarpit)
			}
		})
	}
}

// Obey: a delay becomes the tarpit (and stays when a later decision has
// none); a refusal or a close is said and ends the session.
func TestObey(t *testing.T) {
	var tarpit time.Duration
	var said []string
	say := func(why string) { said = append(said, why) }
	if gate.Obey(guard.Decision{Action: guard.Tarpit, Delay: 2 * time.Second}, &tarpit, discard, say) || tarpit != 2*time.Second {
		t.Fatalf("tarpit: %v", tarpit)
	}
	if gate.Obey(guard.Decision{}, &tarpit, discard, say) || tarpit != 2*time.Second || said != nil {
		t.Fatalf("continue: tarpit %v, said %q", tarpit, said)
	}
	d := guard.Decision{Action: guard.Close, Blocked: true, Reason: reason.Login}
	if !gate.Obey(d, &tarpit, discard, say) || len(said) != 1 || said[0] != d.Refusal() {
		t.Fatalf("close: said %q", said)
	}
	if !gate.Ends(guard.Decision{Action: guard.Refuse}) || gate.Ends(guard.Decision{Action: guard.Tarpit}) {
		t.Fatal("Ends")
	}
}
