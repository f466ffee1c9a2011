package webproxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"

	"github.com/postern/postern/internal/ascii"
)

// readFastResponse reads the head of a backend's answer to a GET when the
// whole head is already buffered and has the plain shape static pages and
// most dynamic ones have: "HTTP/1.1 NNN reason", header lines of
// letters, digits and "-" with visible-ASCII values, one Content-Length,
// no Transfer-Encoding, Trailer or Pragma, and at most a Connection:
// keep-alive. The answer it returns is field for field the one
// http.ReadResponse returns for the same bytes (FuzzFastResponse holds it
// to that); it consumes the head only when it returns ok. Anything else —
// an unfinished head, another framing, an unusual byte — is left to
// http.ReadResponse, unread.
//
// What it saves is net/http's per-line string and slice allocations and
// its header key canonicalization: one string for the head, one map, one
// backing array for the values.
func readFastResponse(br *bufio.Reader, req *http.Request) (*http.Response, bool) {
	var scratch [16]fastField
	resp, fields, ok := parseFastResponse(br, req, scratch[:0], nil)
	if !ok {
		return nil, false
	}
	resp.Header = fieldsHeader(fields)
	return resp, true
}

// fastField is one header line of an answer parseFastResponse read: its
// canonical name and its value, trimmed.
type fastField struct{ key, value string }

// fastAnswer is an answer parseFastResponse reads, with its body reader.
type fastAnswer struct {
	resp http.Response
	body fastBody
}

// parseFastResponse is readFastResponse without the header map: the
// answer's header lines are appended to fields in the order received, and
// the answer it returns has no Header (fieldsHeader makes it). into, when
// not nil, is where the answer is made (nothing is allocated for it).
func parseFastResponse(br *bufio.Reader, req *http.Request, fields []fastField, into *fastAnswer) (*http.Response, []fastField, bool) {
	if req.Method != http.MethodGet {
		return nil, fields, false
	}
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		return nil, fields, false
	}
	head := buf[:end+2] // every line with its CRLF
	// The status line: "HTTP/1.1 " three digits, then nothing or " reason".
	nl := bytes.IndexByte(head, '\n')
	if nl < 1 || head[nl-1] != '\r' {
		return nil, fields, false
	}
	line := head[:nl-1]
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " {
		return nil, fields, false
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil, fields, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code == 204 || code == 304 || len(line) > 12 && line[12] != ' ' || !visible(line[12:]) {
		return nil, fields, false
	}
	// The header lines: check each before anything is made.
	for rest := head[nl+1:]; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 1 || rest[i-1] != '\r' || !fastHeaderLine(rest[:i-1]) {
			return nil, fields, false
		}
		rest = rest[i+1:]
	}
	s := string(head)
	cl := int64(-1)
	conn := false
	start := len(fields)
	for rest := s[nl+1:]; len(rest) > 0; {
		i := strings.IndexByte(rest, '\n')
		l := rest[:i-1]
		rest = rest[i+1:]
		colon := strings.IndexByte(l, ':')
		key, _ := canonicalName(l[:colon])
		v := trimOWS(l[colon+1:])
		switch key {
		case "Content-Length":
			if cl >= 0 {
				return nil, fields[:start], false // several: net/http's rules for them are its own
			}
			if cl = parseLength(v); cl < 0 {
				return nil, fields[:start], false
			}
		case "Connection":
			if conn || !ascii.EqualFold(v, "keep-alive") {
				return nil, fields[:start], false
			}
			conn = true
		case "Transfer-Encoding", "Trailer", "Pragma":
			return nil, fields[:start], false
		}
		fields = append(fields, fastField{key, v})
	}
	if cl < 0 {
		return nil, fields[:start], false // unbounded or chunked: net/http's
	}
	if into == nil {
		into = new(fastAnswer)
	}
	into.resp = http.Response{
		Status:     s[9 : nl-1],
		StatusCode: code,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		ContentLength: cl,
		Request:       req,
		Body:          http.NoBody,
	}
	br.Discard(len(head) + 2)
	if cl > 0 {
		into.body = fastBody{r: br, n: cl}
		into.resp.Body = &into.body
	}
	return &into.resp, fields, true
}

// fieldsHeader returns the header map of fields, as net/http's reader
// makes it: one entry a name, its values in the order received.
func fieldsHeader(fields []fastField) http.Header {
	h := make(http.Header, len(fields))
	vals := make([]string, len(fields)) // one backing array for single values
	for _, f := range fields {
		if vv, ok := h[f.key]; ok {
			h[f.key] = append(vv, f.value)
			continue
		}
		vals[0] = f.value
		h[f.key] = vals[0:1:1]
		vals = vals[1:]
	}
	return h
}

// fastHeaderLine reports whether l (without its CRLF) is a header line
// readFastResponse reads: a name of letters, digits and "-", a colon, and
// a value of visible ASCII, spaces and tabs.
func fastHeaderLine(l []byte) bool {
	colon := bytes.IndexByte(l, ':')
	if colon <= 0 {
		return false
	}
	for _, c := range l[:colon] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return visible(l[colon+1:])
}

// visible reports whether b is visible ASCII, spaces and tabs only.
func visible(b []byte) bool {
	for _, c := range b {
		if (c < ' ' || c > '~') && c != '\t' {
			return false
		}
	}
	return true
}

// parseLength reads a Content-Length of 1 to 18 digits; -1: anything else.
func parseLength(v string) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// fastBody is the body of a fast-read answer: n bytes of r. As net/http's
// body reader, it returns io.EOF with its last bytes, and
// io.ErrUnexpectedEOF when the connection ends before them.
type fastBody struct {
	r *bufio.Reader
	n int64 // bytes left
}

func (b *fastBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	k, err := b.r.Read(p)
	b.n -= int64(k)
	switch {
	case b.n == 0:
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	return k, err
}

// Close does nothing: the direct path closes the connection of an answer
// not read to its end rather than reading the rest.
func (b *fastBody) Close() error { return nil }
