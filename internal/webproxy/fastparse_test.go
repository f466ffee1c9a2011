package webproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"net/netip"
	"net/textproto"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

// netHTTPRead reads a request as net/http's server does (http.ReadRequest
// plus the server's own checks); n is how many bytes it consumed.
func netHTTPRead(b []byte) (req *http.Request, n int, ok bool) {
	br := bufio.NewReaderSize(bytes.NewReader(b), 64<<10)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, 0, false
	}
	if req.ProtoMajor != 1 {
		return nil, 0, false
	}
	// http.ReadRequest drops the Host fields; the server's checks see them.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	tp.ReadLine()
	mh, _ := tp.ReadMIMEHeader()
	hosts, haveHost := mh["Host"]
	if req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) {
		return nil, 0, false
	}
	if len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]) {
		return nil, 0, false
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, 0, false
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, 0, false
			}
		}
	}
	delete(req.Header, "Host")
	return req, len(b) - br.Buffered(), true
}

// checkFastHead fails t when the fast reader accepts b but reads it
// otherwise than net/http's server.
func checkFastHead(t *testing.T, b []byte) (accepted bool) {
	t.Helper()
	n := headEnd(b)
	if n < 0 {
		return false
	}
	h, ok := parseFastHead(b[:n])
	if !ok {
		return false
	}
	fr, ok := h.request(context.Background(), "192.0.2.1:1", nil)
	if !ok {
		return false
	}
	nr, nn, ok := netHTTPRead(b)
	if !ok {
		t.Fatalf("fast reader accepted what net/http refuses: %q", b[:n])
	}
	if nn != n {
		t.Fatalf("fast reader took %d bytes, net/http %d: %q", n, nn, b)
	}
	if nr.ContentLength != 0 || len(nr.TransferEncoding) != 0 || (nr.Body != http.NoBody && nr.Body != nil) {
		t.Fatalf("net/http reads a body the fast reader does not: %q", b[:n])
	}
	if fr.Method != nr.Method || fr.RequestURI != nr.RequestURI || fr.URL.String() != nr.URL.String() ||
		fr.URL.EscapedPath() != nr.URL.EscapedPath() || fr.URL.RawQuery != nr.URL.RawQuery ||
		fr.Host != nr.Host || fr.Close != nr.Close || fr.Proto != nr.Proto {
		t.Fatalf("request line or Host read differently: fast %q %q %q close=%v, net/http %q %q %q close=%v (%q)",
			fr.Method, fr.URL, fr.Host, fr.Close, nr.Method, nr.URL, nr.Host, nr.Close, b[:n])
	}
	if !reflect.DeepEqual(fr.Header, nr.Header) {
		t.Fatalf("headers read differently:\nfast     %q\nnet/http %q\n(%q)", fr.Header, nr.Header, b[:n])
	}
	return true
}

// TestFastHead: the plain heads are taken and read as net/http reads
// them; everything else is left to net/http.
func TestFastHead(t *testing.T) {
	taken := []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /a/b?c=d&e HTTP/1.1\r\nHost: mail.example.com:8080\r\n\r\n",
		"GET /x HTTP/1.1\r\nhost: x\r\nuser-agent: curl/8\r\naccept: */*\r\nX-Some-thing:  v  \r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nPragma: no-cache\r\nCache-Control: max-age=0\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nEmpty:\r\nTab:\tv\t\r\n\r\n",
		"GET /%61dmin//../x;y HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET //double HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 5.6.7.8\r\n\r\nGET / HTTP/1.1\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nX: \x80\xff\r\n\r\n",
	}
	for _, s := range taken {
		if !checkFastHead(t, []byte(s)) {
			t.Errorf("not taken: %q", s)
		}
	}
	left := []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",                                 // no Host
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",           // two
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",                    // bad Host
		"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",              // absolute form
		"GET * HTTP/1.1\r\nHost: x\r\n\r\n",                      // asterisk
		"GET / HTTP/1.1\nHost: x\r\n\r\n",                        // bare LF
		"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",                // bare LF in a field
		"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",                // bare CR
		"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",           // obs-fold
		"GET / HTTP/1.1\r\nHost : x\r\n\r\n",                     // space before the colon
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", // any length
		"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nTrailer: X\r\n\r\n",
		"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /é HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
		"get / HTTP/1.1\r\nHost: x\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX\x01: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n",         // not complete
		"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", // leading CRLF
	}
	for _, s := range left {
		if checkFastHead(t, []byte(s)) {
			t.Errorf("taken, should be left to net/http: %q", s)
		}
	}
	// The canonical names: as textproto makes them, known or not.
	for in, want := range map[string]string{"x-a-b": "X-A-B", "CONTENT-type": "Content-Type",
		"x_y": "X_y", "host": "Host", "accept-ENCODING": "Accept-Encoding", "a1-b2": "A1-B2",
		strings.Repeat("ab", 40): http.CanonicalHeaderKey(strings.Repeat("ab", 40))} {
		if got, _ := canonicalName(in); got != want {
			t.Errorf("canonicalName(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzFastHead: whatever the bytes, a head the fast reader takes is read
// by net/http's server the same way — method, target, Host, every header,
// no body, where the next request starts.
func FuzzFastHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"HEAD /a?b HTTP/1.1\r\nHost: x:1\r\nConnection: close\r\nPragma: no-cache\r\n\r\n",
		"GET /x HTTP/1.1\r\nhost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /y HTTP/1.1\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFastHead(t, b)
	})
}

