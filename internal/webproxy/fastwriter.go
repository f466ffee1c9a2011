package webproxy

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// fastWriter is the fast server's http.ResponseWriter: it writes one
// HTTP/1.1 answer into the connection's buffered writer the way net/http's
// server writes it (status line; headers sorted, invalid names dropped,
// line breaks in values made spaces; Date; a Content-Length or chunked
// framing; Connection: close when the connection ends after it; a
// Content-Type sniffed from the first bytes when none is given; the
// headers a 204 or 304 must not carry removed), so a client cannot tell
// which server answered.
type fastWriter struct {
	fc  *fastConn
	req *http.Request
	h   http.Header

	status      int
	wroteHeader bool // a final status was given
	committed   bool // the head is in the buffer
	chunked     bool
	cl          int64 // the declared length; -1: none
	written     int64
	closeAfter  bool
	trailers    []string // declared trailer names
	err         error    // a write to the client failed
	keys        []string // scratch, for sorting header names
	clBuf       [20]byte // scratch, for a Content-Length value

	// fields, when set (setFields), are the answer's header lines in
	// place of h: sorted, the hop-by-hop ones left out.
	fields                         []fastField
	hasFields                      bool
	fieldType, fieldDate, fieldEnc bool // a Content-Type, a Date, a non-empty first Content-Encoding
	fieldCL                        int64
}

// reset prepares w for the answer to req; closeAfter: the connection
// ends after it (the client asked to close).
func (w *fastWriter) reset(req *http.Request, closeAfter bool) {
	clear(w.h)
	w.req = req
	w.status, w.wroteHeader, w.committed, w.chunked = 0, false, false, false
	w.cl, w.written, w.closeAfter, w.err = -1, 0, closeAfter || req.Close, nil
	w.trailers = w.trailers[:0]
	w.hasFields = false
}

// setFields makes the answer's header lines those of a backend answer
// parseFastResponse read (with one valid Content-Length, no framing or
// trailer headers, Connection at most "keep-alive"), with no map: what
// commit writes from them is what it writes from the map serveDirect
// would have made of them (removeHopByHop, then copyHeader into an empty
// Header) — sorted by name, values in the order received, the hop-by-hop
// headers left out. Header() stays empty; WriteHeader comes next.
func (w *fastWriter) setFields(fields []fastField) {
	out := w.fields[:0]
	w.fieldType, w.fieldDate, w.fieldEnc, w.fieldCL = false, false, false, -1
	encSeen := false
	for _, f := range fields {
		if slices.Contains(hopHeaders, f.key) {
			continue // as removeHopByHop
		}
		switch f.key {
		case "Content-Type":
			w.fieldType = true
		case "Date":
			w.fieldDate = true
		case "Content-Encoding":
			if !encSeen {
				encSeen, w.fieldEnc = true, f.value != ""
			}
		case "Content-Length":
			w.fieldCL = parseLength(f.value)
		}
		// Insertion sort, stable: a name's values keep their order.
		i := len(out)
		out = append(out, f)
		for i > 0 && out[i-1].key > f.key {
			out[i] = out[i-1]
			i--
		}
		out[i] = f
	}
	w.fields, w.hasFields = out, true
}

// Header returns the answer's header map.
func (w *fastWriter) Header() http.Header { return w.h }

// WriteHeader sends an informational answer at once, or records the final
// status.
func (w *fastWriter) WriteHeader(code int) {
	if w.wroteHeader || w.committed {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		bw := w.fc.bw
		writeStatusLine(bw, code)
		w.writeHeaderLines(true)
		bw.WriteString("\r\n")
		w.flushNet()
		return
	}
	w.wroteHeader, w.status = true, code
	if w.hasFields && len(w.h) == 0 {
		w.cl = w.fieldCL
		return
	}
	w.fieldsToMap()
	// An invalid Content-Length declares no length but stays in the
	// header, as in net/http's server (which drops it from the handler's
	// map only after copying that map for the answer): it keeps the
	// length of an answer that ends with the handler from being added,
	// goes with chunked framing, and is written as it is otherwise.
	if cl := w.h.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.cl = v
		}
	}
}

