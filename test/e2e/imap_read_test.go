package e2e

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

const bob, bobPass = "bob@example.test", "bob-pass-2"

// asServed is a stored Maildir message as IMAP and POP3 serve it: CRLF
// line ends.
func asServed(file []byte) []byte {
	return bytes.ReplaceAll(file, []byte("\n"), []byte("\r\n"))
}

// sameBytes fails with the first differing line of two fetched messages.
func sameBytes(t testing.TB, what string, want, got []byte) {
	t.Helper()
	if bytes.Equal(want, got) {
		return
	}
	wl, gl := bytes.SplitAfter(want, []byte("\n")), bytes.SplitAfter(got, []byte("\n"))
	for i := range max(len(wl), len(gl)) {
		var x, y []byte
		if i < len(wl) {
			x = wl[i]
		}
		if i < len(gl) {
			y = gl[i]
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("%s: %d bytes, want %d; line %d differs:\nwant %q\ngot  %q", what, len(got), len(want), i+1, truncateBytes(x), truncateBytes(y))
		}
	}
}

func truncateBytes(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "…"...)
	}
	return b
}

// IMAP: bob reads his message through postern over plain IMAP (an address
// allowed plaintext logins), STARTTLS and implicit TLS (imaps, which
// reaches Dovecot's implicit-TLS port), logging in with LOGIN, a LOGIN
// whose password is a synchronizing literal, and AUTHENTICATE PLAIN. The
// bytes fetched through postern must equal those fetched directly from
// Dovecot with the same client address and the stored file; Dovecot must
// have logged both logins with the simulated address.
func testIMAPRead(t *testing.T, s *mailSuite) {
	for _, tc := range []struct {
		name, service, mode, src, login string
	}{
		{"Plain_LOGIN", "imap", "", "192.0.2.10", "login"},
		{"Plain_Literal", "imap", "", "192.0.2.11", "login_literal"},
		{"STARTTLS_AUTHENTICATE", "imap", "starttls", "192.0.2.140", "authenticate"},
		{"STARTTLS_Literal", "imap", "starttls", "192.0.2.141", "login_literal"},
		{"ImplicitTLS_LOGIN", "imaps", "implicit", "192.0.2.142", "login"},
		{"ImplicitTLS_AUTHENTICATE_IPv6", "imaps", "implicit", "2001:db8:1::10", "authenticate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gwAddr, direct := s.gw.IMAP, s.env.IMAPProxy
			if tc.service == "imaps" {
				gwAddr, direct = s.gw.IMAPS, s.env.IMAPSProxy
			}
			mark := s.env.LogMark(t, "dovecot")
			steps := []mstep{mop("capability"), mlogin(tc.login, bob, bobPass), mfetch("fetch", s.token), mop("logout")}
			off := 1
			if tc.mode == "starttls" {
				off = 2
			}
			d := mailc(t, "imap", direct, ap(tc.src, 40001), tc.mode, steps...)
			if r := d.at(off + 2); !r.OK {
				t.Fatalf("directly from Dovecot:%v", d)
			}
			p := mailc(t, "imap", gwAddr, ap(tc.src, 40002), tc.mode, steps...)
			// Dovecot's own tagged OK, relayed. It differs from the direct
			// one in one legitimate way: Dovecot puts its post-login
			// capabilities into the OK unless the client asked for
			// CAPABILITY in that connection, and postern answers the
			// client's CAPABILITY itself.
			if r := d.at(off + 1); r.Text != "OK Logged in" {
				t.Fatalf("login directly: %v%v", r, d)
			}
			if r := p.at(off + 1); !r.OK || !strings.HasPrefix(r.Text, "OK [CAPABILITY IMAP4rev1 ") || !strings.HasSuffix(r.Text, "] Logged in") {
				t.Fatalf("login through postern: %v, want Dovecot's OK [CAPABILITY …] Logged in%v", r, p)
			}
			if r := p.at(off + 2); !r.OK {
				t.Fatalf("fetch through postern:%v", p)
			}
			if r := p.at(off + 3); !r.OK {
				t.Fatalf("logout through postern:%v", p)
			}
			// postern's greeting carries Dovecot's text and adjusted
			// capabilities.
			if g := p.at(0).Text; !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1 ") || !strings.HasSuffix(g, "] Dovecot (Debian) ready.") {
				t.Fatalf("greeting through postern: %q", g)
			}
			// STARTTLS is offered only on imap before TLS; logins are
			// allowed (plaintext_login or TLS).
			caps := strings.Join(p.at(off).Caps, " ")
			if !strings.Contains(caps, "AUTH=PLAIN") || strings.Contains(caps, "LOGINDISABLED") || strings.Contains(caps, "STARTTLS") != (tc.mode == "") {
				t.Fatalf("capabilities through postern (%q): %s", tc.mode, caps)
			}
			if d.at(off+2).UID != p.at(off+2).UID {
				t.Fatalf("UID %d directly, %d through postern", d.at(off+2).UID, p.at(off+2).UID)
			}
			sameBytes(t, "the message through postern vs directly", d.at(off+2).bytes(t), p.at(off+2).bytes(t))
			sameBytes(t, "the message through postern vs the stored file", asServed(s.file), p.at(off+2).bytes(t))
			waitDovecot(t, s.env, mark, 2, loginLine("imap", bob, tc.src)...)
		})
	}
}

