package webproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/postern/postern/internal/sockio"
)

// The direct path forwards the common request — one without a body, an
// upgrade or a login — to a plain-HTTP backend on the handler's own
// goroutine: postern writes the request in canonical form (net/http's
// Request.Write, as http.Transport does), reads the answer with net/http's
// own parser (http.ReadResponse, as http.Transport does; the plainest
// answers with readFastResponse, which reads them exactly as it does) and
// copies it to the client. What it saves against httputil.ReverseProxy over
// http.Transport is the Transport's two goroutines per backend connection
// and the channel hand-offs between them and the handler, and the
// request's deep clone. Everything else (bodies, WebSockets, login forms,
// HTTPS backends) keeps the ReverseProxy path.
//
// A backend connection is used again only after its answer was read to
// its end with nothing after it, and only when a peek at the socket finds
// nothing waiting (an answer the backend sent unasked is never read as the
// next request's) and the backend has not closed it. On Linux the peek is
// made in the step that sends the next request (sockio.Conn.WriteRead),
// which then waits for the answer before reading: nothing that arrives
// between the peek and the wait goes unnoticed, and the read that would
// find nothing is saved.

// maxDirectIdle is how many idle backend connections the direct path keeps.
const maxDirectIdle = 256

// directIdleTimeout is how long an idle backend connection is kept.
const directIdleTimeout = 90 * time.Second

// maxResponseHeaderBytes limits a backend answer's status line and headers
// (1xx answers each count anew).
const maxResponseHeaderBytes = 1 << 20

// aLongTimeAgo is a deadline in the past: it wakes a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

var (
	errSwitchWithoutUpgrade = errors.New("backend switched protocols without an upgrade request")
	errResponseHeaderLimit  = errors.New("backend answer's headers exceed the limit")
)

// directClient holds the idle backend connections of the direct path.
type directClient struct {
	be      *backends
	timeout time.Duration // for the answer's headers
	now     func() time.Time

	mu     sync.Mutex
	idle   []*backendConn // most recently used last
	closed bool
}

// backendConn is one backend connection of the direct path.
type backendConn struct {
	c      net.Conn
	raw    syscall.RawConn // the TCP socket, for the idle peek
	lr     limitReader     // beneath br: counts, and limits headers
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	// wake ends a read or write on the connection at once (a request's
	// context ended); made with the connection, as is peekFn, so that
	// neither allocates per request.
	wake   func()
	peekFn func(fd uintptr) bool
	clean  bool // the last idle peek's result
	// fields are the header lines of the answer read last for the fast
	// server's writer (parseFastResponse), and answer that answer; both
	// reused from one exchange to the next (the connection goes back to
	// the pool only when its answer has been written).
	fields []fastField
	answer fastAnswer
}

// limitReader is what a backend connection's buffers read from and write
// to. It counts the bytes read in an exchange and fails a read beyond
// limit; and when the connection has WriteRead, the last write of a
// request (held, its buffer's flush) goes out with the first read of the
// answer, which then waits for the answer without first reading nothing.
type limitReader struct {
	r     net.Conn
	wr    writeReader // r's WriteRead, or nil
	n     int64       // bytes read in this exchange
	limit int64       // bytes left before errResponseHeaderLimit
	hold  bool        // the next write is a request's last: held
	held  []byte      // the held write (the writer's buffer, untouched until the read)
	idle  bool        // the connection was idle: WriteRead peeks at it first
	werr  error       // the held write failed: the request did not all go out
}

// writeReader writes a request and reads the first of its answer
// (sockio.Conn, and countedConn over one).
type writeReader interface {
	WriteRead(w, r []byte, idle bool) (nw, nr int, err error)
}

