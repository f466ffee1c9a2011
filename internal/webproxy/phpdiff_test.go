package webproxy

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// phpVal is a PHP value as the differential router prints it: a string
// (hex) or an array of key/value pairs.
type phpVal struct {
	S     string
	A     []phpPair
	isArr bool
}

type phpPair struct {
	K string
	V phpVal
}

func (v *phpVal) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		d, err := hex.DecodeString(s)
		v.S = string(d)
		return err
	}
	var o struct {
		Array [][2]json.RawMessage `json:"array"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	v.isArr = true
	for _, kv := range o.Array {
		var k phpVal
		var x phpVal
		if err := json.Unmarshal(kv[0], &k); err != nil {
			return err
		}
		if err := json.Unmarshal(kv[1], &x); err != nil {
			return err
		}
		v.A = append(v.A, phpPair{K: k.S, V: x})
	}
	return nil
}

func (v phpVal) get(k string) (phpVal, bool) {
	for _, p := range v.A {
		if p.K == k {
			return p.V, true
		}
	}
	return phpVal{}, false
}

type phpView struct {
	Get, Post, Cookie phpVal
	JSON              phpVal `json:"json"`
	RcAction          string `json:"rc_action"`
	RcUser            string `json:"rc_user"`
}

// phpCase is one request for the differential test.
type phpCase struct {
	Query, Ctype, Cookie, Body string
}

// startPHP runs PHP's built-in web server with the differential router.
func startPHP(t *testing.T) string {
	t.Helper()
	php, err := exec.LookPath("php")
	if err != nil {
		if os.Getenv("POSTERN_E2E") == "1" {
			t.Fatalf("POSTERN_E2E=1 but php is not installed (apt-get install php-cli): %v", err)
		}
		t.Skip("php is not installed (apt-get install php-cli); the differential test against PHP is skipped")
	}
	if os.Getenv("POSTERN_E2E") != "1" && testing.Short() {
		t.Skip("differential test against PHP: set POSTERN_E2E=1 (or run without -short)")
	}
	router, err := filepath.Abs("testdata/php-router.php")
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, php, "-n", "-d", "max_input_vars=1000", "-d", "post_max_size=8M",
			"-d", "variables_order=EGPCS", "-d", "request_order=GP", "-d", "display_errors=0", "-S", addr, router)
		cmd.Dir = t.TempDir()
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		t.Cleanup(func() { cancel(); <-exited })
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return addr
			}
			select {
			case <-exited:
				deadline = time.Time{}
			case <-time.After(20 * time.Millisecond):
			}
		}
		cancel()
	}
	t.Fatal("php -S did not start")
	return ""
}

// askPHP sends a case to PHP and returns how PHP read it.
func askPHP(t *testing.T, addr string, c phpCase) phpView {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	target := "/"
	if c.Query != "" {
		target += "?" + c.Query
	}
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n", target)
	if c.Ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", c.Ctype)
	}
	if c.Cookie != "" {
		fmt.Fprintf(&b, "Cookie: %s\r\n", c.Cookie)
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(c.Body), c.Body)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%+v: %v", c, err)
	}
	defer resp.Body.Close()
	var v phpView
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%+v: PHP answered %d %q: %v", c, resp.StatusCode, body, err)
	}
	d, _ := hex.DecodeString(v.RcUser)
	v.RcUser = string(d)
	return v
}

// compare checks postern's reading of a case against PHP's: postern
// refuses it, or reads the same account, password and login routing.
func compare(c phpCase, v phpView) (refused bool, mismatch string) {
	h := http.Header{}
	if c.Ctype != "" {
		h.Set("Content-Type", c.Ctype)
	}
	if c.Cookie != "" {
		h.Set("Cookie", c.Cookie)
	}
	rd, err := readForm(&roundcube, h, c.Query, []byte(c.Body), true)
	if err != nil {
		return true, ""
	}
	for _, f := range []struct {
		name string
		trim bool
		got  string
		has  bool
	}{{"_user", true, rd.user, rd.hasUser}, {"_pass", false, rd.pass, rd.hasPass}} {
		var vals []string
		for _, src := range []phpVal{v.Get, v.Post, v.Cookie, v.JSON} {
			x, ok := src.get(f.name)
			if !ok {
				continue
			}
			if x.isArr {
				return false, fmt.Sprintf("PHP read %s as an array; postern accepted %+v", f.name, rd)
			}
			s := x.S
			if f.trim {
				s = strings.Trim(s, " \t\n\r\x00\x0b")
			}
			vals = append(vals, s)
		}
		for _, s := range vals {
			if s != vals[0] {
				return false, fmt.Sprintf("PHP read two values of %s (%q); postern accepted %+v", f.name, vals, rd)
			}
		}
		switch {
		case len(vals) == 0 && f.has:
			return false, fmt.Sprintf("postern read %s = %q, PHP read none", f.name, f.got)
		case len(vals) > 0 && (!f.has || f.got != vals[0]):
			return false, fmt.Sprintf("PHP read %s = %q, postern %q (has %v)", f.name, vals[0], f.got, f.has)
		}
	}
	if v.RcUser != "" && v.RcUser != rd.user {
		return false, fmt.Sprintf("Roundcube logs in %q, postern read %q", v.RcUser, rd.user)
	}
	if v.RcAction == "login" && !rd.identified {
		return false, "Roundcube routes a login postern did not recognise"
	}
	return false, ""
}

// phpTrickyCases are hand-written cases: each class of the review's
// evasions and PHP's reading rules.
func phpTrickyCases() []phpCase {
	const form = "application/x-www-form-urlencoded"
	const multi = "multipart/form-data; boundary=XX"
	cs := []phpCase{
		{Query: "_task=login", Ctype: form, Body: "_token=t&_task=login&_action=login&_timezone=UTC&_url=&_user=alice%40example.com&_pass=pw"},
		{Ctype: form, Body: "_action=login&_user=alice&_user=boss"},
		{Ctype: form, Body: "_action=login&_user=boss%00"},
		{Ctype: form, Body: "_action=login&_user%00x=boss"},
		{Ctype: form, Body: "_action=login&_user[]=boss"},
		{Ctype: form, Body: "_action=login&_user[x]=boss"},
		{Ctype: form, Body: "_action=login&_user[=boss"},
		{Ctype: form, Body: "_action=login&_user]=boss"},
		{Ctype: form, Body: "_action=login&+_user=boss"},
		{Ctype: form, Body: "_action=login&.user=boss"},
		{Ctype: form, Body: "_action=login&_user.=boss"},
		{Ctype: form, Body: "_action=login&_user=%20boss%09"},
		{Ctype: form, Body: "_action=login&_user=bo%zzss"},
		{Ctype: form, Body: "_action=login&_user=b%3Co%3Ess"},
		{Ctype: form, Body: "_action=login;_user=boss"},
		{Ctype: form, Body: "_user=boss&_action=lo%3Cb%3Egin"},
		{Ctype: form, Body: "_user=boss&_action=l%00ogin"},
		{Ctype: form, Body: "_user=boss&_action=LOGIN"},
		{Ctype: form, Body: "_user=boss&_action=lo+gin"},
		{Ctype: form, Body: strings.Repeat("a=1&", 999) + "_user=boss"},
		{Ctype: form, Body: strings.Repeat("a=1&", 1000) + "_user=boss"},
		{Ctype: form, Body: strings.Repeat("a=1&", 1001) + "_user=boss"},
		{Query: "_user=boss", Ctype: form, Body: "_user=alice"},
		{Query: "_user=boss", Ctype: form, Body: "_action=login"},
		{Query: "_action=login", Cookie: "_user=boss", Ctype: form, Body: "x=1"},
		{Cookie: "_action=login; _action=x", Ctype: form, Body: "_user=boss"},
		{Cookie: " _action=login", Ctype: form, Body: "_user=boss"},
		{Cookie: "_action=lo%67in", Ctype: form, Body: "_user=boss"},
		{Ctype: form + ", text/plain", Body: "_action=login&_user=boss"},
		{Ctype: "APPLICATION/X-WWW-FORM-URLENCODED;charset=latin1", Body: "_action=login&_user=boss"},
		{Ctype: form + "\t", Body: "_action=login&_user=boss"},
		{Ctype: "text/plain", Body: "_action=login&_user=boss"},
		{Ctype: "", Body: "_action=login&_user=boss"},
		{Ctype: "application/json", Body: `{"_action":"login","_user":"boss"}`},
		{Ctype: multi, Body: multipartBody("XX", "_action", "login", "_user", "alice@example.com", "_pass", "pw")},
		{Ctype: multi, Body: multipartBody("XX", "_action", "login", "_user", "alice", "_user", "boss")},
		{Ctype: multi, Body: "--XX\nContent-Disposition: form-data; name=\"_user\"\n\nboss\n--XX--\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\n--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "preamble\r\n--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XXY\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=_user\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"; filename=\"\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"; name=\"x\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"x\"; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\ncontent-disposition: form-data; NAME=\"_user\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\nX-Extra: 1\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data;\r\n name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--junk"},
		{Ctype: multi, Body: "--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX  \r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nalice\r\n--XX--\r\n"},
		{Ctype: "multipart/form-data; boundary=\"XX\"", Body: multipartBody("XX", "_action", "login", "_user", "boss")},
		{Ctype: "multipart/form-data; xboundary=YY; boundary=XX", Body: multipartBody("XX", "_user", "boss")},
		{Ctype: "multipart/form-data; BOUNDARY=XX", Body: multipartBody("XX", "_action", "login", "_user", "boss")},
		{Ctype: "multipart/form-data; \xc0\xc0 BOUNDARY=XX", Body: multipartBody("XX", "_action", "login", "_user", "boss")},
		{Ctype: "multipart/form-data; \u212a=1; BOUNDARY=XX", Body: multipartBody("XX", "_action", "login", "_user", "boss")},
		{Ctype: "multipart/form-data; boundary=XX, text/plain", Body: multipartBody("XX", "_user", "boss")},
		{Ctype: "multipart/form-data; boundary=XX", Body: multipartBody("XX", "_user[]", "boss")},
		{Ctype: "multipart/form-data; boundary=XX", Body: multipartBody("XX", " _user", "boss")},
		{Ctype: "multipart/form-data; boundary=XX", Body: multipartBody("XX", "_user\x00x", "boss")},
	}
	var many []string
	for i := range 1001 {
		many = append(many, fmt.Sprintf("p%d", i), "")
	}
	cs = append(cs, phpCase{Ctype: multi, Body: multipartBody("XX", append(many, "_user", "boss")...)})
	return cs
}

// phpFuzzCases generates n urlencoded and multipart bodies from pieces of
// the tricky ones, with a fixed seed.
func phpFuzzCases(n int) []phpCase {
	rng := rand.New(rand.NewPCG(10, 2026))
	pieces := []string{"_user", "_pass", "_task", "_action", "login", "boss", "alice", "_us", "er", "[", "]", "[]",
		"%5B", "%5D", "%00", "%20", "+", ".", " ", "=", "&", "&", "&", "%zz", "%", ";", "%3C", "%3E", "\x00", "_", "%2E", "%5f", "\t", "%0A"}
	word := func() string {
		var b strings.Builder
		for range 1 + rng.IntN(6) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	ctypes := []string{"application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=UTF-8", "", "text/plain"}
	var out []phpCase
	for i := range n {
		var c phpCase
		if i%4 == 3 {
			parts := []string{}
			for range 1 + rng.IntN(4) {
				parts = append(parts, word(), word())
			}
			c.Ctype, c.Body = "multipart/form-data; boundary=XX", multipartBody("XX", parts...)
			if rng.IntN(3) == 0 {
				c.Body = strings.ReplaceAll(c.Body, "\r\n", "\n")
			}
		} else {
			var b strings.Builder
			for range 1 + rng.IntN(5) {
				b.WriteString(word() + "=" + word() + "&")
			}
			c.Ctype, c.Body = ctypes[rng.IntN(len(ctypes))], b.String()
		}
		if rng.IntN(4) == 0 {
			c.Query = strings.NewReplacer(" ", "%20", "\x00", "%00", "\t", "%09", "[", "%5B", "]", "%5D").Replace(word() + "=" + word())
		}
		if rng.IntN(6) == 0 {
			c.Cookie = strings.NewReplacer("\x00", "", "\t", "").Replace(word() + "=" + word())
		}
		out = append(out, c)
	}
	return out
}

// TestPHPDifferential: for every case postern's reading of the account,
// password and login routing equals real PHP's (as Roundcube reads them),
// or postern refuses the request.
func TestPHPDifferential(t *testing.T) {
	addr := startPHP(t)
	cases := append(phpTrickyCases(), phpFuzzCases(400)...)
	refused, agreed := 0, 0
	for i, c := range cases {
		v := askPHP(t, addr, c)
		ref, mismatch := compare(c, v)
		if mismatch != "" {
			t.Errorf("case %d %+q: %s\nPHP: GET %+v POST %+v COOKIE %+v JSON %+v action %q", i, c, mismatch, v.Get, v.Post, v.Cookie, v.JSON, v.RcAction)
			continue
		}
		if ref {
			refused++
		} else {
			agreed++
		}
	}
	t.Logf("%d cases: postern read %d exactly as PHP, refused %d", len(cases), agreed, refused)
	if agreed < len(cases)/4 {
		t.Errorf("postern refused %d of %d cases: the reader is too strict to be useful", refused, len(cases))
	}
}
