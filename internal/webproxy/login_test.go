package webproxy

import (
	"net/http"
	"testing"
)

func TestFailureMatch(t *testing.T) {
	resp := func(code int, hdr ...string) *http.Response {
		r := &http.Response{StatusCode: code, Header: http.Header{}}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r
	}
	status := LoginForm{FailStatus: 401}
	redirect := LoginForm{FailRedirect: "/login?error"}
	header := LoginForm{FailHeader: "X-Login-Result", FailHeaderContains: "failed"}
	present := LoginForm{FailHeader: "X-Auth-Failed"}
	for _, c := range []struct {
		f    LoginForm
		r    *http.Response
		want bool
	}{
		{status, resp(401), true},
		{status, resp(200), false},
		{status, resp(302, "Location", "/login?error"), false},
		{redirect, resp(302, "Location", "/login?error=1"), true},
		{redirect, resp(303, "Location", "https://mail.example.com/login?error"), true},
		{redirect, resp(302, "Location", "/inbox"), false},
		{redirect, resp(200, "Location", "/login?error"), false},
		{header, resp(200, "X-Login-Result", "FAILED: bad password"), true},
		{header, resp(200, "X-Login-Result", "ok"), false},
		{present, resp(200, "X-Auth-Failed", ""), true},
		{present, resp(200), false},
	} {
		if got := c.f.failed(c.r); got != c.want {
			t.Errorf("%+v on %d %v: %v, want %v", c.f, c.r.StatusCode, c.r.Header, got, c.want)
		}
	}
}

func TestFormFields(t *testing.T) {
	for _, c := range []struct{ ctype, body, user, pass string }{
		{"application/x-www-form-urlencoded", "_user=alice%40example.com&_pass=s3cret&_task=login", "alice@example.com", "s3cret"},
		// No Content-Type: PHP and Go read no fields from the body, so a
		// login field there is refused rather than read.
		{"", "_user=bob&_pass=x", "", ""},
		{"application/json", `{"_user":"carol@example.com","_pass":"pw","n":1}`, "carol@example.com", "pw"},
		{"application/json", `{"_user":42}`, "", ""},
		{"multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\ndave\r\n--b\r\nContent-Disposition: form-data; name=\"_pass\"\r\n\r\npw\r\n--b--\r\n", "dave", "pw"},
		{"multipart/form-data; boundary=b", "--b\r\nbroken", "", ""},
		{"application/json", `{"_user":`, "", ""},
	} {
		u, p := formFields(c.ctype, []byte(c.body), "_user", "_pass")
		if u != c.user || p != c.pass {
			t.Errorf("%s %q: %q %q, want %q %q", c.ctype, c.body, u, p, c.user, c.pass)
		}
	}
}

// FuzzFormFields: no body makes the form reader panic or hang.
func FuzzFormFields(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "user=a&pass=b")
	f.Add("application/json", `{"user":"a"}`)
	f.Add("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\na\r\n--b--\r\n")
	f.Fuzz(func(t *testing.T, ctype, body string) {
		u, _ := formFields(ctype, []byte(body), "user", "pass")
		if len(u) > len(body) {
			t.Fatalf("user %q longer than the body", u)
		}
	})
}

// formFields reads the user and password fields of a form body
// (urlencoded, multipart or a JSON object) the way the application will;
// both are "" when the body cannot be read with certainty.
func formFields(ctype string, body []byte, userField, passField string) (user, pass string) {
	spec := formSpec{user: userField, pass: passField}
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	rd, err := readForm(&spec, h, "", body, true)
	if err != nil {
		return "", ""
	}
	return rd.user, rd.pass
}
