package webproxy

import (
	"bytes"
	"io"
	"net/http"
)

// A body longer than a login form's read limit on the form's paths (an
// attachment upload, a long message sent from the webmail) cannot be held
// in memory to be read first. When neither the query nor the cookies make
// it a login, it is streamed to the backend through a scanner that holds
// back each field name (urlencoded) or part header (multipart) until it
// has read it: a login field, or anything it cannot read with certainty,
// ends the body with an error before those bytes are sent, so the backend
// gets a cut request that it never runs (a web server waits for the whole
// body) and in any case never sees the field.

// Limits of the streaming scanner.
const (
	maxScanName   = 4 << 10  // a urlencoded field name
	maxScanHeader = 16 << 10 // a multipart part's headers
)

// scanner decides how much of the unreleased bytes b may go to the
// backend; eof says b ends the body. It is called again with what it held
// back and what came after.
type scanner interface {
	feed(b []byte, eof bool) (release int, err error)
}

// newScanner returns the streaming scanner for a body, or nil when its
// kind cannot be scanned (JSON, unknown types).
func newScanner(spec *formSpec, h http.Header) (scanner, error) {
	kind, boundary, err := bodyKind(h)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindURLEncoded:
		return &urlScan{spec: spec}, nil
	case kindMultipart:
		return &multipartScan{spec: spec, boundary: boundary}, nil
	}
	return nil, nil
}

// scanBody is a request body passed through a scanner.
type scanBody struct {
	src  io.ReadCloser
	sc   scanner
	tmp  []byte
	held []byte // read, not yet released
	out  []byte // released, not yet returned
	eof  bool
	err  error
}

func newScanBody(src io.ReadCloser, sc scanner) *scanBody {
	return &scanBody{src: src, sc: sc, tmp: make([]byte, 32<<10)}
}

func (s *scanBody) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.eof && len(s.held) == 0 {
			return 0, io.EOF
		}
		if !s.eof {
			n, err := s.src.Read(s.tmp)
			s.held = append(s.held, s.tmp[:n]...)
			switch {
			case err == io.EOF:
				s.eof = true
			case err != nil:
				s.err = err
				return 0, err
			case n == 0:
				continue
			}
		}
		rel, err := s.sc.feed(s.held, s.eof)
		if err != nil {
			s.err = err
			return 0, err
		}
		if s.eof && rel != len(s.held) {
			s.err = refuse(400, "a body that ends inside a field")
			return 0, s.err
		}
		s.out = append(s.out, s.held[:rel]...)
		s.held = append(s.held[:0], s.held[rel:]...)
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	if len(s.out) == 0 {
		s.out = nil
	}
	return n, nil
}

func (s *scanBody) Close() error { return s.src.Close() }

// urlScan scans a urlencoded body.
type urlScan struct {
	spec    *formSpec
	inValue bool
	vars    int
}

func (s *urlScan) feed(b []byte, eof bool) (int, error) {
	rel := 0
	for {
		if s.inValue {
			k := bytes.IndexByte(b[rel:], '&')
			if k < 0 {
				return len(b), nil
			}
			rel += k + 1
			s.inValue = false
			if err := s.count(); err != nil {
				return 0, err
			}
			continue
		}
		k := bytes.IndexAny(b[rel:], "=&")
		if k < 0 {
			if len(b)-rel > maxScanName {
				return 0, refuse(413, "a field name over %d bytes in a long body", maxScanName)
			}
			if !eof {
				return rel, nil
			}
			return len(b), s.check(b[rel:])
		}
		if err := s.check(b[rel : rel+k]); err != nil {
			return 0, err
		}
		if b[rel+k] == '=' {
			s.inValue = true
		} else if err := s.count(); err != nil {
			return 0, err
		}
		rel += k + 1
	}
}

func (s *urlScan) check(name []byte) error {
	if n, _ := phpURLDecode(string(name)); s.spec.relevant(n) {
		return refuse(413, "a login field in a body over the read limit")
	}
	return nil
}

func (s *urlScan) count() error {
	if s.vars++; s.vars > maxInputVars {
		return refuse(413, "more than %d form variables in a long body", maxInputVars)
	}
	return nil
}

// multipartScan scans a multipart/form-data body in the layout
// parseMultipart accepts.
type multipartScan struct {
	spec     *formSpec
	boundary string
	state    int
	parts    int
}

const (
	mpStart = iota
	mpHeaders
	mpData
	mpAfterDelim
	mpEnd
)

func (s *multipartScan) feed(b []byte, eof bool) (int, error) {
	rel := 0
	nlDelim := []byte("\n--" + s.boundary)
	for {
		switch s.state {
		case mpStart:
			first := []byte("--" + s.boundary)
			if len(b)-rel < len(first) {
				if eof || !bytes.HasPrefix(first, b[rel:]) {
					return 0, refuse(400, "a multipart body that does not start with its boundary")
				}
				return rel, nil
			}
			if !bytes.HasPrefix(b[rel:], first) {
				return 0, refuse(400, "a multipart body that does not start with its boundary")
			}
			rel += len(first)
			s.state = mpAfterDelim
		case mpHeaders:
			if len(b)-rel < 2 {
				if eof {
					return 0, refuse(400, "an unterminated multipart body")
				}
				return rel, nil
			}
			s.parts++
			if s.parts > maxInputVars {
				return 0, refuse(413, "more than %d multipart parts in a long body", maxInputVars)
			}
			if bytes.HasPrefix(b[rel:], []byte("\r\n")) {
				rel += 2
				s.state = mpData
				continue
			}
			k := bytes.Index(b[rel:], []byte("\r\n\r\n"))
			if k < 0 {
				s.parts--
				if eof || len(b)-rel > maxScanHeader {
					return 0, refuse(400, "multipart part headers too long or unterminated")
				}
				return rel, nil
			}
			name, _, err := partName(b[rel : rel+k])
			if err != nil {
				return 0, err
			}
			if name != "" && s.spec.relevant(name) {
				return 0, refuse(413, "a login field in a body over the read limit")
			}
			rel += k + 4
			s.state = mpData
		case mpData:
			k := bytes.Index(b[rel:], nlDelim)
			if k < 0 {
				if eof {
					return 0, refuse(400, "an unterminated multipart body")
				}
				// Hold back what may be the start of a delimiter and
				// the byte before it.
				if keep := len(b) - (len(nlDelim) + 1); keep > rel {
					return keep, nil
				}
				return rel, nil
			}
			at := rel + k
			if at == 0 || b[at-1] != '\r' {
				return 0, refuse(400, "a multipart boundary after a bare LF")
			}
			rel = at + len(nlDelim)
			s.state = mpAfterDelim
		case mpAfterDelim:
			if len(b)-rel < 2 {
				if eof {
					return 0, refuse(400, "an unterminated multipart body")
				}
				return rel, nil
			}
			switch {
			case bytes.HasPrefix(b[rel:], []byte("\r\n")):
				s.state = mpHeaders
			case bytes.HasPrefix(b[rel:], []byte("--")):
				s.state = mpEnd
			default:
				return 0, refuse(400, "a bad multipart delimiter line")
			}
			rel += 2
		case mpEnd:
			rest := b[rel:]
			if !bytes.HasPrefix([]byte("\r\n"), rest) || (eof && len(rest) == 1) {
				return 0, refuse(400, "data after the closing multipart boundary")
			}
			if eof {
				return len(b), nil
			}
			return rel, nil
		}
	}
}

// readCloser reads from one reader and closes another.
type readCloser struct {
	io.Reader
	io.Closer
}
