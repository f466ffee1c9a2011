package mailaddr

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestTokensPostfix replays Postfix's own tokenizer test
// (src/smtpd/smtpd_token.in and .ref) without the leading "mail".
func TestTokensPostfix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // nil: SMTPD_TOK_ERROR
	}{
		{`from:<wietse@porcupine.org>`, []string{"from:", "<wietse@porcupine.org>"}},
		{`from:<"wietse venema"@porcupine.org>`, []string{"from:", `<"wietse venema"@porcupine.org>`}},
		{`from:wietse@porcupine.org`, []string{"from:", "wietse@porcupine.org"}},
		{`from:<wietse @ porcupine.org>`, []string{"from:", "<wietse @ porcupine.org>"}},
		{`from:<"wietse venema"@porcupine.org ("wietse ) venema")>`, []string{"from:", `<"wietse venema"@porcupine.org ("wietse ) venema")>`}},
		{`from:<"wietse venema" <wietse@porcupine.org>>`, []string{"from:", `<"wietse venema" <wietse@porcupine.org>>`}},
		{`from:<"wietse venema"@porcupine.org ( ("wietse ) venema") )>`, []string{"from:", `<"wietse venema"@porcupine.org ( ("wietse ) venema") )>`}},
		{`from:"wietse venema"@porcupine.org`, []string{"from:", `"wietse venema"@porcupine.org`}},
		{`from:wietse\ venema@porcupine.org`, []string{"from:", `wietse\ venema@porcupine.org`}},
		{`to:<"wietse venema>`, nil},
		{`to:<wietse@[stuff>`, []string{"to:", "<wietse@[stuff>"}},
		{`to:<wietse@["stuff]>`, nil},
		// More of the same rules.
		{"FROM: <a@b>\tSIZE=10 ", []string{"FROM:", "<a@b>", "SIZE=10"}},
		{"\t From:<a@b>", []string{"From:", "<a@b>"}},
		{"FROMX:<a@b>", []string{"FROMX:<a@b>"}},
		{"FROM :<a@b>", []string{"FROM", ":<a@b>"}},
		{"TO:<a@b>BODY=7BIT", []string{"TO:", "<a@b>BODY=7BIT"}},
		{`TO:<a\>b@c>`, []string{"TO:", `<a\>b@c>`}},
		{`TO:<a@b`, nil},
		{`TO:x\`, []string{"TO:", `x\`}},
	} {
		got, err := Tokens(tc.in)
		if tc.want == nil {
			if err == nil || !errors.Is(err, ErrSyntax) {
				t.Errorf("Tokens(%q) = %q, %v; want an error", tc.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Tokens(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in        string
		canonical string // "": an error
		addr      string
		flags     Flags
	}{
		{"<>", "<>", "", 0},
		{"<wietse@porcupine.org>", "<wietse@porcupine.org>", "wietse@porcupine.org", 0},
		{"<Wietse@Porcupine.ORG>", "<Wietse@porcupine.org>", "Wietse@porcupine.org", 0},
		{"wietse@porcupine.org", "<wietse@porcupine.org>", "wietse@porcupine.org", Unbracketed},
		{`<"wietse venema"@porcupine.org>`, `<"wietse venema"@porcupine.org>`, "wietse venema@porcupine.org", Quoted},
		{`"wietse venema"@porcupine.org`, `<"wietse venema"@porcupine.org>`, "wietse venema@porcupine.org", Quoted | Unbracketed},
		{`<"bob"@example.test>`, "<bob@example.test>", "bob@example.test", Quoted},
		{`<"b.o.b"@example.test>`, "<b.o.b@example.test>", "b.o.b@example.test", Quoted},
		{`<"a\"b\\c"@example.test>`, `<"a\"b\\c"@example.test>`, `a"b\c@example.test`, Quoted},
		{`<"\b\o\b"@example.test>`, "<bob@example.test>", "bob@example.test", Quoted},
		{`<"a..b"@example.test>`, `<"a..b"@example.test>`, "a..b@example.test", Quoted},
		{`<".a"@example.test>`, `<".a"@example.test>`, ".a@example.test", Quoted},
		{"<@a.example,@b.example:bob@example.test>", "<bob@example.test>", "bob@example.test", SourceRoute},
		{"<@a.example:bob@example.test>", "<bob@example.test>", "bob@example.test", SourceRoute},
		{"<bob@example.test.>", "<bob@example.test>", "bob@example.test", TrailingDot},
		{"<bob@[192.0.2.1]>", "<bob@[192.0.2.1]>", "bob@[192.0.2.1]", AddressLiteral},
		{"<bob@[ipv6:2001:DB8::0:1]>", "<bob@[IPv6:2001:db8::1]>", "bob@[IPv6:2001:db8::1]", AddressLiteral},
		{"<Postmaster>", "<Postmaster>", "Postmaster", NoDomain},
		{"<user%remote.example@example.test>", "<user%remote.example@example.test>", "user%remote.example@example.test", PercentHack},
		{"<remote.example!user@example.test>", "<remote.example!user@example.test>", "remote.example!user@example.test", BangPath},
		{`<"user@remote.example"@example.test>`, `<"user@remote.example"@example.test>`, "user@remote.example@example.test", AtInLocal | Quoted},
		{`<"user%remote"@example.test>`, "<user%remote@example.test>", "user%remote@example.test", PercentHack | Quoted},
		{"<jöran@bücher.example>", "<jöran@bücher.example>", "jöran@bücher.example", 0},
		{"<o'brien+tag@xn--bcher-kva.example>", "<o'brien+tag@xn--bcher-kva.example>", "o'brien+tag@xn--bcher-kva.example", 0},

		// Postfix reads these (as RFC 822 with comments, white space,
		// phrases, backslashes) or routes them in ways postern cannot be
		// sure of: refused.
		{"<wietse @ porcupine.org>", "", "", 0},
		{`<"wietse venema"@porcupine.org ("wietse ) venema")>`, "", "", 0},
		{`<"wietse venema" <wietse@porcupine.org>>`, "", "", 0},
		{`wietse\ venema@porcupine.org`, "", "", 0},
		{`<wietse@[stuff>`, "", "", 0},
		{"<a@b@c>", "", "", 0},
		{"<user@dom.ain1@dom.ain2>", "", "", 0},
		{"<user@[1.2.3.4]@dom.ain2>", "", "", 0},
		{"<user%[1.2.3.4]@dom.ain2>", "", "", 0},
		{"<a[b]@example.test>", "", "", 0},
		{"<user@[321.1.2.3]>", "", "", 0},
		{"<user@1.2.3>", "", "", 0},
		{"<user@192.0.2.1>", "", "", 0},
		{"<user@host:port>", "", "", 0},
		{"<user@[IPv6:fe80::1%eth0]>", "", "", 0},
		{"<user@[IPv6:192.0.2.1]>", "", "", 0},
		{"<user@[2001:db8::1]>", "", "", 0},
		{"<user@[x-tag:content]>", "", "", 0},
		{"<user@[192.0.2.1>", "", "", 0},
		{"<user@example..test>", "", "", 0},
		{"<user@example.test..>", "", "", 0},
		{"<user@.example.test>", "", "", 0},
		{"<user@-example.test>", "", "", 0},
		{"<user@exa_mple.test>", "", "", 0},
		{"<user@" + strings.Repeat("a", 64) + ".test>", "", "", 0},
		{"<user@>", "", "", 0},
		{"<@example.test>", "", "", 0},
		{`<""@example.test>`, "", "", 0}, // Postfix: MAILER-DAEMON
		{`<"">`, "", "", 0},              // Postfix: the null sender
		{"<@a.example:>", "", "", 0},     // Postfix: the null sender
		{"<@[IPv6:::1]:bob@example.test>", "", "", 0},
		{"<@a.example;bob@example.test>", "", "", 0},
		{"<a.example:bob@example.test>", "", "", 0},
		{"<bob>", "", "", 0}, // Postfix appends $myhostname
		{"<.bob@example.test>", "", "", 0},
		{"<bob.@example.test>", "", "", 0},
		{"<b..ob@example.test>", "", "", 0},
		{"<bob(comment)@example.test>", "", "", 0},
		{"<bob@example.test(comment)>", "", "", 0},
		{"<bob@example.test >", "", "", 0},
		{"< bob@example.test>", "", "", 0},
		{"<bob\t@example.test>", "", "", 0},
		{"<<bob@example.test>>", "", "", 0},
		{"<bob@example.test", "", "", 0},
		{"bob@example.test>", "", "", 0},
		{"<", "", "", 0},
		{"", "", "", 0},
		{"<bob,al@example.test>", "", "", 0},
		{"<bob;al@example.test>", "", "", 0},
		{"<bob:al@example.test>", "", "", 0},
		{`<"bob@example.test>`, "", "", 0},
		{`<"bo"b@example.test>`, "", "", 0},
		{`<"bo"."b"@example.test>`, "", "", 0},
		{"<\"bo\rb\"@example.test>", "", "", 0},
		{"<\"bo\x00b\"@example.test>", "", "", 0},
		{"<\"bo\\\x01b\"@example.test>", "", "", 0},
		{"<b\xffob@example.test>", "", "", 0},
		{"<bob@ex\xffample.test>", "", "", 0},
		{"<bob\x00@example.test>", "", "", 0},
		{"<" + strings.Repeat("a", MaxPathLen) + "@example.test>", "", "", 0},
	} {
		p, err := ParsePath(tc.in)
		if tc.canonical == "" {
			if err == nil || !errors.Is(err, ErrSyntax) {
				t.Errorf("ParsePath(%q) = %+v, %v; want an error", tc.in, p, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePath(%q): %v", tc.in, err)
			continue
		}
		if c := p.Canonical(); c != tc.canonical || p.Address() != tc.addr || p.Flags != tc.flags {
			t.Errorf("ParsePath(%q) = %s %q %b; want %s %q %b", tc.in, c, p.Address(), p.Flags, tc.canonical, tc.addr, tc.flags)
		}
	}
}

// TestRouted: every form Postfix's resolver routes to another host
// (percent hack, bang path, '@' in a quoted local part, as in
// src/global/resolve_clnt.in) is either refused or flagged.
func TestRouted(t *testing.T) {
	for _, in := range []string{
		"<a%b@example.test>", "<a!b@example.test>", `<"a@b"@example.test>`,
		"<user%dom.ain1@dom.ain2>", "<dom.ain1!user@dom.ain2>", `<"user@dom.ain1"@dom.ain2>`,
		`<"user%dom.ain1"@dom.ain2>`, `<"dom.ain1!user"@dom.ain2>`, "<a%b%c@example.test>",
		"<%@example.test>", "<!@example.test>", "<a%@example.test>", "<%b@example.test>",
	} {
		p, err := ParsePath(in)
		if err == nil && !p.Routed() {
			t.Errorf("%q read as %s, not flagged as routed", in, p.Canonical())
		}
	}
	for _, in := range []string{"<a@b@example.test>", "<user@dom.ain1@dom.ain2>", "<a[b]%h@example.test>", "<h!a[b]@example.test>"} {
		if p, err := ParsePath(in); err == nil {
			t.Errorf("%q accepted as %s", in, p.Canonical())
		}
	}
	p, _ := ParsePath("<Bob@Example.TEST>")
	q, _ := ParsePath(`<"bob"@example.test.>`)
	if p.Key() != q.Key() || p.Key() != "bob@example.test" {
		t.Errorf("keys %q and %q", p.Key(), q.Key())
	}
}

func TestParseArg(t *testing.T) {
	for _, tc := range []struct {
		mail bool
		in   string
		want string // "": error
	}{
		{true, "FROM:<a@example.org>", "FROM:<a@example.org>"},
		{true, "from: <a@Example.ORG>  SIZE=100\tBODY=8BITMIME", "FROM:<a@example.org> SIZE=100 BODY=8BITMIME"},
		{true, "FROM:<>", "FROM:<>"},
		{true, "FROM:a@example.org", "FROM:<a@example.org>"},
		{true, `FROM:"a b"@example.org`, `FROM:<"a b"@example.org>`},
		{true, "FROM:<@r.example:a@example.org> SMTPUTF8", "FROM:<a@example.org> SMTPUTF8"},
		{false, "TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.test", "TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.test"},
		{false, "To:<postmaster>", "TO:<postmaster>"},
		// Keywords and Postmaster compare ASCII-only, as Postfix's
		// strcasecmp: the long s and the Kelvin sign are not s and k.
		{true, "\u017fROM:<a@example.org>", ""},
		{false, "TO:<po\u017ftmaster>", ""},
		{false, "TO:<\u212a@example.org>", "TO:<\u212a@example.org>"},
		{true, "FROM:", ""},
		{true, "FROM :<a@example.org>", ""},
		{true, "FROM:<a@example.org>SIZE=1", ""},
		{true, "TO:<a@example.org>", ""},
		{true, "FROM:<a@example.org> SIZE=", ""},
		{true, "FROM:<a@example.org> =1", ""},
		{true, "FROM:<a@example.org> X=<a b>", ""},
		{true, `FROM:<a@example.org> X="a"`, ""},
		{true, `FROM:<a@example.org> X=a\b`, ""},
		{true, "FROM:<a@example.org> X=a=b", ""},
		{true, "FROM:<a@example.org> -X", ""},
		{true, "FROM:<a@example.org> X_Y", ""},
		{true, "FROM:<a@example.org> X=\x7f", ""},
		{false, "TO:<>", ""},
		{false, "TO:<b@example.test", ""},
		{false, "TO:<b@example.test> <c@example.test>", ""},
		{false, "TO:<b@example.test>,<c@example.test>", ""},
		{false, "TO: <b @example.test>", ""},
	} {
		parse := ParseRcptArg
		if tc.mail {
			parse = ParseMailArg
		}
		a, err := parse(tc.in)
		if tc.want == "" {
			if err == nil || !errors.Is(err, ErrSyntax) {
				t.Errorf("parse(%q) = %q, %v; want an error", tc.in, a.Canonical(), err)
			}
			continue
		}
		if err != nil || a.Canonical() != tc.want {
			t.Errorf("parse(%q) = %q, %v; want %q", tc.in, a.Canonical(), err, tc.want)
			continue
		}
		// What postern relays reads the same again.
		b, err := parse(a.Canonical())
		if err != nil || !reflect.DeepEqual(b.Params, a.Params) || b.Path.Address() != a.Path.Address() {
			t.Errorf("re-reading %q: %+v, %v", a.Canonical(), b, err)
		}
	}
}

func TestInDomains(t *testing.T) {
	local := map[string]bool{"example.test": true}
	for in, want := range map[string]bool{
		"<bob@example.test>": true, "<Bob@EXAMPLE.test.>": true, `<"bob"@example.test>`: true,
		"<@r.example:bob@example.test>": true, "<postmaster>": true,
		"<bob@other.test>": false, "<>": false, "<bob%other.test@example.test>": false,
		"<other.test!bob@example.test>": false, `<"bob@other.test"@example.test>`: false,
		"<bob@[127.0.0.1]>": false, "<bob@example.test.other.test>": false,
	} {
		p, err := ParsePath(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := p.InDomains(local); got != want {
			t.Errorf("%q: InDomains %v, want %v", in, got, want)
		}
	}
}

// A common argument is read and written out without a copy of its
// address: the address is the client's bytes, the command goes into the
// caller's buffer.
func TestArgWithoutCopies(t *testing.T) {
	toks := []string{"FROM:", "<sender@other.test>", "SIZE=10240"}
	buf := make([]byte, 0, 128)
	var addr string
	n := testing.AllocsPerRun(100, func() {
		a, err := ParseMailTokens(toks)
		if err != nil {
			t.Fatal(err)
		}
		addr = a.Path.Address()
		buf = a.AppendCanonical(buf[:0])
	})
	if addr != "sender@other.test" || string(buf) != "FROM:<sender@other.test> SIZE=10240" {
		t.Fatalf("read %q, wrote %q", addr, buf)
	}
	if n != 0 {
		t.Errorf("%v allocations, want 0", n)
	}
	a, _ := ParseMailTokens(toks)
	if n := testing.AllocsPerRun(100, func() { _, _ = a.Canonical(), a.Path.Canonical() }); n != 2 {
		t.Errorf("Canonical of the argument and of its path: %v allocations, want 2 (the strings)", n)
	}
	// Upper case in the domain: the address is made, lower-cased.
	p, err := ParsePath("<Sender@Other.Test>")
	if err != nil || p.Address() != "Sender@other.test" || p.Canonical() != "<Sender@other.test>" {
		t.Fatalf("%q %q, %v", p.Address(), p.Canonical(), err)
	}
}
