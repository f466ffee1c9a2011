package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// refusalPairs is how many (refused, wrong password) pairs each protocol
// times: with Dovecot's default 2 s failure delay, 2 × 9 × 2 s ≈ 36 s per
// protocol, the three protocols in parallel.
const refusalPairs = 9

// TestRefusalIndistinguishable: a login the login IP restriction refuses
// (carol@other.test's right password from outside 203.0.113.0/24) and a
// wrong password of an account without a restriction (alice@example.test),
// each from an address of its own, get byte-identical replies — the
// first login after postern's start included — and take the same time:
// the medians of refusalPairs interleaved attempts each differ by less
// than 20% (or by less than 3 ms, the scheduling noise of a loaded
// machine, when the backends answer failures at once: the harness's
// default auth_failure_delay = 0). Run it with the servers' defaults to
// measure what a real site does:
//
//	POSTERN_E2E=1 POSTERN_BACKENDS_AUTH_FAILURE_DELAY=2s go test -run TestRefusalIndistinguishable -v ./test/e2e/
//
// Every attempt comes from an address of its own (the i-th pair from
// base+2i and base+2i+1): no block interferes, and neither does Dovecot's
// per-address auth penalty when it is on, which delays the second failure
// of an address by seconds, refused or not. Dovecot and Postfix see
// the refused logins with a decoy password: a failure of carol's, from the
// client's address; never her password and never a success.
func TestRefusalIndistinguishable(t *testing.T) {
	env := testenv.Backends(t)
	// timeouts.backend 20 s: with Dovecot's auth penalty on
	// (POSTERN_BACKENDS_AUTH_PENALTY=1), a second failure from an address
	// waits 2 s of penalty plus the failure delay.
	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy, BackendWait: "20s",
		IMAP: env.IMAPProxy, IMAPS: env.IMAPSProxy, POP3: env.POP3Proxy, POP3S: env.POP3SProxy})
	mark := env.LogMark(t, "dovecot")
	pmark := env.LogMark(t, "postfix")
	// The protocols in parallel, inside a group that returns when all
	// are done; then the backends' logs.
	t.Run("Protocols", func(t *testing.T) { testRefusalProtocols(t, env, gw) })
	t.Run("BackendsSawDecoys", func(t *testing.T) {
		// After the parallel group: the backends' logs are complete.
		// Dovecot (IMAP, POP3 and Postfix's SASL) logged a password
		// mismatch for each of carol's refused logins from outside, and
		// no login of hers.
		need := 3 * refusalPairs
		lines := waitDovecot(t, env, mark, need, "(carol@other.test,", "Password mismatch")
		for _, l := range lines {
			if strings.Contains(l, "203.0.113.") {
				t.Fatalf("a refusal from inside the restriction: %s", l)
			}
		}
		log := dovecotSince(t, env, mark)
		if l := linesWith(log, "Login: user=<carol@other.test>"); len(l) > 0 {
			t.Fatalf("Dovecot logged carol in:\n%s", strings.Join(l, "\n"))
		}
		if strings.Contains(log, carolPass) || strings.Contains(postfixSince(t, env, pmark), carolPass) {
			t.Fatal("carol's password reached a backend's log")
		}
		waitPostfix(t, env, pmark, refusalPairs, "sasl_username=carol@other.test", "authentication failed")
	})
}

