package mailaddr

import (
	"strings"
	"testing"
)

// FuzzParsePath checks that what ParsePath accepts re-serialises to a
// canonical form that reads back to the same address, that the canonical
// form is stable, and that Postfix's tokenizer keeps it as one token.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"<>", "<bob@example.test>", `<"a b"@example.test>`, `<"a\"b\\c"@example.test>`,
		"<@a.example,@b.example:bob@example.test>", "<bob@[192.0.2.1]>", "<bob@[IPv6:2001:db8::1]>",
		"<Postmaster>", "<a%b@example.test>", `<"a@b"@example.test>`, "bob@Example.Test.",
		"<jöran@bücher.example>", "<wietse @ porcupine.org>", `<"wietse venema" <w@p.org>>`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			return
		}
		c := p.Canonical()
		q, err := ParsePath(c)
		if err != nil {
			t.Fatalf("%q → %q: %v", s, c, err)
		}
		const kept = Routed | AddressLiteral | NoDomain
		if q.Local != p.Local || q.Domain != p.Domain || q.Literal != p.Literal || q.Flags&kept != p.Flags&kept {
			t.Fatalf("%q → %q → %+v, was %+v", s, c, q, p)
		}
		if c2 := q.Canonical(); c2 != c {
			t.Fatalf("canonical form not stable: %q → %q → %q", s, c, c2)
		}
		if q.Flags&(SourceRoute|Unbracketed|TrailingDot) != 0 {
			t.Fatalf("canonical form %q has flags %b", c, q.Flags)
		}
		toks, err := Tokens("TO:" + c + " X=1")
		if err != nil || len(toks) != 3 || toks[1] != c {
			t.Fatalf("Postfix's tokenizer splits %q as %q, %v", c, toks, err)
		}
		if p.Key() != strings.ToLower(p.Address()) {
			t.Fatal("key")
		}
		want := p.Local // Address() as its parts make it, whether or not it was kept as read
		if p.Domain != "" {
			want += "@" + p.Domain
		}
		if p.Address() != want || q.Address() != want {
			t.Fatalf("%q: Address() %q, of its canonical form %q; want %q", s, p.Address(), q.Address(), want)
		}
		if a := string(p.AppendCanonical([]byte("x"))); a != "x"+c {
			t.Fatalf("%q: AppendCanonical %q, Canonical %q", s, a, c)
		}
	})
}

// FuzzParseArg checks the MAIL/RCPT argument reader: no panics, and an
// accepted argument's canonical form reads back the same.
func FuzzParseArg(f *testing.F) {
	for _, s := range []string{
		"FROM:<a@example.org> SIZE=100 BODY=8BITMIME", "from: <>", "TO:<b@example.test> NOTIFY=NEVER",
		"TO:<\"a b\"@x.example>", "FROM:<a@b", "TO:<a@b>SIZE=1", "FROM:x\\",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) (Arg, error){ParseMailArg, ParseRcptArg} {
			a, err := parse(s)
			if err != nil {
				continue
			}
			c := a.Canonical()
			b, err := parse(c)
			if err != nil || b.Canonical() != c {
				t.Fatalf("%q → %q → %q, %v", s, c, b.Canonical(), err)
			}
		}
	})
}

// FuzzArgTokens: the argument of a command line split once (the line's
// tokens after its verb, as Postfix reads them) parses as the same
// argument joined by spaces and split again, as postern parsed it before.
func FuzzArgTokens(f *testing.F) {
	for _, s := range []string{
		"MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME", "mail from: <>", "RCPT TO:<b@example.test> NOTIFY=NEVER",
		"RCPT TO:<\"a b\"@x.example>", "MAIL FROM:<a@b", "RCPT TO:<a@b>SIZE=1", "MAIL FROM:x\\", "RCPT  to:\t<c@d>  ORCPT=rfc822;c@d",
		"MAIL FROM:<\"x\\\" y\"@z> A=B", "RCPT TO:<<a@b>>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		toks, err := Tokens(line)
		if err != nil || len(toks) == 0 {
			return
		}
		args := toks[1:]
		for i, parse := range []func([]string) (Arg, error){ParseMailTokens, ParseRcptTokens} {
			joined := []func(string) (Arg, error){ParseMailArg, ParseRcptArg}[i]
			a, err1 := parse(args)
			b, err2 := joined(strings.Join(args, " "))
			if (err1 == nil) != (err2 == nil) {
				t.Fatalf("%q: tokens %v, joined %v", line, err1, err2)
			}
			if err1 == nil && (a.Canonical() != b.Canonical() || a.Path.Address() != b.Path.Address()) {
				t.Fatalf("%q: tokens %q, joined %q", line, a.Canonical(), b.Canonical())
			}
		}
	})
}
