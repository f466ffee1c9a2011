package pop3mem

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGreetingHostnameAndCapa(t *testing.T) {
	srv := startServer(t, Options{Hostname: "mx.example.test", AllowPlaintextAuth: true})
	c := dialRaw(t, srv.addr)
	if g := c.line(); g != "+OK mx.example.test POP3 ready." {
		t.Fatalf("greeting %q", g)
	}
	c.expect("CAPA", "+OK Capability list follows")
	caps := c.multiLines()
	want := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN LOGIN"}
	if !slices.Equal(caps, want) {
		t.Errorf("CAPA before login: %q, want %q (no STLS without TLS)", caps, want)
	}
	c.login("alice", "pw")
	c.expect("CAPA", "+OK Capability list follows")
	caps = c.multiLines()
	want = []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if !slices.Equal(caps, want) {
		t.Errorf("CAPA after login: %q, want %q", caps, want)
	}
	c.expect("QUIT", "+OK Logging out.")
	c.eof()
}

func TestTransaction(t *testing.T) {
	srv := startServer(t, Options{AllowPlaintextAuth: true})
	sizes := []int{len(msg1), len(msgDots), len(msgLFN)}
	total := sizes[0] + sizes[1] + sizes[2]

	c := dial(t, srv.addr)
	c.login("ALICE", "pw") // names are case-insensitive
	c.expect("NOOP", "+OK")
	c.expect("STAT", fmt.Sprintf("+OK 3 %d", total))
	c.expect("LIST", fmt.Sprintf("+OK 3 messages (%d octets)", total))
	if got, want := c.multiLines(), []string{fmt.Sprintf("1 %d", sizes[0]), fmt.Sprintf("2 %d", sizes[1]), fmt.Sprintf("3 %d", sizes[2])}; !slices.Equal(got, want) {
		t.Errorf("LIST: %q, want %q", got, want)
	}
	c.expect("LIST 2", fmt.Sprintf("+OK 2 %d", sizes[1]))

	c.expect("UIDL", "+OK")
	uidl := c.multiLines()
	if len(uidl) != 3 {
		t.Fatalf("UIDL: %q", uidl)
	}
	ids := map[string]bool{}
	for i, l := range uidl {
		n, id, _ := strings.Cut(l, " ")
		if n != fmt.Sprint(i+1) || id == "" || len(id) > 70 || strings.ContainsFunc(id, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			t.Errorf("UIDL line %q", l)
		}
		ids[id] = true
		c.expect("UIDL "+n, "+OK "+l)
	}
	if len(ids) != 3 {
		t.Errorf("UIDL ids not unique: %q", uidl)
	}

	for i, m := range []string{msg1, msgDots, msgLFN} {
		c.expect(fmt.Sprintf("RETR %d", i+1), fmt.Sprintf("+OK %d octets", len(m)))
		raw := c.multiRaw()
		if string(raw) != stuff(m) {
			t.Errorf("RETR %d on the wire:\n%q\nwant\n%q", i+1, raw, stuff(m))
		}
		if got := string(unstuff(raw)); got != m {
			t.Errorf("RETR %d:\n%q\nwant\n%q", i+1, got, m)
		}
	}

	for _, tc := range []struct {
		cmd, want string
	}{
		{"TOP 1 0", "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\n\r\n"},
		{"TOP 1 1", "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\n\r\nHello.\r\n"},
		{"TOP 1 99", msg1},
		{"TOP 2 1", "Subject: dots\r\n\r\n.leading dot\r\n"},
		{"TOP 2 3", "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"},
	} {
		c.expect(tc.cmd, "+OK")
		raw := c.multiRaw()
		if string(raw) != stuff(tc.want) {
			t.Errorf("%s on the wire:\n%q\nwant\n%q", tc.cmd, raw, stuff(tc.want))
		}
	}

	// Errors, with Dovecot's wording.
	for _, tc := range []struct{ cmd, want string }{
		{"RETR", "-ERR Missing message number."},
		{"RETR x", "-ERR Invalid message number: x"},
		{"RETR -1", "-ERR Invalid message number: -1"},
		{"RETR 0", "-ERR There's no message 0."},
		{"RETR 4", "-ERR There's no message 4."},
		{"RETR 99999999999999999999999", "-ERR There's no message 99999999999999999999999."},
		{"LIST 1 2", "-ERR Noise after message number: 2"},
		{"TOP 1", "-ERR Invalid line count: "},
		{"TOP 1 -1", "-ERR Invalid line count: -1"},
		{"USER alice", "-ERR Already logged in."},
		{"STLS", "-ERR Already logged in."},
		{"XYZZY", "-ERR Unknown command."},
	} {
		c.expect(tc.cmd, tc.want)
	}

	// DELE hides the message; RSET brings it back.
	c.expect("DELE 1", "+OK Marked to be deleted.")
	c.expect("DELE 1", "-ERR Message is deleted.")
	c.expect("RETR 1", "-ERR Message is deleted.")
	c.expect("LIST 1", "-ERR Message is deleted.")
	c.expect("STAT", fmt.Sprintf("+OK 2 %d", total-sizes[0]))
	c.expect("LIST", fmt.Sprintf("+OK 2 messages (%d octets)", total-sizes[0]))
	if got := c.multiLines(); len(got) != 2 || !strings.HasPrefix(got[0], "2 ") {
		t.Errorf("LIST after DELE: %q", got)
	}
	c.expect("UIDL", "+OK")
	if got := c.multiLines(); !slices.Equal(got, uidl[1:]) {
		t.Errorf("UIDL after DELE: %q, want %q", got, uidl[1:])
	}
	c.expect("RSET", fmt.Sprintf("+OK maildrop has 3 messages (%d octets)", total))
	c.expect("STAT", fmt.Sprintf("+OK 3 %d", total))

	// DELE, then a dropped connection: nothing is deleted.
	c.expect("DELE 2", "+OK Marked to be deleted.")
	c.conn.Close()
	waitEnded(t, srv.Server, 1)
	if n := len(srv.Messages("alice")); n != 3 {
		t.Fatalf("%d messages after a session without QUIT, want 3", n)
	}

	// DELE + QUIT deletes; unique ids stay with their messages.
	c = dial(t, srv.addr)
	c.login("alice", "pw")
	c.expect("DELE 2", "+OK Marked to be deleted.")
	c.expect("QUIT", "+OK Logging out.")
	c.eof()
	if got := srv.Messages("alice"); len(got) != 2 || string(got[0]) != msg1 || string(got[1]) != msgLFN {
		t.Fatalf("Messages after DELE 2 + QUIT: %q", got)
	}
	c = dial(t, srv.addr)
	c.login("alice", "pw")
	c.expect("UIDL", "+OK")
	want := []string{"1 " + strings.Fields(uidl[0])[1], "2 " + strings.Fields(uidl[2])[1]}
	if got := c.multiLines(); !slices.Equal(got, want) {
		t.Errorf("UIDL after deletion: %q, want %q", got, want)
	}
	c.expect("QUIT", "+OK Logging out.")
}

