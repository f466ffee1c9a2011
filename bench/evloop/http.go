package main

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/postern/postern/internal/ascii"
)

// maxHead is the largest request or answer head relayed.
const maxHead = 16 << 10

var crlfcrlf = []byte("\r\n\r\n")

// headLen returns the length of the head at the start of b, blank line
// included, or 0 when b does not hold a whole head yet.
func headLen(b []byte) int {
	i := bytes.Index(b, crlfcrlf)
	if i < 0 {
		return 0
	}
	return i + len(crlfcrlf)
}

var errUnsupported = errors.New("not relayed by this tool")

// eachHeader calls f with every header line's name and value of head
// (status or request line first, skipped).
func eachHeader(head []byte, f func(name, value []byte) error) error {
	_, rest, _ := bytes.Cut(head, []byte("\r\n"))
	for len(rest) > 2 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 {
			return fmt.Errorf("header line %q: %w", line, errUnsupported)
		}
		if err := f(name, bytes.Trim(value, " \t")); err != nil {
			return err
		}
	}
	return nil
}

// checkRequest accepts a GET or HEAD request head of HTTP/1.1 without a
// body; it reports whether it is a HEAD.
func checkRequest(head []byte) (isHead bool, err error) {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	switch {
	case bytes.HasPrefix(line, []byte("GET ")):
	case bytes.HasPrefix(line, []byte("HEAD ")):
		isHead = true
	default:
		return false, fmt.Errorf("request line %q: %w", line, errUnsupported)
	}
	if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return false, fmt.Errorf("request line %q: %w", line, errUnsupported)
	}
	return isHead, eachHeader(head, func(name, _ []byte) error {
		if ascii.EqualFold(string(name), "Content-Length") || ascii.EqualFold(string(name), "Transfer-Encoding") {
			return fmt.Errorf("a request with a body: %w", errUnsupported)
		}
		return nil
	})
}

// chunkedLen is bodyLen's answer for a chunked body: its length is known
// only by reading it (see chunks).
const chunkedLen = -1

// bodyLen returns the length of the body that follows an answer's head,
// for an answer to a HEAD request when isHead: only answers of HTTP/1.1
// with a final status and, where a body follows, one Content-Length or
// Transfer-Encoding: chunked (then chunkedLen).
func bodyLen(head []byte, isHead bool) (int64, error) {
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("status line: %w", errUnsupported)
	}
	code, err := strconv.Atoi(string(head[9:12]))
	if err != nil || code < 200 {
		return 0, fmt.Errorf("status %q: %w", head[9:12], errUnsupported)
	}
	n, chunked := int64(-1), false
	err = eachHeader(head, func(name, value []byte) error {
		switch {
		case ascii.EqualFold(string(name), "Transfer-Encoding"):
			if chunked || !ascii.EqualFold(string(value), "chunked") {
				return fmt.Errorf("Transfer-Encoding %q: %w", value, errUnsupported)
			}
			chunked = true
		case ascii.EqualFold(string(name), "Content-Length"):
			v, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || v < 0 || n >= 0 {
				return fmt.Errorf("Content-Length %q: %w", value, errUnsupported)
			}
			n = v
		}
		return nil
	})
	switch {
	case err != nil:
		return 0, err
	case chunked && n >= 0:
		return 0, fmt.Errorf("both Content-Length and chunked: %w", errUnsupported)
	case isHead || code == 204 || code == 304:
		return 0, nil
	case chunked:
		return chunkedLen, nil
	case n < 0:
		return 0, fmt.Errorf("an answer without a length: %w", errUnsupported)
	}
	return n, nil
}

// chunks follows a chunked body's framing as its bytes pass, to find where
// it ends: chunk-size lines (hex digits, extensions after ';', CRLF), the
// data and its CRLF, the last chunk, trailer lines and the blank line.
type chunks struct {
	state int   // what the next byte belongs to
	n     int64 // data bytes left in the chunk; the size being read
	line  int   // bytes of the line being read
}

const (
	chSize    = iota // the chunk-size line
	chExt            // extensions, up to CR
	chSizeLF         // LF of the size line
	chData           // chunk data
	chDataCR         // CR after the data
	chDataLF         // LF after the data
	chTrailer        // a trailer line (or the final blank line)
	chTrailerLF
	chDone
)

// scan takes the next bytes of the body; it returns how many belong to it
// (all of p unless it ends inside p) and whether it has ended.
func (c *chunks) scan(p []byte) (int, bool, error) {
	for i := 0; i < len(p); i++ {
		b := p[i]
		switch c.state {
		case chSize:
			switch {
			case hexDigit(b) >= 0 && c.line < 15:
				c.n = c.n<<4 | int64(hexDigit(b))
				c.line++
			case c.line > 0 && b == ';':
				c.state = chExt
			case c.line > 0 && b == '\r':
				c.state = chSizeLF
			default:
				return 0, false, fmt.Errorf("chunk size: %w", errUnsupported)
			}
		case chExt:
			if b == '\r' {
				c.state = chSizeLF
			} else if b == '\n' || c.line > 4096 {
				return 0, false, fmt.Errorf("chunk extension: %w", errUnsupported)
			}
			c.line++
		case chSizeLF:
			if b != '\n' {
				return 0, false, fmt.Errorf("chunk size line: %w", errUnsupported)
			}
			c.line = 0
			if c.state = chData; c.n == 0 {
				c.state = chTrailer
			}
		case chData:
			k := min(int64(len(p)-i), c.n)
			c.n -= k
			i += int(k) - 1
			if c.n == 0 {
				c.state = chDataCR
			}
		case chDataCR, chTrailerLF, chDataLF:
			want := byte('\r')
			if c.state != chDataCR {
				want = '\n'
			}
			if b != want {
				return 0, false, fmt.Errorf("chunk end: %w", errUnsupported)
			}
			switch c.state {
			case chDataCR:
				c.state = chDataLF
			case chDataLF:
				c.state = chSize
			case chTrailerLF:
				if c.line == 0 {
					c.state = chDone
					return i + 1, true, nil
				}
				c.line, c.state = 0, chTrailer
			}
		case chTrailer:
			switch {
			case b == '\r':
				c.state = chTrailerLF
			case b == '\n' || c.line > 4096:
				return 0, false, fmt.Errorf("trailer: %w", errUnsupported)
			default:
				c.line++
			}
		}
	}
	return len(p), false, nil
}

func hexDigit(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b - 'a' + 10)
	case 'A' <= b && b <= 'F':
		return int(b - 'A' + 10)
	}
	return -1
}

// body tracks where an answer's body ends as its bytes pass.
type body struct {
	left    int64 // Content-Length bytes still to come
	chunked bool
	ch      chunks
}

// newBody starts tracking the body after the answer head (see bodyLen).
func newBody(head []byte, isHead bool) (body, error) {
	n, err := bodyLen(head, isHead)
	if err != nil {
		return body{}, err
	}
	if n == chunkedLen {
		return body{chunked: true}, nil
	}
	return body{left: n}, nil
}

// take passes the body's next bytes; it reports whether the body has
// ended with them. Bytes past its end are an error: nothing was asked for
// them.
func (b *body) take(p []byte) (bool, error) {
	if b.chunked {
		used, done, err := b.ch.scan(p)
		switch {
		case err != nil:
			return false, err
		case used < len(p):
			return false, fmt.Errorf("bytes after the answer: %w", errUnsupported)
		}
		return done, nil
	}
	if int64(len(p)) > b.left {
		return false, fmt.Errorf("bytes after the answer: %w", errUnsupported)
	}
	b.left -= int64(len(p))
	return b.left == 0, nil
}