// checkFastRequestForm fails t when the fast server would write the
// backend request for head otherwise than the direct path's
// directRequest and Request.Write.
func checkFastRequestForm(t *testing.T, head []byte, addr netip.Addr, overTLS bool) {
	t.Helper()
	n := headEnd(head)
	if n < 0 {
		return
	}
	h, ok := parseFastHead(head[:n])
	if !ok {
		return
	}
	var st *tls.ConnectionState
	if overTLS {
		st = &tls.ConnectionState{}
	}
	in, ok := h.request(context.Background(), "192.0.2.1:1", st)
	if !ok || !fastWritable(in) {
		return
	}
	cc := &clientConn{addr: addr}
	in = in.WithContext(context.WithValue(context.Background(), connKey{}, cc))
	p := &Proxy{scheme: "http"}
	var want bytes.Buffer
	out, err := p.directRequest(in)
	if err != nil {
		t.Fatalf("directRequest refused what the fast reader took: %v (%q)", err, head[:n])
	}
	if err := out.Write(&want); err != nil {
		t.Fatalf("Request.Write refused what the fast reader took: %v (%q)", err, head[:n])
	}
	var got bytes.Buffer
	bw := bufio.NewWriter(&got)
	writeFastRequest(bw, in, nil)
	bw.Flush()
	if got.String() != want.String() {
		t.Fatalf("backend request differs for %q:\nfast   %q\ndirect %q", head[:n], got.String(), want.String())
	}
}

// TestFastRequestForm: the fast server writes the backend request byte
// for byte as the direct path does.
func TestFastRequestForm(t *testing.T) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a?b=1;c=%zz HTTP/1.1\r\nHost: mail.example.com:8080\r\nUser-Agent:  ua \r\nAccept: */*\r\n\r\n",
		"HEAD /%7b{}\"|^ HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Drop, user-agent\r\nX-Drop: 1\r\nUser-Agent: u\r\nKeep-Alive: 5\r\nTE: gzip, trailers\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nx_real_ip: 6\r\nForwarded: for=6\r\nCookie: a\r\nCookie: b\r\nProxy-Authorization: secret\r\n\r\n",
		"GET /x HTTP/1.1\r\nHost: x\r\nConnection: te\r\nTe: trailers\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n",
		"GET /x? HTTP/1.1\r\nHost: [::1]:80\r\nConnection: X-Forwarded-Proto\r\n\r\n",
	} {
		for _, a := range []string{"203.0.113.9", "2001:db8::1"} {
			checkFastRequestForm(t, []byte(s), netip.MustParseAddr(a), a[0] == '2')
		}
	}
}

// FuzzFastRequestForm: whatever head the fast reader takes, the backend
// gets the request the direct path would send.
func FuzzFastRequestForm(f *testing.F) {
	f.Add([]byte("GET /a?b;c HTTP/1.1\r\nHost: x\r\nConnection: x-a, te\r\nX-A: 1\r\nTe: trailers\r\n\r\n"), true)
	f.Add([]byte("HEAD / HTTP/1.1\r\nHost: x\r\nUser-Agent: \r\nX-Forwarded-Host: y\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		addr := netip.MustParseAddr("198.51.100.7")
		if v6 {
			addr = netip.MustParseAddr("2001:db8::7")
		}
		checkFastRequestForm(t, b, addr, v6)
	})
}

// hasToken matches net/http's own (unexported) hasToken, which decides
// whether its server closes a connection after the answer.
func TestHasToken(t *testing.T) {
	for v, want := range map[string]bool{
		"close": true, "Close 0": true, "keep-alive, CLOSE": true, "\tclose\t": true, "close,keep-alive": true,
		"closed": false, "x-close": false, "keep-alive": false, "": false, "clos": false, "0close": false,
	} {
		if got := hasToken(v, "close"); got != want {
			t.Errorf("hasToken(%q, close) = %v, want %v", v, got, want)
		}
	}
}
