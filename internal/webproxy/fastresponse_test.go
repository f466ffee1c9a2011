package webproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"reflect"
	"testing"
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