// POP3: the same over plain POP3 (USER/PASS), STLS (AUTH PLAIN) and
// implicit TLS (pop3s).
func testPOP3Read(t *testing.T, s *mailSuite) {
	for _, tc := range []struct {
		name, service, mode, src, login string
	}{
		{"Plain_USER", "pop3", "", "192.0.2.12", "userpass"},
		{"Plain_AUTHPLAIN", "pop3", "", "192.0.2.13", "authplain"},
		{"STLS_AUTHPLAIN", "pop3", "starttls", "192.0.2.150", "authplain"},
		{"STLS_USER", "pop3", "starttls", "192.0.2.151", "userpass"},
		{"ImplicitTLS_USER", "pop3s", "implicit", "192.0.2.152", "userpass"},
		{"ImplicitTLS_AUTHPLAIN_IPv6", "pop3s", "implicit", "2001:db8:1::11", "authplain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gwAddr, direct := s.gw.POP3, s.env.POP3Proxy
			if tc.service == "pop3s" {
				gwAddr, direct = s.gw.POP3S, s.env.POP3SProxy
			}
			mark := s.env.LogMark(t, "dovecot")
			steps := []mstep{mop("capa"), mlogin(tc.login, bob, bobPass), mfetch("retr", s.token), mop("quit")}
			off := 1
			if tc.mode == "starttls" {
				off = 2
			}
			d := mailc(t, "pop3", direct, ap(tc.src, 40001), tc.mode, steps...)
			if r := d.at(off + 2); !r.OK {
				t.Fatalf("directly from Dovecot:%v", d)
			}
			p := mailc(t, "pop3", gwAddr, ap(tc.src, 40002), tc.mode, steps...)
			if r := p.at(off + 1); !r.OK || r.Text != "+OK Logged in." {
				t.Fatalf("login through postern: %v, want Dovecot's +OK Logged in.%v", r, p)
			}
			if !p.at(off+2).OK || !p.at(off+3).OK {
				t.Fatalf("through postern:%v", p)
			}
			if g := p.at(0).Text; g != "+OK Dovecot (Debian) ready." {
				t.Fatalf("greeting through postern: %q", g)
			}
			caps := strings.Join(p.at(off).Caps, " ")
			if !strings.Contains(caps, "SASL") || !strings.Contains(caps, "USER") || strings.Contains(caps, "STLS") != (tc.mode == "") {
				t.Fatalf("CAPA through postern (%q): %s", tc.mode, caps)
			}
			sameBytes(t, "the message through postern vs directly", d.at(off+2).bytes(t), p.at(off+2).bytes(t))
			sameBytes(t, "the message through postern vs the stored file", asServed(s.file), p.at(off+2).bytes(t))
			waitDovecot(t, s.env, mark, 2, loginLine("pop3", bob, tc.src)...)
		})
	}
}

