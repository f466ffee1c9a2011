package webproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/url"

	"github.com/postern/postern/internal/ascii"
	"golang.org/x/net/http/httpguts"
)

// The fast server's request reader. It reads only the plainest request
// head — what browsers send for pages, scripts, images and API GETs — and
// only when its reading is certain to be net/http's: a GET or HEAD in
// origin form, HTTP/1.1, every line ended by CRLF, header names that are
// tokens followed at once by a colon, values of visible characters,
// spaces and tabs, exactly one valid Host, and none of the headers that
// change framing or the connection (Content-Length, Transfer-Encoding,
// Upgrade, Expect, Trailer, HTTP2-Settings). Anything else is not an error
// here: the connection is handed to net/http's server, which reads the same
// bytes itself and answers as it always has (a 400, a 431, a body, an
// upgrade). So this reader can refuse freely but must never accept what
// net/http would read differently; FuzzFastHead holds it to that.

// fastHead is one request head the fast reader accepted.
type fastHead struct {
	method string // GET or HEAD
	target string // the request target, origin form
	host   string
	header http.Header // without Host, as net/http's server leaves it
	// close is the request's Close as net/http's server hands it to a
	// handler: "close" among the Connection lines' comma-separated
	// tokens. wantsClose is whether that server closes the connection
	// after the answer: close, or the looser match of its wantsClose on
	// the first Connection line, where "close" bounded by spaces, tabs or
	// commas counts ("Close 0": Close false, yet the connection ends).
	close, wantsClose bool
}

// headEnd returns the length of the request head at the start of b (up
// to and including its empty line), or -1 when b holds no complete head.
func headEnd(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return -1
	}
	return i + 4
}

var crlfcrlf = []byte("\r\n\r\n")

// parseFastHead reads a complete head (from headEnd). ok is false when the
// head is not one the fast path reads with certainty.
func parseFastHead(head []byte) (h fastHead, ok bool) {
	// One string for the whole head: the method, target, names and values
	// are substrings of it.
	s := string(head[:len(head)-2])
	line, rest, _ := cutCRLF(s)
	switch {
	case len(line) > 4 && line[:4] == "GET ":
		h.method, line = "GET", line[4:]
	case len(line) > 5 && line[:5] == "HEAD ":
		h.method, line = "HEAD", line[5:]
	default:
		return h, false
	}
	const proto = " HTTP/1.1"
	if len(line) <= len(proto) || line[len(line)-len(proto):] != proto {
		return h, false
	}
	h.target = line[:len(line)-len(proto)]
	if h.target[0] != '/' {
		return h, false
	}
	for i := 0; i < len(h.target); i++ {
		if c := h.target[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return h, false
		}
	}
	n := 0
	for r := rest; r != ""; {
		_, r, _ = cutCRLF(r)
		n++
	}
	h.header = make(http.Header, n)
	vals := make([]string, n) // one backing array for single values
	hosts := 0
	conns := false // a Connection line seen
	for rest != "" {
		line, rest, _ = cutCRLF(rest)
		colon := -1
		for i := 0; i < len(line); i++ {
			c := line[i]
			if c == ':' {
				colon = i
				break
			}
			if !httpguts.IsTokenRune(rune(c)) {
				return h, false
			}
		}
		if colon <= 0 {
			return h, false
		}
		name, v := line[:colon], line[colon+1:]
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
				return h, false
			}
		}
		v = trimOWS(v)
		key, special := canonicalName(name)
		switch special {
		case nameHost:
			hosts++
			h.host = v
			continue
		case nameRefused:
			return h, false
		case nameConnection:
			// As net/http's server: the comma-separated list of every
			// Connection line (readRequest), and for the first line the
			// looser match of Request.wantsClose.
			if httpguts.HeaderValuesContainsToken([]string{v}, "close") {
				h.close, h.wantsClose = true, true
			}
			if !conns && hasToken(v, "close") {
				h.wantsClose = true
			}
			conns = true
		}
		if vv, ok := h.header[key]; ok {
			h.header[key] = append(vv, v)
			continue
		}
		vals[0] = v
		h.header[key] = vals[0:1:1]
		vals = vals[1:]
	}
	if hosts != 1 || !httpguts.ValidHostHeader(h.host) {
		return h, false
	}
	// net/http's readRequest: "Pragma: no-cache" alone means
	// "Cache-Control: no-cache" too (HTTP/1.0 caches).
	if pv := h.header["Pragma"]; len(pv) > 0 && pv[0] == "no-cache" {
		if _, ok := h.header["Cache-Control"]; !ok {
			h.header["Cache-Control"] = []string{"no-cache"}
		}
	}
	return h, true
}

