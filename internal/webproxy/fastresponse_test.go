package webproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fastResponseCases are answers readFastResponse reads (true) or leaves to
// net/http (false).
var fastResponseCases = []struct {
	head string
	fast bool
}{
	{"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 04 Dec 2026 02:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 5\r\nLast-Modified: Thu, 03 Dec 2026 10:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6750-5\"\r\nAccept-Ranges: bytes\r\n\r\nhello", true},
	{"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-a: 1\r\nX-A:  2 \t\r\nset-cookie: a=b; Path=/\r\nSet-Cookie: c=d\r\n\r\n", true},
	{"HTTP/1.1 200\r\nContent-Length: 000\r\nCONNECTION: Keep-Alive\r\nX-Empty:\r\n\r\n", true},
	{"HTTP/1.1 999 odd \r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n", true},
	{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true}, // ends early: ErrUnexpectedEOF on both
	{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nPragma: no-cache\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTrailer: X\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nX_A: a\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\n\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nclose-delimited", false},
	{"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", false},
	{"HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n", false},
	{"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n", false},
	{"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1  200 OK\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 2000 OK\r\nContent-Length: 3\r\n\r\nabc", false},
	{"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n", false}, // the head not all here
	{"HTTP/1.1 200 OK\n\r\n\r\n", false},
	{"\r\n\r\n", false},
}

func TestFastResponse(t *testing.T) {
	for _, c := range fastResponseCases {
		if ok := compareFastResponse(t, []byte(c.head), http.MethodGet); ok != c.fast {
			t.Errorf("%q: read fast %v, want %v", c.head, ok, c.fast)
		}
	}
	for _, c := range fastResponseCases[:3] {
		if compareFastResponse(t, []byte(c.head), http.MethodHead) {
			t.Errorf("%q: the answer to a HEAD read fast", c.head)
		}
	}
}

// compareFastResponse reads b with readFastResponse and with
// http.ReadResponse and fails t unless the answers are the same field for
// field, their bodies the same bytes with the same error, and the bytes
// left after them the same; when readFastResponse declines it must have
// read nothing. It reports whether readFastResponse read it.
func compareFastResponse(t *testing.T, b []byte, method string) bool {
	t.Helper()
	req := &http.Request{Method: method}
	fr := bufio.NewReaderSize(bytes.NewReader(b), 16<<10)
	fr.Peek(1) // fill the buffer, as the direct path's first peek does
	fast, ok := readFastResponse(fr, req)
	if !ok {
		if rest, _ := io.ReadAll(fr); !bytes.Equal(rest, b) {
			t.Fatalf("%q: declined, but read %d bytes", b, len(b)-len(rest))
		}
		return false
	}
	slow, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), req)
	if err != nil {
		t.Fatalf("%q: read fast, but net/http refuses it: %v", b, err)
	}
	sr := slow.Body
	slowBody, slowErr := io.ReadAll(sr)
	fastBody, fastErr := io.ReadAll(fast.Body)
	if !bytes.Equal(fastBody, slowBody) || (fastErr == nil) != (slowErr == nil) ||
		fastErr != nil && !errors.Is(fastErr, io.ErrUnexpectedEOF) {
		t.Fatalf("%q: body %q (%v), net/http's %q (%v)", b, fastBody, fastErr, slowBody, slowErr)
	}
	fast.Body, slow.Body = nil, nil
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%q:\nfast     %+v\nnet/http %+v", b, fast, slow)
	}
	// What follows the body (the next answer, or bytes nobody asked for)
	// is left alike: the direct path reuses a connection only when
	// nothing follows.
	fastRest, _ := io.ReadAll(fr)
	if fastErr == nil {
		consumed := len(b) - len(fastRest)
		headLen := bytes.Index(b, crlfcrlf) + 4
		if consumed != headLen+int(slow.ContentLength) {
			t.Fatalf("%q: read %d bytes, want the head (%d) and the body (%d)", b, consumed, headLen, slow.ContentLength)
		}
	}
	return true
}

// FuzzFastResponse: whatever a backend sends, readFastResponse either
// leaves it unread or reads exactly what http.ReadResponse reads.
func FuzzFastResponse(f *testing.F) {
	for _, c := range fastResponseCases {
		f.Add([]byte(c.head), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		m := http.MethodGet
		if head {
			m = http.MethodHead
		}
		compareFastResponse(t, b, m)
	})
}

func BenchmarkReadResponse(b *testing.B) {
	msg := []byte(fastResponseCases[0].head)
	req := &http.Request{Method: http.MethodGet}
	rd := bytes.NewReader(msg)
	br := bufio.NewReaderSize(rd, 16<<10)
	for _, name := range []string{"fast", "net-http"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(msg)
				br.Reset(rd)
				br.Peek(1)
				var resp *http.Response
				ok := false
				if name == "fast" {
					resp, ok = readFastResponse(br, req)
				} else {
					var err error
					resp, err = http.ReadResponse(br, req)
					ok = err == nil
				}
				if !ok {
					b.Fatal("not read")
				}
				io.Copy(io.Discard, resp.Body)
			}
		})
	}
}