// curl cannot send a PROXY header with another address (Debian 12's curl
// 7.88 has --haproxy-protocol, v1 with the real address only, and no
// --haproxy-clientip), so it connects from loopback addresses of its own
// (--interface 127.0.0.N): untrusted peers, whose real address postern
// uses and passes on to Dovecot. 127.0.0.16/28 is in the test's MY zone
// and allowed plaintext logins.
func testCurl(t *testing.T, s *mailSuite) {
	// The message's IMAP UID and POP3 number, from Dovecot directly.
	d := mailc(t, "imap", s.env.IMAPProxy, ap("192.0.2.14", 40001), "", mlogin("login", bob, bobPass), mfetch("fetch", s.token))
	uid := d.at(2).UID
	want := d.at(2).bytes(t)
	pd := mailc(t, "pop3", s.env.POP3Proxy, ap("192.0.2.14", 40002), "", mlogin("userpass", bob, bobPass), mfetch("retr", s.token))
	n := pd.at(2).N
	if uid == 0 || n == 0 {
		t.Fatalf("direct reads:%v%v", d, pd)
	}
	host := func(a string) string { _, p, _ := net.SplitHostPort(a); return "127.0.0.1:" + p }
	for _, tc := range []struct {
		name, src, url string
		args           []string
	}{
		{"IMAP_Plain", "127.0.0.17", "imap://" + host(s.gw.IMAP) + "/INBOX;UID=" + strconv.Itoa(uid), nil},
		{"IMAP_STARTTLS", "127.0.0.18", "imap://" + host(s.gw.IMAP) + "/INBOX;UID=" + strconv.Itoa(uid), []string{"--ssl-reqd"}},
		{"IMAPS", "127.0.0.19", "imaps://" + host(s.gw.IMAPS) + "/INBOX;UID=" + strconv.Itoa(uid), nil},
		{"POP3_Plain", "127.0.0.20", "pop3://" + host(s.gw.POP3) + "/" + strconv.Itoa(n), nil},
		{"POP3_STLS", "127.0.0.21", "pop3://" + host(s.gw.POP3) + "/" + strconv.Itoa(n), []string{"--ssl-reqd"}},
		{"POP3S", "127.0.0.22", "pop3s://" + host(s.gw.POP3S) + "/" + strconv.Itoa(n), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mark := s.env.LogMark(t, "dovecot")
			out, code, errOut := curl(t, append([]string{"--interface", tc.src, "--cacert", s.gw.CertFile, "-u", bob + ":" + bobPass, tc.url}, tc.args...)...)
			if code != 0 {
				t.Fatalf("curl %s: exit %d\n%s", tc.url, code, errOut)
			}
			sameBytes(t, "curl's message through postern vs Dovecot's", want, out)
			proto := "imap"
			if strings.HasPrefix(tc.url, "pop3") {
				proto = "pop3"
			}
			waitDovecot(t, s.env, mark, 1, loginLine(proto, bob, tc.src)...)
		})
	}
	t.Run("OutsideGrant", func(t *testing.T) {
		t.Parallel()
		mark := s.env.LogMark(t, "dovecot")
		for _, url := range []string{"imap://" + host(s.gw.IMAP) + "/INBOX;UID=1", "pop3://" + host(s.gw.POP3) + "/1"} {
			_, code, errOut := curl(t, "--interface", "127.0.0.40", "-u", bob+":"+bobPass, url)
			if code == 0 {
				t.Fatalf("curl from 127.0.0.40 (outside the grant) got the message from %s", url)
			}
			t.Logf("curl %s from 127.0.0.40: exit %d %s", url, code, strings.TrimSpace(errOut))
		}
		if len(s.gw.logLines(2, "refused at connect", "client=127.0.0.40")) != 2 {
			t.Fatalf("postern did not log two refusals of 127.0.0.40:\n%s", s.gw.logTail(20))
		}
		if l := linesWith(dovecotSince(t, s.env, mark), rip("127.0.0.40")); len(l) > 0 {
			t.Fatalf("Dovecot saw 127.0.0.40:\n%s", strings.Join(l, "\n"))
		}
	})
}

// curl runs curl -sS with args and returns its output, exit status and
// stderr.
func curl(t testing.TB, args ...string) ([]byte, int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "20"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("curl: %v", err)
		}
		code = ee.ExitCode()
	}
	return stdout.Bytes(), code, stderr.String()
}

