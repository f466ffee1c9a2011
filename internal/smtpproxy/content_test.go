package smtpproxy

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/postern/postern/internal/reason"
)

// testRules are the rules the evasion tests try to step around.
var testRules = []ContentRule{
	{Name: "casino", Header: regexp.MustCompile(`(?i)^subject:.*casino`)},
	{Name: "viagra", Body: regexp.MustCompile(`(?i)v1agra`)},
	{Name: "prize", Body: regexp.MustCompile(`(?i)you have won €1000`)},
}

// inspect runs a message (dot-stuffed, as DATA carries it) through an
// inspector in chunks of size n, then ends it.
func inspect(msg string, n int) string {
	in := &inspector{rules: testRules}
	b := []byte(msg)
	for len(b) > 0 {
		k := min(n, len(b))
		if r := in.feed(b[:k]); r != "" {
			return r
		}
		b = b[k:]
	}
	return in.finish()
}

func b64lines(s string, width int) string {
	e := base64.StdEncoding.EncodeToString([]byte(s))
	var out strings.Builder
	for len(e) > width {
		out.WriteString(e[:width] + "\r\n")
		e = e[width:]
	}
	return out.String() + e + "\r\n"
}

// TestContentEvasions: a message that hides a rule's phrase the way mail
// readers undo must still match; each of these passed before rules saw
// decoded text (the plain ones matched already).
func TestContentEvasions(t *testing.T) {
	cases := []struct {
		name, msg, want string
	}{
		{"plain subject", "Subject: Big CASINO win\r\n\r\nhi\r\n", "casino"},
		{"plain body", "Subject: hi\r\n\r\nbuy v1agra now\r\n", "viagra"},
		{"folded subject", "Subject: Big\r\n  CASINO win\r\nFrom: a@example.org\r\n\r\nhi\r\n", "casino"},
		{"folded, header only", "From: a@example.org\r\nSubject: Big\r\n\tCASINO", "casino"},
		{"encoded-word Q", "Subject: =?UTF-8?Q?Big_C=41SINO_win?=\r\n\r\nhi\r\n", "casino"},
		{"encoded-word B", "Subject: =?utf-8?B?" + base64.StdEncoding.EncodeToString([]byte("Big casino")) + "?=\r\n\r\nhi\r\n", "casino"},
		{"encoded-words split and folded", "Subject: Big =?utf-8?q?cas?=\r\n =?utf-8?q?ino?= win\r\n\r\nhi\r\n", "casino"},
		{"encoded-word in latin1", "Subject: =?iso-8859-1?q?=E0_c=61sino?=\r\n\r\nhi\r\n", "casino"},
		{"encoded-word with language", "Subject: =?utf-8*en?q?c=61sino?=\r\n\r\nhi\r\n", "casino"},
		{"quoted-printable soft break", "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbuy v1a=\r\ngra now\r\n", "viagra"},
		{"quoted-printable escapes", "Subject: hi\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\nbuy =76=31=61gra now\r\n", "viagra"},
		{"quoted-printable soft break at the end", "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbuy v1a=\r\ngra=", "viagra"},
		{"base64", "Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("hello\nbuy v1agra now\nbye\n", 76), "viagra"},
		{"base64 no final newline", "Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 4), "viagra"},
		{"base64 with junk", "Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + strings.ReplaceAll(b64lines("buy v1agra now\n", 8), "\r\n", " *\r\n"), "viagra"},
		{"base64 utf-16", "Subject: hi\r\nContent-Type: text/plain; charset=utf-16le\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines(utf16le("buy v1agra now\n"), 76), "viagra"},
		{"base64 latin1 text", "Subject: hi\r\nContent-Type: text/plain; charset=\"ISO-8859-15\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("You have won \xa41000\n", 76), "prize"},
		{"flowed delsp", "Subject: hi\r\nContent-Type: text/plain; format=flowed; delsp=yes\r\n\r\nbuy v1a \r\ngra now\r\n", "viagra"},
		{"html tags", "Subject: hi\r\nContent-Type: text/html\r\n\r\n<p>buy v<b></b>1a<span\r\nclass=x>gra</span> now</p>\r\n", "viagra"},
		{"html entities", "Subject: hi\r\nContent-Type: text/html\r\n\r\n<p>buy &#118;1agra now</p>\r\n", "viagra"},
		{"multipart qp part", "Subject: hi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nnothing here\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbuy v=\r\n1agra\r\n--b1--\r\n", "viagra"},
		{"nested multipart base64", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 76) + "--inner--\r\n--outer--\r\n", "viagra"},
		{"part header encoded subject", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: =?utf-8?q?casino?=\r\n\r\nx\r\n--b--\r\n", "casino"},
		{"attached message body", "Subject: hi\r\nContent-Type: message/rfc822\r\n\r\nSubject: fwd\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 76), "viagra"},
		{"base64 part cut by outer boundary", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 76) + "--b--\r\n", "viagra"},
		{"space before the colon", "Subject : casino\r\n\r\nhi\r\n", "casino"},
		{"boundary in RFC 2231 pieces", "Subject: hi\r\nContent-Type: multipart/mixed; boundary*0=\"ab\"; boundary*1=\"cd\"\r\n\r\n--abcd\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 76) + "--abcd--\r\n", "viagra"},
		{"RFC 2231 in a malformed field", "Subject: hi\r\nContent-Type: multipart/mixed; boundary*0=ab; boundary*1=cd; junk\r\n\r\n--abcd\r\n\r\nx\r\n", ambiguousMIME},
		{"multipart without boundary", "Subject: hi\r\nContent-Type: multipart/mixed\r\n\r\nx\r\n", ambiguousMIME},
		{"base64 in one long line", "Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines(strings.Repeat("filler text\n", 2000)+"buy v1agra now\n", 1<<20), "viagra"},
		{"base64 one long decoded line", "Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines(strings.Repeat("filler text ", 2000)+"buy v1agra now", 76), "viagra"},
		{"quoted-printable long line", "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.Repeat("filler=20text ", 1000) + "buy =76=31agra now\r\n", "viagra"},
		{"quoted-printable long line with line ends", "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.Repeat("filler=20text=0D=0A", 1000) + "buy =76=31agra now\r\n", "viagra"},
		{"quoted-printable long line, soft break", "Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.Repeat("filler=20text ", 1000) + "buy v1a=  \r\ngra now\r\n", "viagra"},
		{"long line before a boundary", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.Repeat("x", 9000) + "v1a=\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ngra\r\n--b--\r\n", ""},
		{"utf-7 part", "Subject: hi\r\nContent-Type: text/plain; charset=UTF-7\r\n\r\nbuy +AHYAMQBhAGcAcgBh- now\r\n", "viagra"},
		{"utf-7 in quoted-printable", "Subject: hi\r\nContent-Type: text/plain; charset=utf-7\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbuy +AHYAMQBh=\r\nAGcAcgBh now\r\n", "viagra"},
		{"utf-7 encoded-word", "Subject: =?utf-7?q?+AGMAYQBzAGkAbgBv-?=\r\n\r\nhi\r\n", "casino"},
		{"zero-width space", "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbuy v\u200b1a\u00adgra now\r\n", "viagra"},
		{"zero-width joiner in an encoded-word", "Subject: =?utf-8?q?cas=E2=80=8Dino?=\r\n\r\nhi\r\n", "casino"},
		{"zero-width entity in HTML", "Subject: hi\r\nContent-Type: text/html\r\n\r\nbuy v&#8203;1agra\r\n", "viagra"},
		{"dot-stuffed", "Subject: hi\r\n\r\n..v1agra\r\n", "viagra"},
		{"two content types", "Subject: hi\r\nContent-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\nx\r\n", ambiguousMIME},
		{"two encodings", "Subject: hi\r\nContent-Transfer-Encoding: base64\r\nContent-Transfer-Encoding: 7bit\r\n\r\nx\r\n", ambiguousMIME},
		{"two boundaries", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=a; boundary=b\r\n\r\nx\r\n", ambiguousMIME},

		// Clean mail stays clean.
		{"clean", "Subject: lunch\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsee you at 12=\r\n:30\r\n", ""},
		{"clean base64 attachment", "Subject: hi\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("v1agra in a binary attachment", 76) + "--b--\r\n", ""},
		{"same header twice", "Subject: hi\r\nContent-Type: text/plain; charset=utf-8\r\ncontent-type: text/plain; charset=utf-8\r\n\r\nx\r\n", ""},
		{"encoded-word that is not", "Subject: =?utf-8?x?Y2FzaW5v?= =?utf-8?b?Y2F?zaW5v?=\r\n\r\nhi\r\n", ""},
	}
	for _, tc := range cases {
		for _, n := range []int{1, 3, 7, 1 << 16} {
			if got := inspect(tc.msg, n); got != tc.want {
				t.Errorf("%s (chunks of %d): matched %q, want %q", tc.name, n, got, tc.want)
			}
		}
	}
}

func utf16le(s string) string {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return string(b)
}

// TestContentBudget: decoding stops after the budget; the message is still
// matched as sent beyond it, and decoded within it.
func TestContentBudget(t *testing.T) {
	hidden := "Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines(strings.Repeat("padding line\n", 400)+"buy v1agra\n", 76)
	in := &inspector{rules: testRules, budget: 4096}
	in.feed([]byte(hidden))
	if r := in.finish(); r != "" {
		t.Fatalf("matched %q beyond the budget", r)
	}
	if !in.over || in.used > 4096+76 {
		t.Fatalf("budget: used %d, over %v", in.used, in.over)
	}
	in = &inspector{rules: testRules, budget: 4096}
	r := in.feed([]byte("Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra\n"+strings.Repeat("padding line\n", 1000), 76)))
	if r != "viagra" {
		t.Fatalf("within the budget: %q", r)
	}
	// Beyond the budget, lines as sent still match.
	in = &inspector{rules: testRules, budget: 100}
	r = in.feed([]byte("Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.Repeat("padding=20line\r\n", 100) + "buy v1agra now\r\n"))
	if r != "viagra" || !in.over {
		t.Fatalf("beyond the budget: %q (over %v)", r, in.over)
	}
}

// TestContentRulesDecodedSession: evasions through a real session, with
// DATA and with BDAT, streaming and spooled for a scanner: refused before
// the backend has the message, and the client blocked (C).
func TestContentRulesDecodedSession(t *testing.T) {
	cfg := strings.Replace(baseIPS, "dnsbl: [bl.example.org] }", "dnsbl: [bl.example.org], content_rules: true }", 1)
	msgs := []string{
		"Subject: =?utf-8?q?Big_cas?=\r\n =?utf-8?q?ino?=\r\n\r\nhi\r\n",
		"Subject: hi\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 4),
		"Subject: hi\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbuy v1a=\r\ngra\r\n",
		"From: a@example.org\r\nSubject: Big\r\n CASINO", // only the end of the message shows it
	}
	for _, scan := range []bool{false, true} {
		h := newHarness(t, cfg, func(c *Config) {
			c.ContentRules = testRules
			if scan {
				c.Scan = Scanning{Scanner: &fakeScanner{}, MemLimit: 64}
			}
		}, nil)
		ip := 40
		for i, m := range msgs {
			for _, bdat := range []bool{false, true} {
				ip++
				src := fmt.Sprintf("127.0.%d.%d", map[bool]int{false: 0, true: 1}[scan], ip)
				c := h.dial(src)
				c.expect(220)
				c.cmd("EHLO x", 250)
				c.cmd("MAIL FROM:<x@example.org>", 250)
				c.cmd("RCPT TO:<alice@example.test>", 250)
				if bdat {
					half := len(m) / 2
					c.send(fmt.Sprintf("BDAT %d\r\n%s", half, m[:half]))
					c.expect(250)
					c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(m)-half, m[half:]))
				} else {
					c.cmd("DATA", 354)
					body := m
					if !strings.HasSuffix(body, "\r\n") {
						body += "\r\n"
					}
					c.send(body + ".\r\n")
				}
				c.expect(554)
				c.closed()
				if b, _ := h.eng.BlockOf(netip.MustParseAddr(src)); b.Reason != reason.Content {
					t.Errorf("scan %v, message %d, bdat %v: block %+v", scan, i, bdat, b)
				}
			}
		}
		// A clean message still goes through, byte for byte.
		c := h.dial(fmt.Sprintf("127.0.%d.99", map[bool]int{false: 0, true: 1}[scan]))
		c.expect(220)
		c.cmd("EHLO x", 250)
		c.cmd("MAIL FROM:<x@example.org>", 250)
		c.cmd("RCPT TO:<alice@example.test>", 250)
		c.cmd("DATA", 354)
		clean := "Subject: =?utf-8?q?lunch?=\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("see you at noon", 76)
		c.send(clean + ".\r\n")
		c.expect(250)
		// No refused message reached the backend whole. (The test MTA,
		// unlike Postfix, keeps the part of a BDAT message it had when the
		// connection dropped; with DATA it keeps nothing.)
		delivered := false
		for _, d := range h.mta.messages() {
			switch got := string(d.Data); {
			case got == clean:
				delivered = true
			case slices.Contains(msgs, got) || slices.Contains(msgs, strings.TrimSuffix(got, "\r\n")):
				t.Errorf("scan %v: a refused message was delivered: %q", scan, got)
			case !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, got) }):
				t.Errorf("scan %v: unexpected delivery %q", scan, got)
			}
		}
		if !delivered {
			t.Errorf("scan %v: the clean message was not delivered as sent", scan)
		}
	}
}

// FuzzContentInspector feeds arbitrary messages to the content inspector:
// it never panics, its buffers stay within their limits, and the result
// does not depend on how the message is cut into chunks.
func FuzzContentInspector(f *testing.F) {
	f.Add("Subject: =?utf-8?q?cas?=\r\n =?utf-8?q?ino?=\r\n\r\nhi\r\n", uint8(3))
	f.Add("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-16le\r\nContent-Transfer-Encoding: base64\r\n\r\nPABwAD4AdgAxAGEAZwByAGEA\r\n--b--\r\n", uint8(5))
	f.Add("Content-Type: text/plain; format=flowed; delsp=yes\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbuy v1a =\r\n\r\ngra\r\n", uint8(1))
	f.Add("Content-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=\"x y\"\r\n\r\n--x y\r\n\r\n<a\r\nb>&amp;v1agra\r\n", uint8(7))
	f.Add("Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n\x1b$B$3$s\x1b(B v1agra\r\n", uint8(2))
	f.Add("Content-Transfer-Encoding: quoted-printable\r\n\r\n"+strings.Repeat("ab=3D=\t ", 1200)+"=0\r\nx\r\n", uint8(9))
	f.Add("Content-Transfer-Encoding: base64\r\n\r\n"+strings.Repeat("dj FhZ3Jh", 1200)+"\r\n", uint8(11))
	f.Fuzz(func(t *testing.T, msg string, cut uint8) {
		whole := &inspector{rules: testRules, budget: 1 << 16}
		want := whole.feed([]byte(msg))
		if want == "" {
			want = whole.finish()
		}
		n := int(cut)%64 + 1
		in := &inspector{rules: testRules, budget: 1 << 16}
		got := ""
		for b := []byte(msg); len(b) > 0 && got == ""; {
			k := min(n, len(b))
			got = in.feed(b[:k])
			b = b[k:]
			if len(in.line) > maxInspectLine || len(in.field) > maxHeaderField || len(in.bounds) > maxMIMEDepth || len(in.view) > 3*maxHeaderField {
				t.Fatalf("buffers: line %d field %d bounds %d view %d", len(in.line), len(in.field), len(in.bounds), len(in.view))
			}
			if d := in.dec; d != nil && (len(d.text) > maxInspectLine || len(d.flow) > maxInspectLine || len(d.hold) > maxInspectLine || len(d.convIn) > maxInspectLine+64) {
				t.Fatalf("decoder buffers: text %d flow %d hold %d conv %d", len(d.text), len(d.flow), len(d.hold), len(d.convIn))
			}
		}
		if got == "" {
			got = in.finish()
		}
		if got != want {
			t.Fatalf("chunks of %d: %q; whole: %q", n, got, want)
		}
	})
}

// BenchmarkContentInspector measures the inspector on a 10 MB message: a
// quoted-printable text part, an HTML part and a base64 attachment.
func BenchmarkContentInspector(b *testing.B) {
	var m strings.Builder
	m.WriteString("Subject: =?utf-8?q?quarterly_report?=\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n")
	m.WriteString("Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
	for m.Len() < 1<<20 {
		m.WriteString("Les chiffres du trimestre sont en hausse de 4 % par rapport =C3=A0 l'an pass=\r\n=E9 et tout va bien.\r\n")
	}
	m.WriteString("--b\r\nContent-Type: text/html\r\n\r\n")
	for m.Len() < 2<<20 {
		m.WriteString("<p>The figures are <b>up</b> by 4&nbsp;% on last year &amp; all is well.</p>\r\n")
	}
	m.WriteString("--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	m.WriteString(b64lines(strings.Repeat("%PDF-1.7 binary stream data ", 8<<20/28), 76))
	m.WriteString("--b--\r\n")
	msg := []byte(m.String())
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		in := &inspector{rules: testRules}
		for p := msg; len(p) > 0; {
			k := min(64<<10, len(p))
			if r := in.feed(p[:k]); r != "" {
				b.Fatalf("matched %q", r)
			}
			p = p[k:]
		}
		if r := in.finish(); r != "" {
			b.Fatalf("matched %q", r)
		}
	}
}

// TestContentTypesInTheWild: forms real mailers send are read, never
// refused as ambiguous, and their parts are found.
func TestContentTypesInTheWild(t *testing.T) {
	for _, ct := range []string{
		`multipart/alternative; boundary="----=_NextPart_000_0012_01D4"; charset=UTF-8`,
		`multipart/mixed; boundary=----=_NextPart_000_0012_01D4`,
		"multipart/related;\r\n\tboundary=\"----=_NextPart_000_0012_01D4\";\r\n\ttype=\"text/html\"",
		`multipart/mixed; boundary="----=_NextPart_000_0012_01D4";`,
		`Multipart/Mixed; Boundary="----=_NextPart_000_0012_01D4"`,
		`multipart/mixed; boundary="----=_NextPart_000_0012_01D4" (comment)`,
		`multipart/mixed; boundary*=utf-8''----%3D_NextPart_000_0012_01D4`,
	} {
		msg := "Subject: hi\r\nContent-Type: " + ct + "\r\n\r\n------=_NextPart_000_0012_01D4\r\nContent-Type: text/plain; charset=us-ascii (Plain text)\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines("buy v1agra", 76) + "------=_NextPart_000_0012_01D4--\r\n"
		if got := inspect(msg, 5); got != "viagra" {
			t.Errorf("Content-Type: %s: %q, want the base64 part read", ct, got)
		}
	}
}
