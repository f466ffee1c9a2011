package webproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/postern/postern/internal/ascii"
)

// This file reads a login request the way the web application behind
// postern will read it, or refuses it. The model is PHP's (Roundcube,
// SnappyMail and RainLoop are PHP applications; Go's and SOGo's readers
// agree with it on everything this reader accepts):
//
//   - The query ($_GET) and a urlencoded body ($_POST) are split on "&",
//     each pair at its first "=", "+" and %XX decoded; an invalid escape is
//     kept as it is. Cookies ($_COOKIE) are split on ";".
//   - A name is filed under a mangled key: leading spaces dropped, cut at
//     a NUL, spaces and dots turned into "_", and "[" starting an array
//     (a "[" without "]" becomes "_"). The last of duplicate keys wins in
//     $_GET and $_POST, the first in $_COOKIE.
//   - multipart/form-data is split on the boundary taken from the
//     Content-Type (the first "boundary" in it); a part with a filename is
//     a file, not a field.
//   - At most max_input_vars (1000) variables per source are read.
//
// The reader does not reproduce all of that: on the fields that matter (the
// user and password fields and the identifying parameters) it accepts only
// the one spelling every reader agrees on and refuses the rest. A watched
// field that appears twice, as an array, under a mangled spelling, with a
// NUL, a control character, markup or invalid UTF-8 in its value, in a
// file part, or in a body postern cannot parse with certainty, makes the
// request unreadable: it is refused, never passed.

// maxInputVars is PHP's default max_input_vars: the variables read per
// source. A login request with more is refused.
const maxInputVars = 1000

// unreadable is a login request postern cannot read with certainty.
type unreadable struct {
	status int    // 400, 413 or 415
	why    string // for the log; never a field's value
}

func (e *unreadable) Error() string { return e.why }

func refuse(status int, format string, args ...any) *unreadable {
	return &unreadable{status: status, why: fmt.Sprintf(format, args...)}
}

// source is where a field came from.
type source uint8

const (
	fromQuery source = iota
	fromBody
	fromCookie
	nSources
)

func (s source) String() string {
	return [...]string{"query", "body", "cookie"}[s]
}

// field is one name=value pair of a source, both decoded.
type field struct {
	name, value string
}

// formSpec is what the reader looks for.
type formSpec struct {
	user, pass string     // field names; pass may be ""
	params     url.Values // identifying parameters (any one, in any source)
}

// formRead is the reading of a login request.
type formRead struct {
	user, pass       string
	hasUser, hasPass bool
	// identified: the request is a login attempt (an identifying
	// parameter, the user field, or a form without parameters).
	identified bool
}

// watched reports whether name is one of the fields the reader checks.
func (s *formSpec) watched(name string) bool {
	if name == s.user || (s.pass != "" && name == s.pass) {
		return true
	}
	_, ok := s.params[name]
	return ok
}

// relevant reports whether a decoded name could be filed by PHP (or a more
// lenient reader) under a watched key.
func (s *formSpec) relevant(name string) bool {
	if s.watched(name) {
		return true
	}
	strict, loose := phpKeys(name)
	return s.watched(strict) || s.watched(loose)
}

// phpKeysEqual reports whether PHP could file name under key.
func phpKeysEqual(name, key string) bool {
	strict, loose := phpKeys(name)
	return name == key || strict == key || loose == key
}

// phpKeys returns the key PHP files a decoded name under (up to any array
// index) and a looser key for fail-closed matching: every " ", ".", "["
// and "]" turned into "_" or dropped as older PHP versions did.
func phpKeys(name string) (strict, loose string) {
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	name = strings.TrimLeft(name, " ")
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case ' ', '.':
			b.WriteByte('_')
		case '[':
			if strings.IndexByte(name[i+1:], ']') >= 0 {
				strict = b.String()
			} else {
				strict = b.String() + "_" + name[i+1:]
			}
			l := b.String()
			return strict, l
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), b.String()
}

