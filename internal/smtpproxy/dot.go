package smtpproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
)

// dataBufSize is the buffer a message streams through: large reads and
// writes, so a 10 MB message costs a few hundred system calls, not tens of
// thousands. It is taken from a pool only while a message is in flight, so
// idle connections do not hold it.
const dataBufSize = 64 << 10

var dataBufs = sync.Pool{New: func() any { b := make([]byte, dataBufSize); return &b }}

// dotScanner finds the end of a DATA message (the line ".") in the client's
// byte stream, a buffer at a time, and notes bare line feeds and
// dot-stuffed lines on the way. It looks at each line end with
// bytes.IndexByte, never at each byte.
type dotScanner struct {
	lineStart bool  // the next byte begins a line
	prevCR    bool  // the byte before the next one was CR
	bareLF    bool  // a line ended in LF without CR
	dots      []int // offsets, in the last scan, of the stuffed dots at line starts
}

// scan examines b, the next bytes of the stream. It returns how many of
// them are message data (b[:n]) and whether the end-of-data line follows
// at b[n:n+3]. When end is false and n < len(b), b[n:] (one or two bytes
// that may begin the end line) must be scanned again with the bytes that
// follow them.
func (d *dotScanner) scan(b []byte) (n int, end bool) {
	d.dots = d.dots[:0]
	p := 0
	for p < len(b) {
		if d.lineStart {
			if b[p] == '.' {
				switch rest := b[p:]; {
				case len(rest) >= 3 && rest[1] == '\r' && rest[2] == '\n':
					return p, true
				case len(rest) == 1 || len(rest) == 2 && rest[1] == '\r':
					return p, false // maybe the end line: wait for more
				}
				d.dots = append(d.dots, p)
			}
			d.lineStart = false
		}
		j := bytes.IndexByte(b[p:], '\n')
		if j < 0 {
			d.prevCR = b[len(b)-1] == '\r'
			return len(b), false
		}
		lf := p + j
		if lf > 0 && b[lf-1] != '\r' || lf == 0 && !d.prevCR {
			d.bareLF = true
		}
		d.prevCR, d.lineStart = false, true
		p = lf + 1
	}
	return len(b), false
}

// clientReader is what the session's line reader reads from: bytes that
// were read past the end of a message (pipelined commands) first, then the
// connection.
type clientReader struct {
	pending []byte
	conn    net.Conn
}

func (c *clientReader) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.conn.Read(p)
}

// buffered reports how many bytes the client sent that are not read yet.
func (s *session) buffered() int { return s.r.Buffered() + len(s.in.pending) }

// readMessage reads a DATA message from the client up to its end line and
// passes it on in large chunks, still dot-stuffed, to sink (with the
// offsets of the stuffed dots in the chunk). The size limit (M) and content
// rules (C) are checked as it streams; a chunk with a bare LF and
// everything after it are not passed on. With withEnd, the last chunk
// ends with the end line ".\r\n" itself, so that a message that arrived in
// one read leaves in one write; it is passed on only once the whole
// message passed every check. Bytes after the end line stay for the
// command reader. A non-nil error ends the session: the client has been
// answered or is gone.
func (s *session) readMessage(m *msgState, withEnd bool, sink func(chunk []byte, dots []int) error) (bareLF bool, err error) {
	bufp := dataBufs.Get().(*[]byte)
	defer dataBufs.Put(bufp)
	buf := *bufp
	have := 0
	if k := s.r.Buffered(); k > 0 {
		b, _ := s.r.Peek(k)
		have = copy(buf, b)
		s.r.Discard(have)
	}
	d := dotScanner{lineStart: true}
	for {
		n, end := d.scan(buf[:have])
		if n > 0 {
			if dec, text := s.check(m, buf[:n]); text != "" {
				return false, s.abortMessage(text, dec)
			}
		}
		if end {
			// The end of the message: checked before its last bytes go.
			if dec, text := s.checkEnd(m); text != "" {
				return false, s.abortMessage(text, dec)
			}
		}
		chunk := buf[:n]
		if end && withEnd {
			chunk = buf[:n+3] // the end line ".\r\n", as scan found it
		}
		if len(chunk) > 0 && m.failed == nil && !d.bareLF {
			m.failed = sink(chunk, d.dots)
		}
		if end {
			if rest := buf[n+3 : have]; len(rest) > 0 {
				s.in.pending = append(s.in.pending[:0], rest...)
			}
			return d.bareLF, nil
		}
		have = copy(buf, buf[n:have])
		s.armRead(s.p.cfg.Timeouts.Data)
		k, err := s.in.Read(buf[have:])
		have += k
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				s.reply(newReply(421, "4.4.2 "+s.p.cfg.Hostname+" Error: timeout exceeded"))
			} else if !errors.Is(err, io.EOF) {
				s.log.Info("client failed during DATA", "err", err)
			}
			return false, errClosed
		}
	}
}