// writeReaderOf returns c's WriteRead when c, or the connection
// countedConn counts, is a sockio.Conn; nil otherwise.
func writeReaderOf(c net.Conn) writeReader {
	inner := c
	if cc, ok := c.(*countedConn); ok {
		inner = cc.Conn
	}
	if _, ok := inner.(writeReader); !ok {
		return nil
	}
	return c.(writeReader)
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.limit <= 0 {
		return 0, errResponseHeaderLimit
	}
	if int64(len(p)) > l.limit {
		p = p[:l.limit]
	}
	var n int
	var err error
	if w := l.held; w != nil {
		l.held = nil
		var nw int
		idle := l.idle
		l.idle = false
		if nw, n, err = l.wr.WriteRead(w, p, idle); nw < len(w) && err != nil {
			if nw == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				// The first wait's deadline had passed before the write
				// began (a slow connect, a busy machine): nothing went
				// out, and the request goes with the next read, whose
				// deadline the caller has extended.
				l.held, l.idle = w, idle
				return 0, err
			}
			err = fmt.Errorf("writing the request to the backend: %w", err)
			l.werr = err
		}
	} else {
		n, err = l.r.Read(p)
	}
	l.n += int64(n)
	l.limit -= int64(n)
	return n, err
}

func (l *limitReader) Write(p []byte) (int, error) {
	if l.hold && l.wr != nil {
		l.hold, l.held = false, p
		return len(p), nil
	}
	return l.r.Write(p)
}

func (bc *backendConn) close() { bc.c.Close() }

// get returns an idle connection that passes the peek (or, with
// WriteRead, is to be peeked when used), or a new one; reused tells
// which. now is the time of the request.
func (d *directClient) get(ctx context.Context, now time.Time) (bc *backendConn, reused bool, err error) {
	for {
		d.mu.Lock()
		n := len(d.idle)
		if n == 0 {
			d.mu.Unlock()
			break
		}
		bc = d.idle[n-1]
		d.idle[n-1] = nil
		d.idle = d.idle[:n-1]
		d.mu.Unlock()
		if now.Sub(bc.idleAt) < directIdleTimeout {
			if bc.lr.wr != nil {
				// Peeked at in the same step that sends the request
				// (WriteRead), so that nothing arriving between the
				// two is missed.
				bc.lr.idle = true
				return bc, true, nil
			}
			if bc.idleClean() {
				return bc, true, nil
			}
		}
		bc.close()
	}
	c, err := d.be.dial(ctx, false)
	if err != nil {
		return nil, false, err
	}
	bc = &backendConn{c: c, wake: func() { c.SetDeadline(aLongTimeAgo) }}
	tc := c
	if cc, ok := tc.(*countedConn); ok {
		tc = cc.Conn
	}
	sc, ok := tc.(syscall.Conn)
	if !ok {
		c.Close()
		return nil, false, fmt.Errorf("backend connection %T has no socket", tc)
	}
	if bc.raw, err = sc.SyscallConn(); err != nil {
		c.Close()
		return nil, false, fmt.Errorf("backend socket: %w", err)
	}
	bc.lr.r = c
	bc.lr.wr = writeReaderOf(c)
	bc.br = bufio.NewReaderSize(&bc.lr, 16<<10)
	bc.bw = bufio.NewWriterSize(&bc.lr, 4<<10)
	return bc, false, nil
}

// put keeps a connection whose exchange ended cleanly for the next request,
// and closes those idle longer than directIdleTimeout (the oldest are
// first in the pool; get takes the newest, so after a burst the old ones
// would otherwise stay).
func (d *directClient) put(bc *backendConn) {
	now := d.now()
	bc.idleAt = now
	d.mu.Lock()
	if d.closed || len(d.idle) >= maxDirectIdle {
		d.mu.Unlock()
		bc.close()
		return
	}
	d.idle = append(d.idle, bc)
	n := 0
	for n < len(d.idle) && now.Sub(d.idle[n].idleAt) >= directIdleTimeout {
		n++
	}
	var expired []*backendConn
	if n > 0 {
		expired = slices.Clone(d.idle[:n])
		k := copy(d.idle, d.idle[n:])
		clear(d.idle[k:])
		d.idle = d.idle[:k]
	}
	d.mu.Unlock()
	for _, old := range expired {
		old.close()
	}
}

// closeIdle closes the idle connections and keeps none from now on.
func (d *directClient) closeIdle() {
	d.mu.Lock()
	idle := d.idle
	d.idle, d.closed = nil, true
	d.mu.Unlock()
	for _, bc := range idle {
		bc.close()
	}
}