// readForm reads the watched fields of a request from its query, its
// cookies and (when body is not nil) its body, and decides whether it is a
// login attempt. An error is an *unreadable.
func readForm(spec *formSpec, h http.Header, rawQuery string, body []byte, hasBody bool) (formRead, error) {
	var rd formRead
	var srcs [nSources][]field
	var err error
	if srcs[fromQuery], err = parseURLEncoded(rawQuery); err != nil {
		return rd, err
	}
	srcs[fromCookie] = parseCookies(strings.Join(h.Values("Cookie"), "; "))
	if len(srcs[fromCookie]) > maxInputVars {
		return rd, refuse(400, "more than %d cookies", maxInputVars)
	}
	if hasBody {
		if srcs[fromBody], err = parseBody(spec, h, body); err != nil {
			return rd, err
		}
	}
	var users, passes []string
	for src := range nSources {
		seen := map[string]bool{}
		for _, f := range srcs[src] {
			if src == fromBody && phpKeysEqual(f.name, "_charset_") && !strings.EqualFold(f.value, "utf-8") {
				// PHP with mbstring's encoding translation converts the
				// fields from the charset a _charset_ field names.
				return rd, refuse(415, "a form that names another charset than UTF-8")
			}
			if !spec.relevant(f.name) {
				continue
			}
			if !spec.watched(f.name) || strings.IndexByte(f.name, 0) >= 0 {
				return rd, refuse(400, "a %s field is a mangled spelling of a login field", src)
			}
			if seen[f.name] {
				return rd, refuse(400, "the %s carries the login field %q twice", src, f.name)
			}
			seen[f.name] = true
			switch {
			case f.name == spec.user:
				u, ok := cleanAccount(f.value)
				if !ok {
					return rd, refuse(400, "the %s field %q is not a plain account name", src, f.name)
				}
				users = append(users, u)
			case spec.pass != "" && f.name == spec.pass:
				passes = append(passes, f.value)
			default:
				if !plainText(f.value) {
					return rd, refuse(400, "the %s parameter %q is not plain text", src, f.name)
				}
				for _, want := range spec.params[f.name] {
					if want == "" || paramWord(f.value) == paramWord(want) {
						rd.identified = true
					}
				}
			}
		}
	}
	for i := 1; i < len(users); i++ {
		if users[i] != users[0] {
			return rd, refuse(400, "the user field differs between query, body and cookies")
		}
	}
	for i := 1; i < len(passes); i++ {
		if passes[i] != passes[0] {
			return rd, refuse(400, "the password field differs between query, body and cookies")
		}
	}
	if len(users) > 0 {
		rd.user, rd.hasUser = users[0], true
		rd.identified = true
	}
	if len(passes) > 0 {
		rd.pass, rd.hasPass = passes[0], true
	}
	if len(spec.params) == 0 {
		rd.identified = true
	}
	return rd, nil
}

// cleanAccount returns an account name as the application will use it
// (PHP's trim of " \t\n\r\0\v"), or false when the value holds anything an
// application might strip or transform: NUL and other control characters,
// markup (Roundcube passes it through strip_tags), invalid UTF-8.
func cleanAccount(v string) (string, bool) {
	v = strings.Trim(v, " \t\n\r\v")
	if len(v) > 256 || !plainText(v) {
		return "", false
	}
	return v, true
}

// plainText reports whether v is valid UTF-8 without control characters
// or angle brackets.
func plainText(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '<' || r == '>' || r == utf8.RuneError {
			return false
		}
	}
	return true
}

// paramWord folds an identifying parameter's value for comparison: letters
// and digits only, lower case. Roundcube keeps only [a-z0-9_.-] of an
// action name (asciiwords); comparing on fewer characters and without case
// errs on the side of recognising a login.
func paramWord(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		}
	}
	return b.String()
}