// Write writes body bytes (eaten for HEAD; refused for a status without a
// body, and beyond the declared length).
func (w *fastWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.cl != -1 && w.written > w.cl {
		return 0, http.ErrContentLength
	}
	if !w.committed {
		w.commit(p, false)
	}
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if w.err != nil {
		return 0, w.err
	}
	bw := w.fc.bw
	if w.chunked {
		var b [20]byte
		bw.Write(strconv.AppendInt(b[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if err == nil && w.chunked {
		_, err = bw.WriteString("\r\n")
	}
	if err != nil {
		w.fail(err)
		return n, err
	}
	return n, nil
}

// FlushError sends what is buffered (the head first).
func (w *fastWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(nil, false)
	}
	return w.flushNet()
}

// Flush is FlushError without the error.
func (w *fastWriter) Flush() { w.FlushError() }

// SetWriteDeadline moves the connection's write deadline; clearing it is
// left to the end of the answer, which arms its own.
func (w *fastWriter) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return w.fc.armWrite(t)
}

// SetReadDeadline moves the connection's read deadline.
func (w *fastWriter) SetReadDeadline(t time.Time) error {
	w.fc.rdl = t
	return w.fc.rw.SetReadDeadline(t)
}

func (w *fastWriter) flushNet() error {
	if w.err != nil {
		return w.err
	}
	if err := w.fc.bw.Flush(); err != nil {
		w.fail(err)
		return err
	}
	return nil
}

func (w *fastWriter) fail(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("writing the answer to the client: %w", err)
	}
	w.closeAfter = true
	w.fc.cc.Close()
}

// finish ends the answer: the head if not yet out, the last chunk and
// trailers, and the flush. The connection is to be closed after it when
// closeAfter is set.
func (w *fastWriter) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(nil, true)
	}
	if w.chunked {
		bw := w.fc.bw
		bw.WriteString("0\r\n")
		w.writeTrailers()
		bw.WriteString("\r\n")
	}
	if w.req.Method != http.MethodHead && w.cl != -1 && bodyAllowed(w.status) && w.cl != w.written {
		w.closeAfter = true // short: the client would read the next answer as its rest
	}
	w.flushNet() // its write gets its deadline (fastConn.Write)
}