// request builds the *http.Request net/http's server would have built
// from h, with the context ctx.
func (h *fastHead) request(ctx context.Context, remote string, st *tls.ConnectionState) (*http.Request, bool) {
	u, err := url.ParseRequestURI(h.target)
	if err != nil {
		return nil, false
	}
	r := http.Request{ // not escaping: WithContext's copy is the one made
		Method: h.method, URL: u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h.header, Body: http.NoBody, Host: h.host, Close: h.close,
		RemoteAddr: remote, RequestURI: h.target, TLS: st,
	}
	return r.WithContext(ctx), true
}

// cutCRLF cuts s at its first CRLF; a line ending otherwise (a bare CR or
// LF) is left in the line, where the callers refuse it.
func cutCRLF(s string) (line, rest string, ok bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '\r' && s[i+1] == '\n' {
			return s[:i], s[i+2:], true
		}
	}
	return s, "", false
}

// trimOWS trims spaces and tabs around a header value.
func trimOWS(v string) string {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// What a header name means to the fast reader.
const (
	nameOther = iota
	nameHost
	nameConnection
	nameRefused // changes framing or the connection: net/http reads it
)

// nameKind says what the canonical header name k means to the fast reader.
func nameKind(k string) int {
	switch k {
	case "Host":
		return nameHost
	case "Connection":
		return nameConnection
	case "Content-Length", "Transfer-Encoding", "Upgrade", "Expect", "Trailer", "Http2-Settings":
		return nameRefused
	}
	return nameOther
}

// knownCanonical maps the canonical names of common request and answer
// headers to themselves: a name received in another case is made canonical
// without an allocation when it is one of these.
var knownCanonical = map[string]string{}

func init() {
	for _, n := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Authorization",
		"Cache-Control", "Cookie", "Dnt", "Forwarded", "From", "If-Match", "If-Modified-Since",
		"If-None-Match", "If-Range", "If-Unmodified-Since", "Origin", "Pragma", "Priority",
		"Range", "Referer", "Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform",
		"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-User",
		"Upgrade-Insecure-Requests", "User-Agent", "Via", "X-Forwarded-For",
		"X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "X-Requested-With",
		"Keep-Alive", "Proxy-Connection", "Te", "Content-Type", "Content-Encoding",
		"Host", "Connection", "Content-Length", "Transfer-Encoding", "Upgrade", "Expect",
		"Trailer", "Http2-Settings",
		// Answers.
		"Accept-Ranges", "Age", "Content-Disposition", "Content-Language", "Content-Security-Policy",
		"Date", "Etag", "Expires", "Last-Modified", "Location", "Referrer-Policy", "Server",
		"Set-Cookie", "Strict-Transport-Security", "Vary", "X-Content-Type-Options",
		"X-Frame-Options", "X-Xss-Protection", "Access-Control-Allow-Origin",
	} {
		knownCanonical[n] = n
	}
}

// isCanonical reports whether the token name is in canonical form
// already: upper case at the start and after each "-", lower case
// elsewhere.
func isCanonical(name string) bool {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return true
}

// canonicalName returns the canonical form of a token header name (as
// textproto.CanonicalMIMEHeaderKey) and what it means to the fast reader.
// A name received in canonical form is returned as it is.
func canonicalName(name string) (string, int) {
	if isCanonical(name) {
		return name, nameKind(name)
	}
	var buf [64]byte
	if len(name) > len(buf) {
		k := http.CanonicalHeaderKey(name)
		return k, nameKind(k)
	}
	b := buf[:len(name)]
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	if k, ok := knownCanonical[string(b)]; ok { // no allocation: a map index
		return k, nameKind(k)
	}
	k := string(b)
	return k, nameKind(k)
}

// hasToken reports whether token (lower case ASCII) appears in v, ASCII
// case-insensitively, bounded by the start or end of v or by a space, a
// tab or a comma on each side: net/http's hasToken, which its server uses
// to decide whether a request asked to close the connection.
func hasToken(v, token string) bool {
	boundary := func(b byte) bool { return b == ' ' || b == ',' || b == '\t' }
	for sp := 0; sp+len(token) <= len(v); sp++ {
		if sp > 0 && !boundary(v[sp-1]) {
			continue
		}
		if end := sp + len(token); end != len(v) && !boundary(v[end]) {
			continue
		}
		if ascii.EqualFold(v[sp:sp+len(token)], token) {
			return true
		}
	}
	return false
}