// parseURLEncoded splits a query string or urlencoded body as PHP does.
func parseURLEncoded(s string) ([]field, error) {
	var out []field
	for s != "" {
		var pair string
		pair, s, _ = strings.Cut(s, "&")
		if pair == "" {
			continue
		}
		if len(out) == maxInputVars {
			return nil, refuse(400, "more than %d form variables", maxInputVars)
		}
		k, v, _ := strings.Cut(pair, "=")
		name, _ := phpURLDecode(k)
		value, ok := phpURLDecode(v)
		if !ok {
			// PHP keeps an invalid escape, Go drops the pair: only a
			// watched field must agree, so mark it with a NUL.
			name += "\x00"
		}
		out = append(out, field{name: name, value: value})
	}
	return out, nil
}

// phpURLDecode is urldecode(): "+" is a space, %XX a byte, and an invalid
// escape stays as it is (ok false).
func phpURLDecode(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	ok := true
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && isHex(s, i+1) && isHex(s, i+2):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case c == '%':
			ok = false
			b = append(b, c)
		default:
			b = append(b, c)
		}
	}
	return string(b), ok
}

func isHex(s string, i int) bool {
	if i >= len(s) {
		return false
	}
	c := s[i]
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// parseCookies splits Cookie headers as PHP does: on ";", leading white
// space dropped from a name, both sides urldecoded.
func parseCookies(s string) []field {
	var out []field
	for s != "" {
		var pair string
		pair, s, _ = strings.Cut(s, ";")
		pair = strings.TrimLeft(pair, " \t\n\r\v\f")
		if pair == "" || pair[0] == '=' {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		name, _ := phpURLDecode(k)
		value, ok := phpURLDecode(v)
		if !ok {
			name += "\x00"
		}
		out = append(out, field{name: name, value: value})
	}
	return out
}

const (
	typeURLEncoded = "application/x-www-form-urlencoded"
	typeMultipart  = "multipart/form-data"
)

// phpMediaType is the media type PHP dispatches a body on: lower case, cut
// at the first ";", "," or space.
func phpMediaType(ct string) string {
	if i := strings.IndexAny(ct, ";, "); i >= 0 {
		ct = ct[:i]
	}
	return ascii.Lower(ct)
}

// parseBody reads the fields of a request body by its Content-Type.
func parseBody(spec *formSpec, h http.Header, body []byte) ([]field, error) {
	kind, boundary, err := bodyKind(h)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindURLEncoded:
		return parseURLEncoded(string(body))
	case kindMultipart:
		return parseMultipart(spec, body, boundary)
	case kindJSON:
		return parseJSON(spec, body)
	}
	// No form type: PHP (and Go) read no fields from the body, but an
	// application may sniff it. A body that reads as a form or a JSON
	// object with a login field is refused; any other gives no fields.
	if fs, err := parseJSON(spec, body); err == nil {
		for _, f := range fs {
			if spec.relevant(f.name) {
				return nil, refuse(415, "a login field in a body without a form Content-Type")
			}
		}
	}
	fs, err := parseURLEncoded(string(body))
	if err != nil {
		return nil, err
	}
	for _, f := range fs {
		if spec.relevant(f.name) {
			return nil, refuse(415, "a login field in a body without a form Content-Type")
		}
	}
	return nil, nil
}

// Body kinds.
const (
	kindOther = iota
	kindURLEncoded
	kindMultipart
	kindJSON
)

// bodyKind tells how a body is read, from its Content-Type as PHP and Go
// both dispatch on it; a type they read differently is refused.
func bodyKind(h http.Header) (kind int, boundary string, err error) {
	if cts := h.Values("Content-Type"); len(cts) > 1 {
		return 0, "", refuse(400, "more than one Content-Type")
	}
	if ce := h.Values("Content-Encoding"); len(ce) > 0 && !(len(ce) == 1 && ascii.EqualFold(strings.TrimSpace(ce[0]), "identity")) {
		return 0, "", refuse(415, "an encoded login body (Content-Encoding)")
	}
	ct := h.Get("Content-Type")
	php := phpMediaType(ct)
	goType, params, goErr := mime.ParseMediaType(ct)
	switch {
	case php == typeURLEncoded:
		return kindURLEncoded, "", nil
	case php == typeMultipart:
		b, err := phpBoundary(ct)
		if err != nil {
			return 0, "", err
		}
		if goErr != nil || goType != typeMultipart || params["boundary"] != b {
			return 0, "", refuse(400, "a multipart Content-Type read two ways")
		}
		return kindMultipart, b, nil
	case goType == typeURLEncoded || goType == typeMultipart:
		return 0, "", refuse(415, "a form Content-Type read two ways")
	case goType == "application/json" || strings.HasSuffix(goType, "+json"):
		return kindJSON, "", nil
	}
	return kindOther, "", nil
}

// phpBoundary finds the multipart boundary as PHP does (the first
// "boundary", then "=", then a quoted string or up to "," or ";") and
// accepts it only when it is a plain token.
func phpBoundary(ct string) (string, error) {
	i := strings.Index(ct, "boundary")
	if i < 0 {
		i = strings.Index(ascii.Lower(ct), "boundary")
	}
	if i < 0 {
		return "", refuse(400, "a multipart body without a boundary")
	}
	rest := ct[i:]
	j := strings.IndexByte(rest, '=')
	if j < 0 {
		return "", refuse(400, "a multipart body without a boundary")
	}
	b := rest[j+1:]
	if strings.HasPrefix(b, `"`) {
		b = b[1:]
		k := strings.IndexByte(b, '"')
		if k < 0 {
			return "", refuse(400, "a bad multipart boundary")
		}
		b = b[:k]
	} else if k := strings.IndexAny(b, ",;"); k >= 0 {
		b = b[:k]
	}
	if b == "" || len(b) > 70 {
		return "", refuse(400, "a bad multipart boundary")
	}
	for k := 0; k < len(b); k++ {
		c := b[k]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("'()+_-./:?", c) >= 0) {
			return "", refuse(400, "a bad multipart boundary")
		}
	}
	return b, nil
}