// direct reports whether r can take the direct path.
func (p *Proxy) direct(r *http.Request) bool {
	return p.dc != nil &&
		(r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 &&
		len(r.TransferEncoding) == 0 &&
		len(r.Header["Upgrade"]) == 0 &&
		!httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade")
}

// directRequest builds the backend request as the ReverseProxy path does:
// the client's headers less the hop-by-hop ones and every forwarding
// header, postern's forwarding headers, the client's Host, its target
// with the query cleaned as httputil.ReverseProxy cleans it.
//
// Header names and values are checked as http.Transport checks them: one
// it would refuse is an error here too.
func (p *Proxy) directRequest(in *http.Request) (*http.Request, error) {
	u := *in.URL
	u.Scheme, u.Host = p.scheme, backendHost
	u.RawQuery = cleanQueryParams(u.RawQuery)
	h := make(http.Header, len(in.Header)+6)
	for k, vv := range in.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return nil, fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, fmt.Errorf("net/http: invalid header field value for %q", k)
			}
		}
		h[k] = vv // not modified in place: only keys are replaced or deleted
	}
	removeHopByHop(h)
	if httpguts.HeaderValuesContainsToken(in.Header["Te"], "trailers") {
		h["Te"] = []string{"trailers"}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // none, rather than Go's
	}
	out := &http.Request{Method: in.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Host: in.Host}
	p.forwarding(in, out)
	return out, nil
}

// roundTrip sends out and reads the final answer's headers; informational
// answers go to w as they come. A request sent on a reused connection
// that failed before a byte of an answer came is sent again once on a new
// connection when its method is idempotent (as http.Transport does).
//
// The request's context ending (the client went away) ends a read or
// write on the connection at once; stop, which roundTrip returns with the
// answer, undoes that (false: too late, the connection is spent).
//
// write writes the request (out's, or the fast server's own form of it).
func (d *directClient) roundTrip(ctx context.Context, w http.ResponseWriter, out *http.Request, write func(*bufio.Writer) error) (resp *http.Response, bc *backendConn, stop func() bool, err error) {
	for try := 0; ; try++ {
		var reused bool
		now := d.now()
		bc, reused, err = d.get(ctx, now)
		if err != nil {
			return nil, nil, nil, err
		}
		fc, _ := ctx.Value(watchKey{}).(*fastConn)
		if fc != nil {
			// The fast server's context ends only with its connection,
			// which wakes the backend connection itself (no AfterFunc to
			// register and remove a request).
			stop = fc.watchBackend(bc)
		} else {
			stop = context.AfterFunc(ctx, bc.wake)
		}
		if ctx.Err() != nil {
			stop()
			bc.close()
			return nil, nil, nil, ctx.Err()
		}
		resp, err = d.exchange(bc, now, w, out, write, fc)
		if err == nil {
			return resp, bc, stop, nil
		}
		stop()
		bc.close()
		if ctx.Err() != nil {
			return nil, nil, nil, ctx.Err()
		}
		if errors.Is(err, sockio.ErrPending) {
			// Not idle after all (the backend closed it, or sent bytes
			// nobody asked for): nothing was sent; another connection.
			try--
			continue
		}
		if !reused || bc.lr.n > 0 || try > 0 || !idempotent(out.Method) {
			return nil, nil, nil, err
		}
	}
}