// waitEnded waits until n sessions have ended.
func waitEnded(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ended := 0
		for _, r := range s.Sessions() {
			if r.Ended {
				ended++
			}
		}
		if ended >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions ended, want %d", ended, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEmptyMailboxAndMessage(t *testing.T) {
	srv := startServer(t, Options{AllowPlaintextAuth: true})
	srv.AddUser("bob", "b")
	if err := srv.AddMessage("bob", nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddMessage("nobody", []byte("x\r\n")); err == nil {
		t.Error("AddMessage for an unknown user succeeded")
	}
	if srv.Messages("nobody") != nil {
		t.Error("Messages for an unknown user not nil")
	}
	c := dial(t, srv.addr)
	c.login("bob", "b")
	c.expect("STAT", "+OK 1 0")
	c.expect("RETR 1", "+OK 0 octets")
	if raw := c.multiRaw(); len(raw) != 0 {
		t.Errorf("empty message: %q", raw)
	}
	c.expect("TOP 1 5", "+OK")
	if raw := c.multiRaw(); len(raw) != 0 {
		t.Errorf("TOP of empty message: %q", raw)
	}
	c.expect("DELE 1", "+OK Marked to be deleted.")
	c.expect("LIST", "+OK 0 messages (0 octets)")
	if got := c.multiLines(); got != nil {
		t.Errorf("LIST: %q", got)
	}
	c.expect("QUIT", "+OK Logging out.")
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"a":                "a\r\n",
		"a\r":              "a\r\n",
		"a\n":              "a\r\n",
		"a\r\n":            "a\r\n",
		"\n\n":             "\r\n\r\n",
		"a\nb\r\nc\rd\n":   "a\r\nb\r\nc\rd\r\n",
		"x\r\n\r\n.\n..\n": "x\r\n\r\n.\r\n..\r\n",
	} {
		if got := string(normalize([]byte(in))); got != want {
			t.Errorf("normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoginMechanisms(t *testing.T) {
	srv := startServer(t, Options{AllowPlaintextAuth: true})
	plain := func(authz, user, pass string) string { return b64(authz + "\x00" + user + "\x00" + pass) }

	t.Run("AUTH PLAIN initial response", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH PLAIN "+plain("", "alice", "pw"), "+OK Logged in.")
		c.expect("STAT", fmt.Sprintf("+OK 3 %d", len(msg1)+len(msgDots)+len(msgLFN)))
	})
	t.Run("AUTH PLAIN continuation", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("auth plain", "+ ")
		c.expect(plain("alice", "alice", "pw"), "+OK Logged in.")
	})
	t.Run("AUTH PLAIN empty initial response", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH PLAIN =", "-ERR [AUTH] Authentication failed.")
	})
	t.Run("AUTH PLAIN other authorization id", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH PLAIN "+plain("bob", "alice", "pw"), "-ERR [AUTH] Authentication failed.")
	})
	t.Run("AUTH PLAIN bad base64", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH PLAIN !!!", "-ERR Invalid base64 data in SASL response.")
		c.expect("AUTH PLAIN "+plain("", "alice", "pw"), "+OK Logged in.")
	})
	t.Run("AUTH LOGIN", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH LOGIN", "+ VXNlcm5hbWU6")
		c.expect(b64("alice"), "+ UGFzc3dvcmQ6")
		c.expect(b64("pw"), "+OK Logged in.")
	})
	t.Run("AUTH LOGIN initial response", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH LOGIN "+b64("alice"), "+ UGFzc3dvcmQ6")
		c.expect(b64("wrong"), "-ERR [AUTH] Authentication failed.")
	})
	t.Run("AUTH cancel", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH LOGIN", "+ VXNlcm5hbWU6")
		c.expect("*", "-ERR Authentication aborted by client.")
		c.expect("AUTH PLAIN", "+ ")
		c.expect("*", "-ERR Authentication aborted by client.")
		c.expect("STAT", "-ERR Command not valid before login.")
	})
	t.Run("AUTH list and unknown mechanism", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("AUTH", "+OK")
		if got := c.multiLines(); !slices.Equal(got, []string{"PLAIN", "LOGIN"}) {
			t.Errorf("AUTH list: %q", got)
		}
		c.expect("AUTH CRAM-MD5", "-ERR Unsupported authentication mechanism.")
		c.expect("APOP alice 0123456789abcdef0123456789abcdef", "-ERR APOP not enabled.")
	})
	t.Run("USER PASS", func(t *testing.T) {
		c := dial(t, srv.addr)
		c.expect("PASS pw", "-ERR No username given.")
		c.expect("USER alice", "+OK")
		c.expect("PASS nope", "-ERR [AUTH] Authentication failed.")
		c.expect("PASS pw", "-ERR No username given.") // USER is used up
		c.expect("USER nobody", "+OK")
		c.expect("PASS pw", "-ERR [AUTH] Authentication failed.")
		c.login("alice", "pw")
	})

	var got []string
	for _, r := range srv.Logins() {
		if r.Client.Addr() != netip.MustParseAddr("127.0.0.1") || r.TLS {
			t.Errorf("login record %+v: client or TLS wrong", r)
		}
		got = append(got, fmt.Sprintf("%s %s %v", r.Mech, r.User, r.OK))
	}
	want := []string{
		"PLAIN alice true",
		"PLAIN alice true",
		"PLAIN  false",
		"PLAIN alice false",
		"PLAIN alice true",
		"LOGIN alice true",
		"LOGIN alice false",
		"USER alice false",
		"USER nobody false",
		"USER alice true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Logins:\n%q\nwant\n%q", got, want)
	}
}