// parseMultipart reads a multipart/form-data body in the one layout every
// reader agrees on: no preamble, CRLF line ends, delimiters followed by
// CRLF or "--", part headers Content-Disposition (form-data; name="…",
// optionally ; filename="…") and Content-Type only. Anything else is
// refused.
func parseMultipart(spec *formSpec, body []byte, boundary string) ([]field, error) {
	delim := []byte("--" + boundary)
	// PHP splits at a boundary after a bare LF too: every one must be a
	// CRLF delimiter.
	for i := 0; ; {
		k := bytes.Index(body[i:], append([]byte("\n"), delim...))
		if k < 0 {
			break
		}
		if i+k == 0 || body[i+k-1] != '\r' {
			return nil, refuse(400, "a multipart boundary after a bare LF")
		}
		i += k + 1
	}
	if !bytes.HasPrefix(body, delim) {
		return nil, refuse(400, "a multipart body with a preamble")
	}
	pos := len(delim)
	sep := append([]byte("\r\n"), delim...)
	var out []field
	parts := 0
	for {
		switch {
		case bytes.HasPrefix(body[pos:], []byte("--")):
			if rest := body[pos+2:]; len(rest) != 0 && !bytes.Equal(rest, []byte("\r\n")) {
				return nil, refuse(400, "data after the closing multipart boundary")
			}
			return out, nil
		case bytes.HasPrefix(body[pos:], []byte("\r\n")):
			pos += 2
		default:
			return nil, refuse(400, "a bad multipart delimiter line")
		}
		parts++
		if parts > maxInputVars {
			return nil, refuse(400, "more than %d multipart parts", maxInputVars)
		}
		end := bytes.Index(body[pos:], sep)
		if end < 0 {
			return nil, refuse(400, "an unterminated multipart body")
		}
		part := body[pos : pos+end]
		pos += end + len(sep)
		hdrEnd := bytes.Index(part, []byte("\r\n\r\n"))
		var hdr, data []byte
		switch {
		case bytes.HasPrefix(part, []byte("\r\n")):
			data = part[2:]
		case hdrEnd >= 0:
			hdr, data = part[:hdrEnd], part[hdrEnd+4:]
		default:
			return nil, refuse(400, "a multipart part without an end of headers")
		}
		name, file, err := partName(hdr)
		if err != nil {
			return nil, err
		}
		if name == "" {
			continue
		}
		if file {
			if spec.relevant(name) {
				return nil, refuse(400, "a login field sent as a file")
			}
			continue
		}
		out = append(out, field{name: name, value: string(data)})
	}
}

