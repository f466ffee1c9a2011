package smtpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strings"
	"sync/atomic"
	"unicode"
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
	if len(r.lines) == 1 { // most replies: a substring, no copy
		if l := r.lines[0]; len(l) > 4 {
			return l[4:]
		}
		return ""
	}
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
	// The first of strings.Fields, without the list.
	c := strings.TrimLeftFunc(r.lines[0][4:], unicode.IsSpace)
	if end := strings.IndexFunc(c, unicode.IsSpace); end >= 0 {
		c = c[:end]
	}
	if len(c) >= 5 && (c[0] == '2' || c[0] == '4' || c[0] == '5') && c[1] == '.' && strings.Count(c, ".") == 2 {
		return c
	}
	return ""
}

// readReply reads one (possibly multi-line) reply. Its lines are
// substrings of one string: two allocations per reply, not one per line,
// and none for a reply the cache c (when not nil) holds already.
func readReply(r *bufio.Reader, c *replyCache) (reply, error) {
	var rep reply
	var buf [1024]byte
	raw := buf[:0] // the lines, each ended by '\n' (the key of the cache)
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
		raw = append(raw, '\n')
		if len(l) == 3 || l[3] == ' ' {
			return c.reply(raw, code, i+1), nil
		}
	}
}

// replyFrom makes the reply of the n lines in all, each ended by '\n'.
func replyFrom(all string, code, n int) reply {
	rep := reply{code: code, lines: make([]string, n)}
	for k := range rep.lines {
		end := strings.IndexByte(all, '\n')
		rep.lines[k] = all[:end]
		all = all[end+1:]
	}
	return rep
}

// replyCache keeps the backend's recent replies for the sessions of one
// proxy. A backend answers most commands with the same lines in every
// session (its greeting and EHLO, MAIL's and RCPT's 250, DATA's 354,
// QUIT's 221), and such a reply read again is the one kept, not a new
// copy. Replies are never changed once made, so the sessions share them.
//
// Each slot holds one reply, chosen by a hash of its lines; a reply that
// was read again since it came (used) keeps its slot once against a new
// one, so the replies that differ every time (a queue ID) do not push out
// the ones that repeat.
type replyCache struct {
	seed  maphash.Seed
	slots [replyCacheSlots]atomic.Pointer[cachedReply]
}

const (
	replyCacheSlots = 64   // a power of two
	replyCacheMax   = 2048 // the longest reply kept (its lines and line ends)
)

type cachedReply struct {
	key  string // the lines, each ended by '\n'
	rep  reply
	used atomic.Bool
}

func newReplyCache() *replyCache { return &replyCache{seed: maphash.MakeSeed()} }

// reply returns the reply of the n lines in raw (each ended by '\n'):
// the kept one when c holds it, else a new one, kept when its slot is
// free or holds a reply not read again since it came. A nil c keeps
// nothing.
func (c *replyCache) reply(raw []byte, code, n int) reply {
	if c == nil || len(raw) > replyCacheMax {
		return replyFrom(string(raw), code, n)
	}
	slot := &c.slots[maphash.Bytes(c.seed, raw)&(replyCacheSlots-1)]
	e := slot.Load()
	if e != nil && e.key == string(raw) {
		if !e.used.Load() {
			e.used.Store(true)
		}
		return e.rep
	}
	all := string(raw)
	rep := replyFrom(all, code, n)
	if e == nil || !e.used.Load() {
		slot.Store(&cachedReply{key: all, rep: rep})
	} else {
		e.used.Store(false) // a second chance: the next new reply takes the slot
	}
	return rep
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