// An address outside plaintext_login sees LOGINDISABLED (IMAP) or no
// USER/SASL (POP3) before TLS, and its login attempts are refused with
// PRIVACYREQUIRED / -ERR [AUTH] without reaching Dovecot; after
// STARTTLS/STLS it logs in.
func testPlaintextRefused(t *testing.T, s *mailSuite) {
	const src = "192.0.2.160"
	mark := s.env.LogMark(t, "dovecot")
	r := mailc(t, "imap", s.gw.IMAP, ap(src, 40001), "", mop("capability"), mlogin("login", bob, bobPass), mlogin("authenticate", bob, bobPass), mop("logout"))
	caps := strings.Join(r.at(1).Caps, " ")
	if !strings.Contains(caps, "LOGINDISABLED") || !strings.Contains(caps, "STARTTLS") || strings.Contains(caps, "AUTH=") {
		t.Fatalf("IMAP capabilities before TLS for %s: %s", src, caps)
	}
	const privacy = "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) connections."
	if got := r.at(2); got.OK || got.Text != privacy {
		t.Fatalf("LOGIN before TLS: %v, want %q%v", got, privacy, r)
	}
	if got := r.at(3); got.OK || !strings.Contains(got.Text, "PRIVACYREQUIRED") {
		t.Fatalf("AUTHENTICATE before TLS: %v%v", got, r)
	}
	p := mailc(t, "pop3", s.gw.POP3, ap(src, 40002), "", mop("capa"), mlogin("userpass", bob, bobPass), mop("quit"))
	pc := strings.Join(p.at(1).Caps, " ")
	if strings.Contains(pc, "USER") || strings.Contains(pc, "SASL") || !strings.Contains(pc, "STLS") {
		t.Fatalf("POP3 CAPA before TLS for %s: %s", src, pc)
	}
	if got := p.at(2); got.OK || got.Text != "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections." {
		t.Fatalf("USER before TLS: %v%v", got, p)
	}
	// With TLS the same address logs in.
	ok := mailc(t, "imap", s.gw.IMAP, ap(src, 40003), "starttls", mlogin("login", bob, bobPass), mop("logout"))
	if !ok.at(2).OK {
		t.Fatalf("LOGIN after STARTTLS:%v", ok)
	}
	// postern connects to Dovecot before its greeting (for the
	// capabilities), so Dovecot logs three connections; one login, after
	// STARTTLS, and no authentication attempt before.
	waitDovecot(t, s.env, mark, 1, loginLine("imap", bob, src)...)
	waitDovecot(t, s.env, mark, 2, rip(src), "no auth attempts")
	all := strings.Join(linesWith(dovecotSince(t, s.env, mark), rip(src)), "\n")
	if len(linesWith(all, "Login:")) != 1 || len(linesWith(all, "auth failed")) != 0 || len(linesWith(all, "Password")) != 0 ||
		len(linesWith(all, "no auth attempts")) != 2 {
		t.Fatalf("Dovecot must have seen one login (after STARTTLS) and two sessions without authentication from %s:\n%s", src, all)
	}
	s.gw.noBlock(t, src)
}

// An address outside the services' grant ("country:MY") is refused at
// connect on all four services; Dovecot never hears of it.
func testGrantRefused(t *testing.T, s *mailSuite) {
	const src = "198.51.100.80"
	mark := s.env.LogMark(t, "dovecot")
	for _, tc := range []struct{ proto, addr, mode, want string }{
		{"imap", s.gw.IMAP, "", "* BYE Access denied"},
		{"imap", s.gw.IMAPS, "implicit", "* BYE Access denied"},
		{"pop3", s.gw.POP3, "", "-ERR [SYS/PERM] Access denied"},
		{"pop3", s.gw.POP3S, "implicit", "-ERR [SYS/PERM] Access denied"},
	} {
		r := mailc(t, tc.proto, tc.addr, ap(src, 40001), tc.mode, mop("noop"))
		if e := r.at(0).Error; !strings.Contains(e, tc.want) {
			t.Fatalf("%s %s from %s: %v, want the greeting %q", tc.proto, tc.mode, src, r, tc.want)
		}
	}
	if n := len(s.gw.logLines(4, "refused at connect", "client="+src, "why=\"Access denied\"")); n != 4 {
		t.Fatalf("postern logged %d refusals of %s, want 4:\n%s", n, src, s.gw.logTail(30))
	}
	// An address in the grant, for comparison, reaches Dovecot.
	ok := mailc(t, "imap", s.gw.IMAPS, ap("192.0.2.143", 40001), "implicit", mlogin("login", bob, bobPass), mop("logout"))
	if !ok.at(1).OK {
		t.Fatalf("granted 192.0.2.143:%v", ok)
	}
	waitDovecot(t, s.env, mark, 1, loginLine("imap", bob, "192.0.2.143")...)
	if l := linesWith(dovecotSince(t, s.env, mark), rip(src)); len(l) > 0 {
		t.Fatalf("Dovecot saw the refused %s:\n%s", src, strings.Join(l, "\n"))
	}
}