// fieldsCases are answers whose header lines the fast server's writer
// takes without a map, beyond fastResponseCases: hop-by-hop names,
// repeated names out of order, no type (sniffed), an empty encoding.
var fieldsCases = []string{
	"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nTe: trailers\r\nContent-Length: 5\r\n\r\n<html",
	"HTTP/1.1 200 OK\r\nSet-Cookie: b=2\r\nX-Z: z\r\nset-cookie: a=1\r\nCONTENT-LENGTH: 4\r\nA: 1\r\nSet-Cookie: c=3\r\n\r\n%PDF",
	"HTTP/1.1 201 Created\r\nContent-Encoding:\r\nContent-Length: 3\r\nContent-Encoding: gzip\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 200 OK\r\nContent-Type:\r\nContent-Length: 3\r\n\r\nabc",
	"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 599 x\r\nContent-Length: 1\r\n\r\nx",
}

// writeAnswer writes the answer in b to a GET as the fast server does,
// with its header lines from setFields (fields true) or from the map
// serveDirect makes otherwise, and returns the bytes without Date lines
// postern adds; ok is false when parseFastResponse leaves b to net/http.
func writeAnswer(t *testing.T, b []byte, fields, closeAfter bool) (string, bool) {
	t.Helper()
	req := &http.Request{Method: http.MethodGet, Close: closeAfter}
	br := bufio.NewReaderSize(bytes.NewReader(b), 16<<10)
	br.Peek(1)
	resp, ff, ok := parseFastResponse(br, req, nil, nil)
	if !ok {
		return "", false
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false // cut short: the direct path ends the connection
	}
	p := &Proxy{fast: &fastServer{}}
	var out bytes.Buffer
	fc := &fastConn{p: p, rw: deadlineConn{}, bw: bufio.NewWriter(&out)}
	fc.w = fastWriter{fc: fc, h: make(http.Header)}
	w := &fc.w
	w.reset(req, req.Close)
	if fields {
		w.setFields(ff)
	} else {
		h := fieldsHeader(ff)
		removeHopByHop(h)
		copyHeader(w.Header(), h)
	}
	w.WriteHeader(resp.StatusCode)
	if len(body) > 0 {
		if _, err := w.Write(body); err != nil {
			t.Fatalf("%q: %v", b, err)
		}
	}
	w.finish()
	s := out.String()
	if d := "Date: " + p.date() + "\r\n"; !bytes.Contains(b, []byte(d)) {
		s = strings.Replace(s, d, "", 1)
	}
	return s, true
}

// deadlineConn takes the deadlines finish sets; nothing is read or written
// through it.
type deadlineConn struct{ net.Conn }

func (deadlineConn) SetWriteDeadline(time.Time) error { return nil }
func (deadlineConn) SetReadDeadline(time.Time) error  { return nil }

// checkFields fails t unless the fast server's writer writes the answer
// in b alike from header lines and from the map; it reports whether b was
// one it writes from header lines.
func checkFields(t *testing.T, b []byte) bool {
	t.Helper()
	for _, closeAfter := range []bool{false, true} {
		got, ok := writeAnswer(t, b, true, closeAfter)
		if !ok {
			return false
		}
		want, _ := writeAnswer(t, b, false, closeAfter)
		if got != want {
			t.Fatalf("%q (close %v):\nfrom lines %q\nfrom a map %q", b, closeAfter, got, want)
		}
	}
	return true
}

func TestFastFields(t *testing.T) {
	taken := 0
	for _, c := range fastResponseCases {
		if checkFields(t, []byte(c.head)) {
			taken++
		}
	}
	for _, c := range fieldsCases {
		if !checkFields(t, []byte(c)) {
			t.Errorf("%q: not written from header lines", c)
		}
	}
	if taken < 4 {
		t.Errorf("only %d of the plain answers written from header lines", taken)
	}
	// nginx's answer: sorted, Connection gone, its Date kept, none added.
	got, _ := writeAnswer(t, []byte(fastResponseCases[0].head), true, false)
	want := "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\nContent-Length: 5\r\nContent-Type: text/html\r\n" +
		"Date: Fri, 04 Dec 2026 02:00:00 GMT\r\nEtag: \"6750-5\"\r\nLast-Modified: Thu, 03 Dec 2026 10:00:00 GMT\r\n" +
		"Server: nginx/1.22.1\r\n\r\nhello"
	if got != want {
		t.Errorf("nginx's answer written as\n%q\nwant\n%q", got, want)
	}
}

// FuzzFastFields: whatever a backend answers, the fast server's writer
// writes it alike from header lines and from a header map.
func FuzzFastFields(f *testing.F) {
	for _, c := range fastResponseCases {
		f.Add([]byte(c.head))
	}
	for _, c := range fieldsCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFields(t, b)
	})
}
