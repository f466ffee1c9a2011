package webproxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// chunked yields its data n bytes at a time.
type chunked struct {
	data []byte
	n    int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(c.n, len(p), len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

func (c *chunked) Close() error { return nil }

// TestScanAgreesWithParse: for every case of the differential corpus the
// streaming scanner passes a body unchanged exactly when the whole-body
// reader finds no login field in it, at any read size.
func TestScanAgreesWithParse(t *testing.T) {
	cases := append(phpTrickyCases(), phpFuzzCases(400)...)
	cases = append(cases,
		phpCase{Ctype: "multipart/form-data; boundary=XX", Body: "--XX\r\nContent-Disposition: form-data; name=\"_attachments[]\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n" +
			strings.Repeat("\r\n-X\n--\r\n--X", 3000) + "\r\n--XX--\r\n"},
		phpCase{Ctype: "application/x-www-form-urlencoded", Body: "_to=bob&_message=" + strings.Repeat("x%26y", 5000) + "&_draft=1"},
	)
	for i, c := range cases {
		h := http.Header{}
		h.Set("Content-Type", c.Ctype)
		sc, err := newScanner(&roundcube, h)
		if err != nil || sc == nil {
			continue
		}
		fields, perr := parseBody(&roundcube, h, []byte(c.Body))
		clean := perr == nil
		for _, f := range fields {
			if roundcube.relevant(f.name) {
				clean = false
			}
		}
		for _, n := range []int{1, 3, 17, 4096} {
			out, serr := io.ReadAll(newScanBody(&chunked{data: []byte(c.Body), n: n}, sc0(t, h)))
			var u *unreadable
			switch {
			case clean && serr != nil:
				t.Errorf("case %d (read size %d) %q: the scanner refused a body the reader accepts: %v", i, n, c.Body, serr)
			case clean && !bytes.Equal(out, []byte(c.Body)):
				t.Errorf("case %d (read size %d): the scanner changed the body", i, n)
			case !clean && perr == nil && serr == nil:
				t.Errorf("case %d (read size %d) %q: the scanner passed a login field", i, n, c.Body)
			case serr != nil && !errors.As(serr, &u):
				t.Errorf("case %d: scanner error %v is not a refusal", i, serr)
			}
			if serr == nil && perr != nil {
				t.Errorf("case %d (read size %d) %q: the scanner passed a body the reader refuses (%v)", i, n, c.Body, perr)
			}
		}
	}
}

func sc0(t *testing.T, h http.Header) scanner {
	sc, err := newScanner(&roundcube, h)
	if err != nil || sc == nil {
		t.Fatalf("newScanner: %v", err)
	}
	return sc
}

// FuzzReadForm: no request makes the reader panic; an accepted account is
// plain text without surrounding blanks, and the streaming scanner passes
// a body unchanged only when the whole-body reader finds no login field in
// it (and refuses it otherwise).
func FuzzReadForm(f *testing.F) {
	f.Add("_task=login", "application/x-www-form-urlencoded", "", "_action=login&_user=alice&_pass=pw")
	f.Add("", "multipart/form-data; boundary=XX", "_action=login", "--XX\r\nContent-Disposition: form-data; name=\"_user\"\r\n\r\nboss\r\n--XX--\r\n")
	f.Add("", "application/json", "", `{"_user":"a","_pass":"b"}`)
	f.Add("_user[]=x", "", "a=b; _user=c", "_user=%00&_user=1")
	f.Fuzz(func(t *testing.T, query, ctype, cookie, body string) {
		h := http.Header{}
		h.Set("Content-Type", ctype)
		h.Set("Cookie", cookie)
		rd, err := readForm(&roundcube, h, query, []byte(body), true)
		if err == nil && rd.hasUser && (!plainText(rd.user) || strings.TrimSpace(rd.user) != rd.user) {
			t.Fatalf("accepted account %q", rd.user)
		}
		sc, err := newScanner(&roundcube, h)
		if err != nil || sc == nil {
			return
		}
		fields, perr := parseBody(&roundcube, h, []byte(body))
		clean := perr == nil
		for _, fl := range fields {
			if roundcube.relevant(fl.name) {
				clean = false
			}
		}
		out, serr := io.ReadAll(newScanBody(&chunked{data: []byte(body), n: 7}, sc))
		switch {
		case serr == nil && !clean:
			t.Fatalf("the scanner passed a body the reader refuses or reads a login field in (%v)", perr)
		case serr == nil && !bytes.Equal(out, []byte(body)):
			t.Fatal("the scanner changed the body")
		case clean && serr != nil:
			t.Fatalf("the scanner refused a clean body: %v", serr)
		}
	})
}