// commit writes the head, as net/http's chunkWriter.writeHeader does for
// an HTTP/1.1 request with keep-alives on. p is the first body bytes (for
// sniffing); done says the handler has finished.
func (w *fastWriter) commit(p []byte, done bool) {
	if w.hasFields && len(w.h) == 0 {
		w.commitFields(p)
		return
	}
	w.fieldsToMap()
	w.committed = true
	h := w.h
	isHEAD := w.req.Method == http.MethodHead
	var (
		extraCT, extraConn, extraTE string
		extraCL                     []byte
	)
	trailers := false
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
			break
		}
	}
	for _, v := range h["Trailer"] {
		trailers = true
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				if k := http.CanonicalHeaderKey(f); httpguts.ValidTrailerHeader(k) {
					w.trailers = append(w.trailers, k)
				}
			}
		}
	}
	te := h.Get("Transfer-Encoding")
	hasTE := te != ""
	if done && !trailers && !hasTE && bodyAllowed(w.status) && !hasKey(h, "Content-Length") && (!isHEAD || len(p) > 0) {
		w.cl = int64(len(p))
		extraCL = strconv.AppendInt(w.clBuf[:0], int64(len(p)), 10)
	}
	hasCL := w.cl != -1
	if h.Get("Connection") == "close" || w.fc.p.fast.isStopping() {
		w.closeAfter = true
	}
	if bodyAllowed(w.status) {
		if _, haveType := h["Content-Type"]; !haveType && !hasTE && h.Get("Content-Encoding") == "" && len(p) > 0 {
			extraCT = http.DetectContentType(p)
		}
	} else {
		delete(h, "Content-Length")
		delete(h, "Transfer-Encoding")
		if w.status == http.StatusNotModified {
			delete(h, "Content-Type")
		}
	}
	_, hasDate := h["Date"]
	if hasCL && hasTE && te != "identity" {
		delete(h, "Content-Length")
		hasCL = false
	}
	switch {
	case isHEAD || !bodyAllowed(w.status):
		delete(h, "Transfer-Encoding")
	case hasCL:
		delete(h, "Transfer-Encoding")
	case hasTE && te == "identity":
		w.closeAfter = true
		delete(h, "Transfer-Encoding")
	default:
		w.chunked = true
		extraTE = "chunked"
		if te == "chunked" {
			delete(h, "Transfer-Encoding")
		}
	}
	if w.chunked {
		delete(h, "Content-Length")
	}
	if w.closeAfter && !httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		delete(h, "Connection")
		extraConn = "close"
	}
	bw := w.fc.bw
	writeStatusLine(bw, w.status)
	w.writeHeaderLines(false)
	if extraCT != "" {
		bw.WriteString("Content-Type: ")
		bw.WriteString(extraCT)
		bw.WriteString("\r\n")
	}
	if extraConn != "" {
		bw.WriteString("Connection: close\r\n")
	}
	if extraTE != "" {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !hasDate {
		bw.WriteString("Date: ")
		bw.WriteString(w.fc.p.date())
		bw.WriteString("\r\n")
	}
	if extraCL != nil {
		bw.WriteString("Content-Length: ")
		bw.Write(extraCL)
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// fieldsToMap adds header lines set by setFields to the map, for a
// handler that also set headers in it (none does; this keeps the answer
// whole if one ever does).
func (w *fastWriter) fieldsToMap() {
	if !w.hasFields {
		return
	}
	w.hasFields = false
	for _, f := range w.fields {
		w.h[f.key] = append(w.h[f.key], f.value)
	}
}

// commitFields is commit for header lines from setFields, which leave
// fewer cases: a status with a body, a valid Content-Length, no framing,
// trailer or Connection headers, a GET.
func (w *fastWriter) commitFields(p []byte) {
	w.committed = true
	if w.fc.p.fast.isStopping() {
		w.closeAfter = true
	}
	bw := w.fc.bw
	writeStatusLine(bw, w.status)
	for _, f := range w.fields {
		bw.WriteString(f.key)
		bw.WriteString(": ")
		bw.WriteString(f.value)
		bw.WriteString("\r\n")
	}
	if !w.fieldType && !w.fieldEnc && len(p) > 0 {
		bw.WriteString("Content-Type: ")
		bw.WriteString(http.DetectContentType(p))
		bw.WriteString("\r\n")
	}
	if w.closeAfter {
		bw.WriteString("Connection: close\r\n")
	}
	if !w.fieldDate {
		bw.WriteString("Date: ")
		bw.WriteString(w.fc.p.date())
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// writeHeaderLines writes the header map sorted by name, leaving out the
// trailer keys, and for an informational answer its framing headers.
func (w *fastWriter) writeHeaderLines(informational bool) {
	keys := w.keys[:0]
	for k := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		if informational && (k == "Content-Length" || k == "Transfer-Encoding") {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.keys = keys
	writeFields(w.fc.bw, w.h, keys)
}

// writeTrailers writes the trailers after the last chunk: the declared
// names' values and every TrailerPrefix key.
func (w *fastWriter) writeTrailers() {
	keys := w.keys[:0]
	tr := make(http.Header)
	for k, vv := range w.h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			tr[k[len(http.TrailerPrefix):]] = vv
		}
	}
	for _, k := range w.trailers {
		if vv, ok := w.h[k]; ok {
			tr[k] = vv
		}
	}
	for k := range tr {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	w.keys = keys
	writeFields(w.fc.bw, tr, keys)
}

// writeFields writes the fields of h named in keys as net/http's
// Header.Write does.
func writeFields(bw *bufio.Writer, h http.Header, keys []string) {
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
			}
			v = strings.Trim(v, " \t\r\n")
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
}

// writeStatusLine writes an HTTP/1.1 status line as net/http does.
func writeStatusLine(bw *bufio.Writer, code int) {
	if text := http.StatusText(code); text != "" {
		bw.WriteString("HTTP/1.1 ")
		// Appended in the writer's own free space: nothing allocated.
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
		bw.WriteByte(' ')
		bw.WriteString(text)
		bw.WriteString("\r\n")
		return
	}
	bw.WriteString(fmt.Sprintf("HTTP/1.1 %03d status code %d\r\n", code, code))
}

// bodyAllowed reports whether a status may carry a body.
func bodyAllowed(status int) bool {
	return !(status >= 100 && status <= 199 || status == 204 || status == 304)
}

func hasKey(h http.Header, k string) bool {
	_, ok := h[k]
	return ok
}
