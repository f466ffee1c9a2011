package e2e

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/postern/postern/internal/testenv"
)

// TestContentRulesDecoded runs `postern serve` with the suite's content
// rules (Subject CASINO-E2E, body WIRE-THE-MONEY-E2E) in front of the real
// Postfix and Dovecot and sends messages that hide the phrases the way
// mail readers undo: each is refused with 554 and its sender blocked (C),
// over DATA and over BDAT, and nothing reaches alice's Maildir (Postfix
// discards the partial message when postern drops the connection). A clean
// message encoded the same ways is delivered. Client addresses
// 198.51.100.200–229.
func TestContentRulesDecoded(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	gw := startGateway(t, gwConfig{Backend: env.SMTPProxy})

	b64 := func(s string) string {
		e := base64.StdEncoding.EncodeToString([]byte(s))
		var out strings.Builder
		for len(e) > 76 {
			out.WriteString(e[:76] + "\n")
			e = e[76:]
		}
		return out.String() + e + "\n"
	}
	head := func(tok string) string {
		return "From: <bob@example.test>\nTo: <alice@example.test>\nMessage-ID: <" + tok + "@e2e.test>\nX-Token: " + tok + "\n"
	}
	evasions := []struct {
		name, rule string
		msg        func(tok string) string
	}{
		{"EncodedWordSubject", "casino-subject", func(tok string) string {
			return head(tok) + "Subject: =?utf-8?q?win_at_CAS?=\n =?utf-8?b?SU5PLUUyRQ==?=\n\nhello\n"
		}},
		{"FoldedSubject", "casino-subject", func(tok string) string {
			return head(tok) + "Subject: win at\n CASINO-E2E\n\nhello\n"
		}},
		{"QuotedPrintableBody", "wire-fraud-body", func(tok string) string {
			return head(tok) + "Subject: hi\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nplease WIRE-THE-=\nMONEY=2DE2E today\n"
		}},
		{"Base64MultipartBody", "wire-fraud-body", func(tok string) string {
			return head(tok) + "Subject: hi\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"xx\"\n\n--xx\nContent-Type: text/plain\n\nnothing\n--xx\nContent-Type: text/html; charset=utf-16le\nContent-Transfer-Encoding: base64\n\n" +
				b64(utf16le("<p>please WIRE-THE-<b></b>MONEY-E2E today</p>\n")) + "--xx--\n"
		}},
	}
	ip := 200
	for _, ev := range evasions {
		for _, useBDAT := range []bool{false, true} {
			ip++
			a := fmt.Sprintf("198.51.100.%d", ip)
			name := ev.name
			if useBDAT {
				name += "_BDAT"
			}
			t.Run(name, func(t *testing.T) {
				tok := uniq("content-" + name)
				msg := crlf(ev.msg(tok))
				file := writeFile(t, "evasion.eml", msg)
				send := data(file)
				if useBDAT {
					send = bdat(file, len(msg)/2, len(msg)-len(msg)/2)
				}
				mark := env.LogMark(t, "postfix")
				r := python(t, gw.SMTP, netip.AddrPortFrom(netip.MustParseAddr(a), 40001), false,
					ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), send, quit())
				refused := false
				for i := 4; i < len(r); i++ {
					if got := r.reply(i); got.Code == 554 && got.Msg == "5.7.1 Error: message content rejected" {
						refused = true
						break
					} else if got.Code != 250 {
						t.Fatalf("reply %d: %v, want 554 5.7.1 content rejected%v", i, got, r)
					}
				}
				if !refused {
					t.Fatalf("not refused:%v", r)
				}
				gw.wantBlock(t, a, "C", "smtp", "rule "+ev.rule)
				waitPostfix(t, env, mark, 1, "disconnect from "+client(a))
				noMessage(t, env, "alice@example.test", tok)
			})
		}
	}

	// The same encodings without the phrases are delivered, byte for byte.
	t.Run("CleanEncoded", func(t *testing.T) {
		const a = "198.51.100.229"
		tok := uniq("content-clean")
		msg := crlf(head(tok) + "Subject: =?utf-8?q?win_at_chess?=\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"xx\"\n\n--xx\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\nplease wire=\n the fence\n--xx\nContent-Type: text/html; charset=utf-16le\nContent-Transfer-Encoding: base64\n\n" +
			b64(utf16le("<p>please wire the fence</p>\n")) + "--xx--\n")
		file := writeFile(t, "clean.eml", msg)
		r := python(t, gw.SMTP, netip.AddrPortFrom(netip.MustParseAddr(a), 40001), false,
			ehlo(), mail("bob@example.test"), rcpt("alice@example.test"), data(file), quit())
		if got := r.reply(4); got.Code != 250 {
			t.Fatalf("clean message: %v%v", got, r)
		}
		got := waitMessages(t, env, "alice@example.test", tok, 1)
		gw.noBlock(t, a)
		b, err := os.ReadFile(got[0])
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.ReplaceAll(string(b), "\r\n", "\n"), strings.ReplaceAll(string(msg), "\r\n", "\n")) {
			t.Fatalf("the delivered message differs from the one sent:\n%s", b)
		}
	})
}

func utf16le(s string) string {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r), byte(r>>8))
	}
	return string(b)
}
