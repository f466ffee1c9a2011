package webproxy

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// roundcube is the Roundcube form: _user and _pass, a login is
// _action=login (or _task=login) from the query, the body or a cookie.
var roundcube = formSpec{user: "_user", pass: "_pass", params: url.Values{"_task": {"login"}, "_action": {"login"}}}

func mp(boundary string, parts ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(parts); i += 2 {
		fmt.Fprintf(&b, "--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", boundary, parts[i], parts[i+1])
	}
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.String()
}

func TestReadForm(t *testing.T) {
	const form = "application/x-www-form-urlencoded"
	const multi = "multipart/form-data; boundary=XX"
	manyParts := make([]string, 0, 2*1002)
	for i := range 1001 {
		manyParts = append(manyParts, fmt.Sprintf("f%d", i), "x")
	}
	manyParts = append(manyParts, "_user", "boss@example.com")
	for _, c := range []struct {
		name, ctype, query, cookie, body string
		refused                          bool
		identified                       bool
		user, pass                       string
	}{
		{name: "roundcube's own form", ctype: form, query: "_task=login",
			body:       "_token=abc&_task=login&_action=login&_timezone=Europe%2FBerlin&_url=&_user=alice%40example.com&_pass=p%26w",
			identified: true, user: "alice@example.com", pass: "p&w"},
		{name: "task in the body only", ctype: form, body: "_task=login&_action=login&_user=boss%40example.com&_pass=x",
			identified: true, user: "boss@example.com", pass: "x"},
		{name: "action in a cookie", ctype: form, cookie: "roundcube_sessid=1; _action=login", body: "_x=1",
			identified: true},
		{name: "the user field alone identifies", ctype: form, query: "_task=mail", body: "_user=boss%40example.com",
			identified: true, user: "boss@example.com"},
		{name: "not a login", ctype: form, query: "_task=mail&_action=send", body: "_to=bob&_subject=hi&_message=x",
			identified: false},
		{name: "action folded", ctype: form, body: "_action=LOG-IN", identified: true},
		{name: "spaces trimmed as PHP's trim", ctype: form, body: "_action=login&_user=+boss%40example.com%09", identified: true, user: "boss@example.com"},
		{name: "PHP's media type cut at a comma", ctype: form + ", text/plain", body: "_action=login&_user=boss", identified: true, user: "boss"},
		{name: "PHP's media type ignores case and charset", ctype: "Application/X-WWW-Form-Urlencoded; charset=ISO-8859-1", body: "_user=boss", identified: true, user: "boss"},
		{name: "multipart", ctype: multi, body: mp("XX", "_action", "login", "_user", "alice@example.com", "_pass", "pw"),
			identified: true, user: "alice@example.com", pass: "pw"},
		{name: "multipart with a file", ctype: multi, body: "--XX\r\nContent-Disposition: form-data; name=\"_attachments[]\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XX--\r\n",
			identified: false},
		{name: "UTF-8 named", ctype: multi, body: mp("XX", "_charset_", "UTF-8", "_action", "login", "_user", "boss"), identified: true, user: "boss"},
		{name: "JSON", ctype: "application/json", body: `{"_user":"alice@example.com","_pass":"pw","_action":"login"}`,
			identified: true, user: "alice@example.com", pass: "pw"},

		// Evasions: each is refused.
		{name: "repeated user field", ctype: form, body: "_action=login&_user=alice&_user=boss", refused: true},
		{name: "repeated action", ctype: form, body: "_action=login&_action=x", refused: true},
		{name: "NUL after the name", ctype: form, body: "_action=login&_user=boss%00", refused: true},
		{name: "NUL inside the name", ctype: form, body: "_action=login&_user=bo%00ss", refused: true},
		{name: "NUL in the key", ctype: form, body: "_action=login&_user%00x=boss", refused: true},
		{name: "array", ctype: form, body: "_action=login&_user[]=boss", refused: true},
		{name: "array with an index", ctype: form, body: "_action=login&_user[a]=boss", refused: true},
		{name: "open bracket", ctype: form, body: "_action=login&_user[=boss", refused: true},
		{name: "leading space in the key", ctype: form, body: "_action=login&+_user=boss", refused: true},
		{name: "dot for underscore", ctype: form, body: "_action=login&.user=boss", refused: true},
		{name: "leading spaces escaped", ctype: form, body: "_action=login&%20%20_user=boss", refused: true},
		{name: "invalid escape in the value", ctype: form, body: "_action=login&_user=boss%zz", refused: true},
		{name: "markup in the name", ctype: form, body: "_action=login&_user=bo%3Cb%3Ess", refused: true},
		{name: "markup in the action", ctype: form, body: "_action=lo%3Cb%3Egin&_user=boss", refused: true},
		{name: "invalid UTF-8", ctype: form, body: "_action=login&_user=bo%FFss", refused: true},
		{name: "user in query and body differ", ctype: form, query: "_user=alice", body: "_user=boss", refused: true},
		{name: "user in a cookie differs", ctype: form, cookie: "_user=boss", body: "_user=alice", refused: true},
		{name: "too many variables", ctype: form, body: strings.Repeat("a=1&", 1000) + "_user=boss", refused: true},
		{name: "multipart repeated field", ctype: multi, body: mp("XX", "_user", "alice", "_user", "boss"), refused: true},
		{name: "multipart too many parts", ctype: multi, body: mp("XX", manyParts...), refused: true},
		{name: "multipart bare LF", ctype: multi, body: "--XX\nContent-Disposition: form-data; name=\"_user\"\n\nboss\n--XX--\n", refused: true},
		{name: "multipart LF before a boundary", ctype: multi, body: "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\n--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n", refused: true},
		{name: "multipart preamble", ctype: multi, body: "junk\r\n" + mp("XX", "_user", "boss"), refused: true},
		{name: "multipart transfer encoding", ctype: multi, body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nbo=73s\r\n--XX--\r\n", refused: true},
		{name: "multipart file named as the user field", ctype: multi, body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"; filename=\"\"\r\n\r\nboss\r\n--XX--\r\n", refused: true},
		{name: "multipart unquoted name", ctype: multi, body: "--XX\r\nContent-Disposition: form-data; name=_user\r\n\r\nboss\r\n--XX--\r\n", refused: true},
		{name: "multipart boundary prefix", ctype: multi, body: "--XXY\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n", refused: true},
		{name: "multipart two boundaries", ctype: "multipart/form-data; boundary=XX; boundary=YY", body: mp("XX", "_user", "boss"), refused: true},
		{name: "multipart boundary read two ways", ctype: "multipart/form-data; xboundary=YY; boundary=XX", body: mp("XX", "_user", "boss"), refused: true},
		{name: "JSON duplicate", ctype: "application/json", body: `{"_user":"alice","_user":"boss"}`, refused: true},
		{name: "JSON non-string", ctype: "application/json", body: `{"_user":["boss"]}`, refused: true},
		{name: "JSON trailing data", ctype: "application/json", body: `{"_user":"alice"}{"_user":"boss"}`, refused: true},
		{name: "JSON without a JSON type", ctype: "text/plain", body: `{"_user":"boss"}`, refused: true},
		{name: "another charset", ctype: multi, body: mp("XX", "_charset_", "ISO-2022-JP", "_action", "login", "_user", "boss"), refused: true},
		{name: "form type read two ways", ctype: "application/x-www-form-urlencoded\t", body: "_user=boss", refused: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			if c.ctype != "" {
				h.Set("Content-Type", c.ctype)
			}
			if c.cookie != "" {
				h.Set("Cookie", c.cookie)
			}
			rd, err := readForm(&roundcube, h, c.query, []byte(c.body), true)
			if c.refused {
				if err == nil {
					t.Fatalf("read as %+v, want a refusal", rd)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if rd.identified != c.identified || rd.user != c.user || rd.pass != c.pass {
				t.Errorf("read %+v, want identified=%v user=%q pass=%q", rd, c.identified, c.user, c.pass)
			}
		})
	}
}

func TestPHPKeys(t *testing.T) {
	for _, c := range []struct{ in, strict string }{
		{"_user", "_user"}, {" _user", "_user"}, {"a.b c", "a_b_c"}, {"_user[]", "_user"}, {"_user[x]", "_user"},
		{"_user[x", "_user_x"}, {"a\x00b", "a"}, {"a[b.c", "a_b.c"},
	} {
		if got, _ := phpKeys(c.in); got != c.strict {
			t.Errorf("phpKeys(%q) = %q, want %q", c.in, got, c.strict)
		}
	}
}

func TestFormPathMatches(t *testing.T) {
	root, index, below := newFormPath("/"), newFormPath("/index.php"), newFormPath("/webmail/index.php/*")
	for _, c := range []struct {
		fp    FormPath
		clean string
		want  bool
	}{
		{root, "/", true}, {root, "/x", false}, {index, "/INDEX.PHP", true}, {index, "/index.php/x", false},
		{below, "/webmail/index.php", true}, {below, "/webmail/index.php/x/y", true}, {below, "/webmail/index.phpx", false},
		{newFormPath("/webmail/"), "/webmail", true},
	} {
		if got := c.fp.matches(c.clean); got != c.want {
			t.Errorf("%+v matches %q = %v, want %v", c.fp, c.clean, got, c.want)
		}
	}
}

// BenchmarkReadForm: reading Roundcube's login request (query, cookies,
// urlencoded body) as PHP does.
func BenchmarkReadForm(b *testing.B) {
	h := http.Header{}
	h.Set("Content-Type", "application/x-www-form-urlencoded")
	h.Set("Cookie", "roundcube_sessid=0123456789abcdef0123456789; roundcube_cookies=enabled")
	body := []byte("_token=0123456789abcdef0123456789abcdef&_task=login&_action=login&_timezone=Europe%2FBerlin&_url=&_user=alice%40example.com&_pass=correct+horse")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := readForm(&roundcube, h, "_task=login", body, true); err != nil {
			b.Fatal(err)
		}
	}
}