func idempotent(m string) bool {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// exchange writes out on bc and reads the answer's headers. As with
// http.Transport's ResponseHeaderTimeout, the backend has the timeout to
// answer; writing the request is bounded by the request's context.
//
// fc, when not nil, is the fast server's connection of the request: an
// answer slower than slowAnswer has it watch its client for going away.
func (d *directClient) exchange(bc *backendConn, start time.Time, w http.ResponseWriter, out *http.Request, write func(*bufio.Writer) error, fc *fastConn) (*http.Response, error) {
	bc.lr.n = 0
	bc.lr.limit = maxResponseHeaderBytes
	bc.lr.werr = nil
	first := d.timeout
	if fc != nil {
		first = min(first, slowAnswer)
	}
	if err := bc.c.SetReadDeadline(start.Add(first)); err != nil {
		return nil, err
	}
	if err := write(bc.bw); err != nil {
		return nil, fmt.Errorf("writing the request to the backend: %w", err)
	}
	// The flush is held for the first read of the answer, which follows
	// at once (limitReader).
	bc.lr.hold = true
	err := bc.bw.Flush()
	bc.lr.hold = false
	if err != nil {
		return nil, fmt.Errorf("writing the request to the backend: %w", err)
	}
	// extend gives the answer's headers the whole timeout.
	extend := func() error {
		if first == d.timeout {
			return nil
		}
		first = d.timeout
		return bc.c.SetReadDeadline(start.Add(d.timeout))
	}
	if first < d.timeout {
		if _, err := bc.br.Peek(1); err != nil {
			var ne net.Error
			if bc.lr.werr != nil || !errors.As(err, &ne) || !ne.Timeout() {
				return nil, fmt.Errorf("reading the backend's answer: %w", err)
			}
			if err := fc.ctx.Err(); err != nil {
				// The client went away (its close woke the connection,
				// perhaps before the request went out): not extended.
				return nil, err
			}
			// Slow: the deadline first (a cancel from the watcher must
			// come after it), then the watcher.
			if err := extend(); err != nil {
				return nil, err
			}
			fc.watchClient()
		} else if b, _ := bc.br.Peek(bc.br.Buffered()); !bytes.Contains(b, crlfcrlf) {
			if err := extend(); err != nil { // headers still to come
				return nil, err
			}
		}
	}
	// Informational answers are passed on as they come (each with the
	// header limit anew, as http.Transport does under
	// httputil.ReverseProxy); the deadline bounds them all.
	raw := fastWriterOf(w) != nil
	for {
		var resp *http.Response
		var ok bool
		if raw {
			// The fast server's writer takes the header lines as read
			// (serveDirect); an event stream's headers are a map, for
			// streamWriter.
			if resp, bc.fields, ok = parseFastResponse(bc.br, out, bc.fields[:0], &bc.answer); ok && fieldsEventStream(bc.fields) {
				resp.Header = fieldsHeader(bc.fields)
			}
		} else {
			resp, ok = readFastResponse(bc.br, out)
		}
		if !ok {
			var err error
			if resp, err = http.ReadResponse(bc.br, out); err != nil {
				return nil, fmt.Errorf("reading the backend's answer: %w", err)
			}
		}
		code := resp.StatusCode
		if code == http.StatusSwitchingProtocols {
			return nil, errSwitchWithoutUpgrade
		}
		if code >= 100 && code <= 199 {
			// As httputil.ReverseProxy: the client gets it too.
			h := w.Header()
			copyHeader(h, resp.Header)
			w.WriteHeader(code)
			clear(h)
			bc.lr.limit = maxResponseHeaderBytes
			if err := extend(); err != nil {
				return nil, err
			}
			continue
		}
		// The body is read with no deadline (a long poll, a download);
		// the request's context ends it when the client goes away.
		bc.lr.limit = math.MaxInt64
		if err := bc.c.SetReadDeadline(time.Time{}); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// serveDirect forwards r on the direct path; w is the handler's writer.
func (p *Proxy) serveDirect(w http.ResponseWriter, r *http.Request) {
	var out *http.Request
	var write func(*bufio.Writer) error
	if fc, _ := r.Context().Value(watchKey{}).(*fastConn); fc != nil && fastWritable(r) {
		// The fast server's request: written from it directly (out is
		// what the answer is read for: its method).
		out = r
		write = func(bw *bufio.Writer) error {
			fc.keys = writeFastRequest(bw, r, fc.keys)
			return nil
		}
	} else {
		var err error
		if out, err = p.directRequest(r); err != nil {
			p.backendError(w, r, err)
			return
		}
		write = func(bw *bufio.Writer) error { return out.Write(bw) }
	}
	resp, bc, stop, err := p.dc.roundTrip(r.Context(), w, out, write)
	if err != nil {
		p.backendError(w, r, err)
		return
	}
	keep := !resp.Close && resp.Body == http.NoBody
	body := resp.Body
	defer func() {
		if stop() && keep && !resp.Close && bc.br.Buffered() == 0 {
			body.Close()
			p.dc.put(bc)
			return
		}
		// Closed first: Close would read the rest of an unfinished body.
		bc.close()
		body.Close()
	}()
	announced := len(resp.Trailer)
	if resp.Header == nil {
		// Read for the fast server's writer: it writes the header lines
		// as net/http's would from the map below (an answer of this shape
		// has a length, and no trailers).
		fastWriterOf(w).setFields(bc.fields)
	} else {
		removeHopByHop(resp.Header)
		copyHeader(w.Header(), resp.Header)
		if announced > 0 {
			keys := make([]string, 0, len(resp.Trailer))
			for k := range resp.Trailer {
				keys = append(keys, k)
			}
			// In one order every time (a map's is random; so is
			// httputil.ReverseProxy's).
			slices.Sort(keys)
			w.Header().Add("Trailer", strings.Join(keys, ", "))
		}
		if _, typed := w.Header()["Content-Type"]; !typed && body != http.NoBody && resp.ContentLength == -1 {
			// No type is sniffed for an answer of unknown length, whether
			// or not its first bytes are here with its head (a nil value
			// is written as nothing).
			w.Header()["Content-Type"] = nil
		}
	}
	w.WriteHeader(resp.StatusCode)
	if body != http.NoBody {
		// As httputil.ReverseProxy with FlushInterval 0: an answer of
		// unknown length or an event stream has its headers sent at once
		// and is flushed after every write.
		flush := resp.ContentLength == -1 || eventStream(resp.Header.Get("Content-Type"))
		if flush && bc.br.Buffered() == 0 {
			// Nothing of the body is here yet: the head goes at once
			// (with body bytes waiting, it goes with the first of them).
			http.NewResponseController(w).Flush()
		}
		buf := p.bufs.get()
		err := copyBody(w, body, *buf, flush)
		p.bufs.put(buf)
		if err != nil {
			// The client has part of an answer: end its connection (as
			// httputil.ReverseProxy does).
			panic(http.ErrAbortHandler)
		}
		keep = true // the body was read to its end
	}
	if len(resp.Trailer) > 0 {
		http.NewResponseController(w).Flush()
	}
	if len(resp.Trailer) == announced {
		copyHeader(w.Header(), resp.Trailer)
		return
	}
	for k, vv := range resp.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			w.Header().Add(k, v)
		}
	}
}

// fieldsEventStream reports whether header lines name an event stream
// (as streamWriter reads a map: the first Content-Type value).
func fieldsEventStream(fields []fastField) bool {
	for _, f := range fields {
		if f.key == "Content-Type" {
			return strings.HasPrefix(f.value, "text/event-stream") || eventStream(f.value)
		}
	}
	return false
}

// fastWriterOf returns the fast server's writer beneath w, or nil.
func fastWriterOf(w http.ResponseWriter) *fastWriter {
	if sw, ok := w.(*streamWriter); ok {
		w = sw.ResponseWriter
	}
	fw, _ := w.(*fastWriter)
	return fw
}

// eventStream reports whether a Content-Type is text/event-stream.
func eventStream(ct string) bool {
	const es = "text/event-stream"
	if len(ct) < len(es) || !strings.EqualFold(ct[:len(es)], es) {
		return false
	}
	base, _, _ := mime.ParseMediaType(ct)
	return base == es
}

// copyBody copies an answer's body to the client to its end.
func copyBody(w http.ResponseWriter, body io.Reader, buf []byte, flush bool) error {
	var rc *http.ResponseController
	if flush {
		rc = http.NewResponseController(w)
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush {
				if err := rc.Flush(); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// copyHeader adds every value of src to dst.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if _, ok := dst[k]; !ok {
			dst[k] = vv
			continue
		}
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
}

// hopHeaders are the hop-by-hop headers httputil.ReverseProxy removes.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop removes the headers named in Connection and the
// hop-by-hop headers, as httputil.ReverseProxy does.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		delete(h, f)
	}
}

// cleanQueryParams is httputil.ReverseProxy's: a query a Go backend would
// read differently (";" separators, bad escapes, too many parameters) is
// re-encoded.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	if strings.Count(s, "&")+1 > 10000 {
		return reencode(s)
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
