package spamscan

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultSpamdTimeout bounds one spamd scan when NewSpamd gets 0.
const DefaultSpamdTimeout = 30 * time.Second

// Spamd scans messages with SpamAssassin's spamd over its own protocol
// (SYMBOLS SPAMC/1.5). Safe for concurrent use.
type Spamd struct {
	addr    string
	timeout time.Duration
}

// NewSpamd returns a Scanner for the spamd at addr ("host:port"). Each scan
// is bounded by timeout (0: DefaultSpamdTimeout). Its verdict has Score and
// Threshold from spamd's "Spam: True ; 15.3 / 5.0" header, Symbols from the
// answer's comma-separated list (capped at MaxSymbols by name, since spamd
// gives no per-rule scores) and no Action.
func NewSpamd(addr string, timeout time.Duration) *Spamd {
	if timeout <= 0 {
		timeout = DefaultSpamdTimeout
	}
	return &Spamd{addr: addr, timeout: timeout}
}

// Name returns "spamd".
func (s *Spamd) Name() string { return "spamd" }

// Scan sends msg to spamd and returns its verdict.
func (s *Spamd) Scan(ctx context.Context, msg Message) (Verdict, error) {
	if msg.Body == nil || msg.Size < 0 {
		return Verdict{}, errors.New("spamd: message has no body or a negative size")
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return Verdict{}, fmt.Errorf("spamd: %w", err)
	}
	defer conn.Close()
	// The end of ctx (its timeout included) unblocks reads and writes at
	// once; ctx.Err is set by then, so the error says why.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	v, err := s.exchange(conn, msg)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return Verdict{}, fmt.Errorf("spamd %s: %w", s.addr, err)
	}
	return v, nil
}

func (s *Spamd) exchange(conn net.Conn, msg Message) (Verdict, error) {
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n", msg.Size)
	if _, err := io.Copy(w, io.NewSectionReader(msg.Body, 0, msg.Size)); err != nil {
		return Verdict{}, fmt.Errorf("sending the message: %w", err)
	}
	if err := w.Flush(); err != nil {
		return Verdict{}, fmt.Errorf("sending the message: %w", err)
	}
	if tc, ok := conn.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite() // spamc does this too; an error shows in the read
	}

	r := bufio.NewReaderSize(conn, 4096)
	line, err := readLine(r)
	if err != nil {
		return Verdict{}, fmt.Errorf("reading the answer: %w", err)
	}
	// SPAMD/1.1 0 EX_OK
	f := strings.SplitN(line, " ", 3)
	if len(f) < 2 || !strings.HasPrefix(f[0], "SPAMD/") {
		return Verdict{}, fmt.Errorf("bad status line %q", line)
	}
	if f[1] != "0" {
		return Verdict{}, fmt.Errorf("error answer %q", line)
	}
	var v Verdict
	haveSpam, length := false, int64(-1)
	for i := 0; ; i++ {
		line, err := readLine(r)
		if err != nil {
			return Verdict{}, fmt.Errorf("reading the answer: %w", err)
		}
		if line == "" {
			break
		}
		if i == 100 {
			return Verdict{}, errors.New("too many header lines in the answer")
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "spam":
			// True ; 15.3 / 5.0
			_, scores, ok1 := strings.Cut(value, ";")
			score, threshold, ok2 := strings.Cut(scores, "/")
			var err1, err2 error
			v.Score, err1 = strconv.ParseFloat(strings.TrimSpace(score), 64)
			v.Threshold, err2 = strconv.ParseFloat(strings.TrimSpace(threshold), 64)
			if !ok1 || !ok2 || err1 != nil || err2 != nil {
				return Verdict{}, fmt.Errorf("bad Spam header %q", value)
			}
			haveSpam = true
		case "content-length":
			if length, err = strconv.ParseInt(value, 10, 64); err != nil || length < 0 {
				return Verdict{}, fmt.Errorf("bad Content-length %q", value)
			}
		}
	}
	if !haveSpam {
		return Verdict{}, errors.New("answer without a Spam header")
	}
	const maxBody = 64 << 10
	if length < 0 || length > maxBody {
		length = maxBody
	}
	body, err := io.ReadAll(io.LimitReader(r, length))
	if err != nil {
		return Verdict{}, fmt.Errorf("reading the symbols: %w", err)
	}
	var syms []symbolScore
	for name := range bytes.SplitSeq(body, []byte(",")) {
		if name = bytes.TrimSpace(name); len(name) > 0 {
			syms = append(syms, symbolScore{name: string(name)})
		}
	}
	v.Symbols = topSymbols(syms)
	return v, nil
}

// readLine reads one CRLF- or LF-terminated line of at most 4 KiB.
func readLine(r *bufio.Reader) (string, error) {
	b, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("line too long")
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
