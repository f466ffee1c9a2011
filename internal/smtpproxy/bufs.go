package smtpproxy

import (
	"bufio"
	"io"
	"sync"
)

// bufSize is the size of the buffered reader of backend replies and of
// the buffered writers to the client and to the backend.
const bufSize = 4096

// bufPools keeps the buffers of ended sessions for the next ones: a
// session needs four (about 14 KiB), and a gateway that allocated them
// afresh for every connection would spend a good part of its time per
// message in the garbage collector. A buffer goes back only once its
// session ended and nothing can use it any more.
type bufPools struct {
	lineSize int       // the client command reader's size: the longest line and its CRLF
	lines    sync.Pool // *bufio.Reader of lineSize: client commands
	replies  sync.Pool // *bufio.Reader of bufSize: backend replies
	writers  sync.Pool // *bufio.Writer of bufSize: to the client and to the backend
}

func (b *bufPools) lineReader(r io.Reader) *bufio.Reader {
	if br, ok := b.lines.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, b.lineSize)
}

func (b *bufPools) replyReader(r io.Reader) *bufio.Reader {
	if br, ok := b.replies.Get().(*bufio.Reader); ok {
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, bufSize)
}

func (b *bufPools) writer(w io.Writer) *bufio.Writer {
	if bw, ok := b.writers.Get().(*bufio.Writer); ok {
		bw.Reset(w)
		return bw
	}
	return bufio.NewWriterSize(w, bufSize)
}

// put returns a session's buffers (any of them nil: skipped); the
// caller drops its references to them.
func (b *bufPools) put(line, reply *bufio.Reader, ws ...*bufio.Writer) {
	if line != nil {
		line.Reset(nil)
		b.lines.Put(line)
	}
	if reply != nil {
		reply.Reset(nil)
		b.replies.Put(reply)
	}
	for _, w := range ws {
		if w != nil {
			w.Reset(nil)
			b.writers.Put(w)
		}
	}
}

// sessionStack makes growStack's frame need an 8 KiB stack: what a session
// reaches while dialing the backend and relaying EHLO, and what an idle
// session keeps (a larger one would cost every idle connection memory).
const sessionStack = 5 << 10

// growStack grows a new session goroutine's stack at once to about what
// the session will use. A goroutine starts with a small stack that the
// runtime doubles, copying it, each time a call needs more; a session
// otherwise grows it twice deep inside the dialer, where each copy has
// many frames to adjust. Here the stack is shallow and one copy suffices.
//
//go:noinline
func growStack(i int) byte {
	var b [sessionStack]byte
	b[i%len(b)] = byte(i)
	return b[(i*7)%len(b)]
}
