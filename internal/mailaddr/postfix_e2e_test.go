package mailaddr_test

import (
	"bufio"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/mailaddr"
	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// verdict is how Postfix answered one RCPT TO.
type verdict string

const (
	accepted    verdict = "accepted"     // 250: a known user of a local domain
	unknownUser verdict = "unknown user" // 550 5.1.1: a local domain, no such user
	relayDenied verdict = "relay denied" // 554 5.7.1: not a local domain
	badSyntax   verdict = "bad syntax"   // 501
	other       verdict = "other"
)

func classify(reply string) verdict {
	switch {
	case strings.HasPrefix(reply, "250 "):
		return accepted
	case strings.HasPrefix(reply, "550 5.1.1"):
		return unknownUser
	case strings.HasPrefix(reply, "554 5.7.1") && strings.Contains(reply, "Relay access denied"):
		return relayDenied
	case strings.HasPrefix(reply, "501 "):
		return badSyntax
	}
	return other
}

// rcptVerdicts asks real Postfix (no AUTH, so only its local domains are
// accepted) what it makes of each RCPT TO argument, on one connection per
// argument so that its error limits never interfere.
func rcptVerdicts(t *testing.T, addr string, args []string) ([]verdict, []string) {
	t.Helper()
	var vs []verdict
	var replies []string
	for _, a := range args {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		reply := func() string {
			for range 50 {
				l, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("reading from Postfix (after %q): %v", a, err)
				}
				if len(l) < 4 || l[3] != '-' {
					return strings.TrimRight(l, "\r\n")
				}
			}
			t.Fatal("endless reply")
			return ""
		}
		send := func(s string) {
			if _, err := c.Write([]byte(s + "\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		reply()
		send("EHLO differential.test")
		reply()
		send("MAIL FROM:<sender@remote.test>")
		if l := reply(); !strings.HasPrefix(l, "250 ") {
			t.Fatalf("MAIL: %q", l)
		}
		send("RCPT TO:" + a)
		l := reply()
		vs = append(vs, classify(l))
		replies = append(replies, l)
		send("QUIT")
		c.Close()
	}
	return vs, replies
}

// TestPostfixReadsAddressesAlike is a differential test against real
// Postfix 3.7: for every RCPT TO argument mailaddr accepts, Postfix reads
// the client's form and postern's canonical form the same way, and its
// verdict agrees with mailaddr's domain (a local domain is never relay
// denied, a remote one never taken as local) and, for local domains, with
// mailaddr's case-folded key (a known user is accepted).
func TestPostfixReadsAddressesAlike(t *testing.T) {
	env := testenv.Backends(t)
	local := []string{"example.test", "other.test"}
	var users []string
	for u := range env.Users {
		users = append(users, strings.ToLower(u))
	}
	var args []string
	for _, lp := range []string{"alice", "ALICE", `"alice"`, `"al\ice"`, `"a lice"`, "al.ice", `"al@ice"`, "al%ice", "al!ice", "al+x", "o'brien", `"al\"ice"`} {
		for _, d := range []string{"example.test", "EXAMPLE.Test", "example.test.", "other.test", "remote.test", "Remote.TEST.", "mx.example.test", "example.test..", "[127.0.0.1]", "[IPv6:::1]", "[192.0.2.1]"} {
			args = append(args, "<"+lp+"@"+d+">")
		}
	}
	args = append(args,
		"alice@example.test", "<@relay.test:alice@example.test>", "<@a.test,@b.test:bob@example.test>",
		"<@relay.test:alice@remote.test>", "<carol@other.test>", "<Carol@OTHER.test>", `<"carol"@other.test.>`,
		"<postmaster>", "<bob>", "<bob@>", "<@example.test>", "<alice@example.test@remote.test>",
		"<alice@remote.test@example.test>", "<alice%remote.test@example.test>", "<remote.test!alice@example.test>",
		"<alice @example.test>", "<alice@example.test (x)>", "<Alice <alice@example.test>>", `alice\@remote.test@example.test`,
		`<"alice@remote.test"@example.test>`, "<alice@127.0.0.1>", "<alice@[127.0.0.1>", "<alice@example.test>>",
		"<>", `<"">`, `<""@example.test>`, "<alice@exa_mple.test>", "<alice@-example.test>",
		"<jöran@example.test>", "<alice@bücher.test>", `<"jöran"@example.test>`, "<alice@[ipv6:0:0::1]>",
		"<@[127.0.0.1]:alice@example.test>", "<alice@example.test.>", `<"\a\l\i\c\e"@Example.Test>`,
	)
	handWritten := len(args)
	args = append(args, generated(400)...)
	type pair struct{ orig, canon string }
	var asked []string
	var pairs []pair
	refused := 0
	for _, a := range args {
		p, err := mailaddr.ParsePath(a)
		if err != nil || p.IsNull() {
			refused++
			continue
		}
		pairs = append(pairs, pair{a, p.Canonical()})
		asked = append(asked, a, p.Canonical())
	}
	vs, replies := rcptVerdicts(t, env.SMTPPlain, asked)
	for i, pr := range pairs {
		vo, vc := vs[2*i], vs[2*i+1]
		p, _ := mailaddr.ParsePath(pr.orig)
		if vo != vc {
			t.Errorf("Postfix reads %s (%s: %q) and its canonical form %s (%s: %q) differently", pr.orig, vo, replies[2*i], pr.canon, vc, replies[2*i+1])
		}
		if p.Routed() || p.Flags&mailaddr.AddressLiteral != 0 {
			// Flagged: the caller decides (postern treats them as not
			// local); logged to show what Postfix makes of them.
			t.Logf("flagged %b: %-40s Postfix: %s (%s)", p.Flags, pr.orig, vo, replies[2*i])
			continue
		}
		isLocal := slices.Contains(local, p.Domain)
		switch {
		case isLocal && (vo == relayDenied || vo == other):
			t.Errorf("%s: mailaddr reads the local domain %q, Postfix says %q", pr.orig, p.Domain, replies[2*i])
		case !isLocal && p.Domain != "" && vo != relayDenied && vo != badSyntax:
			// (Refused outright is fine: with smtputf8_enable = no, as here,
			// Postfix refuses a UTF-8 domain that mailaddr reads.)
			t.Errorf("%s: mailaddr reads the remote domain %q, Postfix says %q", pr.orig, p.Domain, replies[2*i])
		case isLocal && slices.Contains(users, p.Key()) && vo != accepted:
			t.Errorf("%s: mailaddr reads the user %q, Postfix says %q", pr.orig, p.Key(), replies[2*i])
		case isLocal && !slices.Contains(users, p.Key()) && vo != unknownUser:
			t.Errorf("%s: mailaddr reads %q, not a user, Postfix says %q", pr.orig, p.Key(), replies[2*i])
		}
	}
	count := map[verdict]int{}
	for _, v := range vs {
		count[v]++
	}
	// Each verdict must occur, or the comparison above proved little.
	for _, v := range []verdict{accepted, unknownUser, relayDenied} {
		if count[v] == 0 {
			t.Errorf("no RCPT got %q from Postfix: %v", v, count)
		}
	}
	// What mailaddr refuses, Postfix often takes: the price of failing
	// closed, logged so that it stays visible.
	var refusedArgs []string
	for _, a := range args[:handWritten] {
		if p, err := mailaddr.ParsePath(a); err != nil || p.IsNull() {
			refusedArgs = append(refusedArgs, a)
		}
	}
	rv, rr := rcptVerdicts(t, env.SMTPPlain, refusedArgs)
	for i, a := range refusedArgs {
		t.Logf("refused by mailaddr: %-40s Postfix: %s (%s)", a, rv[i], rr[i])
	}
	t.Logf("%d arguments: %d accepted by mailaddr and compared with Postfix (verdicts %v), %d refused", len(args), len(pairs), count, refused)
}

// generated returns n RCPT TO arguments built from pieces of addresses,
// quoting, escapes, routes, case and stray characters, the same on every
// run (a fixed seed).
func generated(n int) []string {
	rng := rand.New(rand.NewPCG(10, 4))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	var out []string
	for range n {
		local := pick("alice", "bob", "carol", "ALICE", "Bob", "nobody", "x")
		if rng.IntN(4) == 0 {
			local += pick(".", "+", "%", "!", "-", "_", "'", "=", "/") + pick("alice", "tag", "remote.test", "x")
		}
		switch rng.IntN(5) {
		case 0:
			local = `"` + local + `"`
		case 1:
			var b strings.Builder
			b.WriteByte('"')
			for _, c := range []byte(local) {
				if rng.IntN(2) == 0 {
					b.WriteByte('\\')
				}
				b.WriteByte(c)
			}
			b.WriteByte('"')
			local = b.String()
		}
		dom := pick("example.test", "other.test", "remote.test", "mx.example.test", "[127.0.0.1]", "[192.0.2.7]")
		if rng.IntN(2) == 0 {
			b := []byte(dom)
			for i := range b {
				if rng.IntN(2) == 0 && 'a' <= b[i] && b[i] <= 'z' {
					b[i] -= 'a' - 'A'
				}
			}
			dom = string(b)
		}
		if rng.IntN(5) == 0 {
			dom += "."
		}
		addr := local + "@" + dom
		if rng.IntN(6) == 0 {
			addr = "@" + pick("relay.test", "r.example.test", "[127.0.0.1]") + ":" + addr
		}
		if rng.IntN(4) == 0 {
			i := rng.IntN(len(addr) + 1)
			addr = addr[:i] + pick(" ", "\t", "(", ")", "<", ">", ",", ";", ":", "\\", `"`, "[", "]", "@", ".", "%") + addr[i:]
		}
		if rng.IntN(8) != 0 {
			addr = "<" + addr + ">"
		}
		out = append(out, addr)
	}
	return out
}