// partName reads a part's headers: the form field's name and whether the
// part is a file.
func partName(hdr []byte) (name string, file bool, err error) {
	if len(hdr) == 0 {
		return "", false, nil
	}
	var disp string
	seenType := false
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if strings.ContainsAny(line, "\r\n\x00") || line == "" || line[0] == ' ' || line[0] == '\t' {
			return "", false, refuse(400, "a bad multipart header")
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return "", false, refuse(400, "a bad multipart header")
		}
		v = strings.TrimLeft(v, " \t")
		switch ascii.Lower(k) {
		case "content-disposition":
			if disp != "" {
				return "", false, refuse(400, "two Content-Disposition headers in a part")
			}
			disp = v
		case "content-type":
			if seenType {
				return "", false, refuse(400, "two Content-Type headers in a part")
			}
			seenType = true
		default:
			return "", false, refuse(400, "a multipart part header other than Content-Disposition and Content-Type")
		}
	}
	if disp == "" {
		return "", false, refuse(400, "a multipart part without Content-Disposition")
	}
	rest, ok := strings.CutPrefix(disp, `form-data; name="`)
	if !ok {
		return "", false, refuse(400, "a Content-Disposition not in the form-data; name=\"…\" layout")
	}
	i := strings.IndexByte(rest, '"')
	if i < 0 {
		return "", false, refuse(400, "a bad Content-Disposition")
	}
	name, rest = rest[:i], rest[i+1:]
	if rest != "" {
		fn, ok := strings.CutPrefix(rest, `; filename="`)
		if !ok || !strings.HasSuffix(fn, `"`) || strings.Count(fn, `"`) != 1 {
			return "", false, refuse(400, "a bad Content-Disposition")
		}
		file = true
		if strings.ContainsAny(fn, "\\\x00") {
			return "", false, refuse(400, "a bad Content-Disposition")
		}
	}
	for k := 0; k < len(name); k++ {
		if c := name[k]; c < 0x20 || c == 0x7f || c == '\\' || c == ';' || c == '\'' {
			return "", false, refuse(400, "a bad multipart field name")
		}
	}
	return name, file, nil
}

// parseJSON reads the members of a JSON object body. A watched member
// must be a string and appear once; a body that is not one valid JSON
// object is refused.
func parseJSON(spec *formSpec, body []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, refuse(400, "a JSON login body that is not an object")
	}
	var out []field
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, refuse(400, "a bad JSON login body")
		}
		key, _ := tok.(string)
		if len(out) == maxInputVars {
			return nil, refuse(400, "more than %d JSON members", maxInputVars)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, refuse(400, "a bad JSON login body")
		}
		if !spec.relevant(key) {
			out = append(out, field{name: key})
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, refuse(400, "the JSON login field %q is not a string", key)
		}
		out = append(out, field{name: key, value: s})
	}
	if _, err := dec.Token(); err != nil {
		return nil, refuse(400, "a bad JSON login body")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, refuse(400, "data after the JSON login body")
	}
	return out, nil
}
