package smtpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxReplyLines bounds a multi-line reply from the backend.
const maxReplyLines = 100

// errGarbage marks a backend reply that is not SMTP.
var errGarbage = errors.New("backend answered something that is not an SMTP reply")

// reply is one SMTP reply, its lines kept exactly as received (without the
// line ending) so that it can be relayed unchanged.
type reply struct {
	code  int
	lines []string
}

// text returns the reply's text without codes, lines joined by spaces.
func (r reply) text() string {
	var b strings.Builder
	for i, l := range r.lines {
		if i > 0 {
			b.WriteByte(' ')
		}
		if len(l) > 4 {
			b.WriteString(l[4:])
		}
	}
	return b.String()
}

// enhanced returns the enhanced status code of the first line ("5.1.1"),
// or "".
func (r reply) enhanced() string {
	if len(r.lines) == 0 || len(r.lines[0]) < 5 {
		return ""
	}
	f := strings.Fields(r.lines[0][4:])
	if len(f) == 0 {
		return ""
	}
	c := f[0]
	if len(c) >= 5 && (c[0] == '2' || c[0] == '4' || c[0] == '5') && c[1] == '.' && strings.Count(c, ".") == 2 {
		return c
	}
	return ""
}

// readReply reads one (possibly multi-line) reply. Its lines are
// substrings of one string: two allocations per reply, not one per line.
func readReply(r *bufio.Reader) (reply, error) {
	var rep reply
	var buf [1024]byte
	raw := buf[:0]              // the lines, without their line ends
	var ends [maxReplyLines]int // where each line ends in raw
	for i := 0; ; i++ {
		if i >= maxReplyLines {
			return rep, fmt.Errorf("%w: more than %d lines", errGarbage, maxReplyLines)
		}
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return rep, fmt.Errorf("%w: line too long", errGarbage)
			}
			if errors.Is(err, io.EOF) && len(line) == 0 {
				return rep, fmt.Errorf("backend closed the connection: %w", io.ErrUnexpectedEOF)
			}
			return rep, fmt.Errorf("reading backend reply: %w", err)
		}
		l := bytes.TrimRight(line, "\r\n")
		if len(l) < 3 || !isDigit(l[0]) || !isDigit(l[1]) || !isDigit(l[2]) || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			return rep, fmt.Errorf("%w: %q", errGarbage, truncate(string(l), 60))
		}
		code := int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
		if code < 200 || code > 599 {
			return rep, fmt.Errorf("%w: code %d", errGarbage, code)
		}
		if i > 0 && code != rep.code {
			return rep, fmt.Errorf("%w: code changed from %d to %d within one reply", errGarbage, rep.code, code)
		}
		rep.code = code
		raw = append(raw, l...)
		ends[i] = len(raw)
		if len(l) == 3 || l[3] == ' ' {
			all := string(raw)
			rep.lines = make([]string, i+1)
			start := 0
			for k := range rep.lines {
				rep.lines[k] = all[start:ends[k]]
				start = ends[k]
			}
			return rep, nil
		}
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// write sends the reply's lines as received, CRLF-terminated.
func (r reply) write(w *bufio.Writer) error {
	for _, l := range r.lines {
		w.WriteString(l)
		w.WriteString("\r\n")
	}
	return w.Flush()
}

// newReply builds a reply of postern's own; text may hold several lines
// separated by '\n'.
func newReply(code int, text string) reply {
	parts := strings.Split(text, "\n")
	r := reply{code: code}
	for i, p := range parts {
		sep := "-"
		if i == len(parts)-1 {
			sep = " "
		}
		r.lines = append(r.lines, fmt.Sprintf("%d%s%s", code, sep, p))
	}
	return r
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