// testRefusalProtocols times refusalPairs pairs on each protocol, the
// protocols in parallel.
func testRefusalProtocols(t *testing.T, env *testenv.Env, gw *gateway) {
	for _, tc := range []struct {
		name string
		addr string
		base string // first client address; the i-th pair uses base+2i and base+2i+1
		try  func(t *testing.T, env *testenv.Env, addr string, src netip.AddrPort, user, pass string) (string, time.Duration)
	}{
		{"IMAP", gw.IMAPS, "192.0.2.200", imapFailure},
		{"POP3", gw.POP3S, "192.0.2.220", pop3Failure},
		{"SMTP_AUTH", gw.SMTPS, "198.51.100.120", smtpFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var refused, wrong []time.Duration
			var first string
			a := netip.MustParseAddr(tc.base)
			for i := range refusalPairs {
				// The refusal first in even pairs (so that the very
				// first login of this service since postern started is
				// a refused one), the wrong password first in odd ones:
				// neither gets the other's place in a sequence.
				var r, w string
				var dr, dw time.Duration
				refuse := func() { r, dr = tc.try(t, env, tc.addr, netip.AddrPortFrom(a, 41000), carol, carolPass) }
				wrongPass := func() {
					w, dw = tc.try(t, env, tc.addr, netip.AddrPortFrom(a.Next(), 41001), alice, fmt.Sprintf("wrong-%d", i))
				}
				if i%2 == 0 {
					refuse()
					wrongPass()
				} else {
					wrongPass()
					refuse()
				}
				if i == 0 {
					first = r
				}
				if r != w || r != first {
					t.Fatalf("pair %d from %s: refused %q, wrong password %q (first refusal %q): must be byte-identical", i, a, r, w, first)
				}
				refused, wrong = append(refused, dr), append(wrong, dw)
				a = a.Next().Next()
			}
			mr, mw := median(refused), median(wrong)
			t.Logf("%s: failure reply %q; refused median %v (min %v, max %v), wrong password median %v (min %v, max %v)",
				tc.name, first, mr, slices.Min(refused), slices.Max(refused), mw, slices.Min(wrong), slices.Max(wrong))
			diff := (mr - mw).Abs()
			if float64(diff) >= 0.2*float64(max(mr, mw)) && diff >= 3*time.Millisecond {
				t.Fatalf("medians differ by %v: refused %v, wrong password %v", diff, mr, mw)
			}
		})
	}
}

// dovecotSawDecoys waits until Dovecot logged n password mismatches of
// account from addr since mark — the refused logins, asked with decoy
// passwords — and checks it never logged account in from addr.
func dovecotSawDecoys(t testing.TB, env *testenv.Env, mark int64, n int, account, addr string) {
	t.Helper()
	waitDovecot(t, env, mark, n, "("+account+","+addr+",", "Password mismatch")
	if l := linesWith(dovecotSince(t, env, mark), "Login: user=<"+account+">", rip(addr)); len(l) > 0 {
		t.Fatalf("Dovecot logged %s in from %s:\n%s", account, addr, strings.Join(l, "\n"))
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// gwTLS dials one of the gateway's implicit-TLS ports as src.
func gwTLS(t *testing.T, env *testenv.Env, addr string, src netip.AddrPort) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c := env.DialProxy(t, addr, src)
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	return tc, bufio.NewReader(tc)
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	l, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v (after %q)", err, l)
	}
	return l
}

func write(t *testing.T, c *tls.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// imapFailure logs user in with pass and returns every byte of the answer
// (untagged lines and the tagged line) and the time from the command's
// last byte to the answer's.
func imapFailure(t *testing.T, env *testenv.Env, addr string, src netip.AddrPort, user, pass string) (string, time.Duration) {
	c, r := gwTLS(t, env, addr, src)
	defer c.Close()
	readLine(t, r) // greeting
	write(t, c, "a1 LOGIN "+user+" "+pass+"\r\n")
	start := time.Now()
	var b strings.Builder
	for range 10 {
		l := readLine(t, r)
		b.WriteString(l)
		if strings.HasPrefix(l, "a1 ") {
			d := time.Since(start)
			write(t, c, "a2 LOGOUT\r\n")
			return b.String(), d
		}
	}
	t.Fatalf("no tagged answer: %q", b.String())
	return "", 0
}

func pop3Failure(t *testing.T, env *testenv.Env, addr string, src netip.AddrPort, user, pass string) (string, time.Duration) {
	c, r := gwTLS(t, env, addr, src)
	defer c.Close()
	readLine(t, r) // greeting
	write(t, c, "USER "+user+"\r\n")
	if l := readLine(t, r); !strings.HasPrefix(l, "+OK") {
		t.Fatalf("USER: %q", l)
	}
	write(t, c, "PASS "+pass+"\r\n")
	start := time.Now()
	l := readLine(t, r)
	d := time.Since(start)
	write(t, c, "QUIT\r\n")
	return l, d
}

func smtpFailure(t *testing.T, env *testenv.Env, addr string, src netip.AddrPort, user, pass string) (string, time.Duration) {
	c, r := gwTLS(t, env, addr, src)
	defer c.Close()
	reply := func() string {
		var b strings.Builder
		for {
			l := readLine(t, r)
			b.WriteString(l)
			if len(l) < 4 || l[3] != '-' {
				return b.String()
			}
		}
	}
	reply() // greeting
	write(t, c, "EHLO refusal.e2e.test\r\n")
	reply()
	write(t, c, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))+"\r\n")
	start := time.Now()
	l := reply()
	d := time.Since(start)
	write(t, c, "QUIT\r\n")
	return l, d
}