func TestPlaintextRefused(t *testing.T) {
	srv := startServer(t, Options{})
	c := dial(t, srv.addr)
	c.expect("CAPA", "+OK Capability list follows")
	if got, want := c.multiLines(), []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "SASL"}; !slices.Equal(got, want) {
		t.Errorf("CAPA: %q, want %q", got, want)
	}
	const refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
	c.expect("USER alice", refused)
	c.expect("PASS pw", refused)
	c.expect("AUTH PLAIN "+b64("\x00alice\x00pw"), refused)
	c.expect("AUTH LOGIN", refused)
	c.expect("STLS", "-ERR TLS support isn't enabled.")
	c.expect("QUIT", "+OK Logging out.")
	c.eof()
	if l := srv.Logins(); len(l) != 0 {
		t.Errorf("Logins: %+v", l)
	}
}

func TestSTLS(t *testing.T) {
	serverTLS, clientTLS, _ := selfSigned(t)
	srv := startServer(t, Options{TLS: serverTLS})
	c := dial(t, srv.addr)
	c.expect("CAPA", "+OK Capability list follows")
	if got := c.multiLines(); !slices.Contains(got, "STLS") || slices.Contains(got, "USER") {
		t.Errorf("CAPA before STLS: %q", got)
	}
	c.expect("USER alice", "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
	c.startTLS(clientTLS)
	c.expect("CAPA", "+OK Capability list follows")
	if got, want := c.multiLines(), []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "SASL PLAIN LOGIN"}; !slices.Equal(got, want) {
		t.Errorf("CAPA after STLS: %q, want %q", got, want)
	}
	c.expect("STLS", "-ERR TLS is already active.")
	c.login("alice", "pw")
	c.expect("RETR 2", fmt.Sprintf("+OK %d octets", len(msgDots)))
	if raw := c.multiRaw(); string(raw) != stuff(msgDots) {
		t.Errorf("RETR over TLS: %q", raw)
	}
	c.expect("QUIT", "+OK Logging out.")

	l := srv.Logins()
	if len(l) != 1 || !l[0].OK || !l[0].TLS || l[0].Mech != "USER" {
		t.Errorf("Logins: %+v", l)
	}
	waitEnded(t, srv.Server, 1)
	if s := srv.Sessions(); len(s) != 1 || !s[0].TLS || s[0].User != "alice" || !s[0].Ended {
		t.Errorf("Sessions: %+v", s)
	}
}

// Commands pipelined behind STLS are plaintext the client sent before TLS:
// they must be dropped, not run after the handshake.
func TestSTLSDropsPipelinedPlaintext(t *testing.T) {
	serverTLS, clientTLS, _ := selfSigned(t)
	srv := startServer(t, Options{TLS: serverTLS})
	c := dial(t, srv.addr)
	c.write("STLS\r\nCAPA\r\n")
	if got := c.line(); got != "+OK Begin TLS negotiation now." {
		t.Fatalf("STLS: %q", got)
	}
	c.handshake(clientTLS)
	c.expect("NOOP", "-ERR Command not valid before login.")
}
