package smtpproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/spamscan"
)

// Scanning configures spam scanning (S) of SMTP messages.
type Scanning struct {
	Scanner  spamscan.Scanner
	Reject   bool          // refuse a message above the engine's spam_score (else deliver it)
	Timeout  time.Duration // a slower scan is skipped and the message delivered
	MaxSize  int64         // larger messages are not scanned
	SpoolDir string        // "" : the system's temporary directory
	MemLimit int64         // spooled in memory up to this, then in a temporary file
}

// dataScanned receives the whole message into a spool, scans it, and only
// then relays it to the backend: a rejected message never reaches it, and
// the session goes on after an RSET. A scanner that fails or is slow never
// loses or blocks mail: the message is delivered unscanned and the failure
// logged.
func (s *session) dataScanned() error {
	sc := s.p.cfg.Scan
	evloop.MayBlock(s.ctx) // a spool file, and the scanner's answer
	if err := s.reply(newReply(354, "End data with <CR><LF>.<CR><LF>")); err != nil {
		return err
	}
	spool := spamscan.NewSpool(sc.SpoolDir, sc.MemLimit)
	defer spool.Close()
	m := s.newMsg()
	bareLF, err := s.readMessage(m, false, func(chunk []byte, dots []int) error {
		// Dot-unstuff for the scanner: drop the dot that starts a line
		// beginning with a dot.
		from := 0
		for _, d := range dots {
			if _, err := spool.Write(chunk[from:d]); err != nil {
				return err
			}
			from = d + 1
		}
		_, err := spool.Write(chunk[from:])
		return err
	})
	if err != nil {
		return err
	}
	s.gs.MessageDone()
	if bareLF {
		// As when streaming: end the session, so nothing pipelined behind a
		// smuggling attempt is read as a new transaction.
		return s.abortMessage("554 5.5.2 Error: bare <LF> received; lines must end with <CR><LF>", guard.Decision{})
	}
	return s.finishScanned(spool, m)
}

// bdatScanned receives one BDAT chunk into the message's spool; the last
// chunk has the whole message scanned and relayed like DATA.
func (s *session) bdatScanned(m *msgState, n int64, last bool) error {
	if s.spool == nil {
		evloop.MayBlock(s.ctx) // a spool file, and the scanner's answer
		s.spool = spamscan.NewSpool(s.p.cfg.Scan.SpoolDir, s.p.cfg.Scan.MemLimit)
	}
	bufp := dataBufs.Get().(*[]byte)
	defer dataBufs.Put(bufp)
	buf := *bufp
	for left := n; left > 0; {
		s.armRead(s.p.cfg.Timeouts.Data)
		k, err := s.r.Read(buf[:min(int64(len(buf)), left)])
		if k > 0 {
			left -= int64(k)
			if d, text := s.check(m, buf[:k]); text != "" {
				s.dropSpool()
				return s.abortMessage(text, d)
			}
			if m.failed == nil {
				if _, err := s.spool.Write(buf[:k]); err != nil {
					m.failed = err
				}
			}
		}
		if err != nil {
			s.dropSpool()
			return errClosed
		}
	}
	if !last {
		return s.reply(newReply(250, fmt.Sprintf("2.0.0 %d octets received", n)))
	}
	if d, text := s.checkEnd(m); text != "" {
		s.dropSpool()
		return s.abortMessage(text, d)
	}
	spool := s.spool
	s.spool, s.msg = nil, nil
	defer spool.Close()
	s.gs.MessageDone()
	return s.finishScanned(spool, m)
}

func (s *session) dropSpool() {
	if s.spool != nil {
		s.spool.Close()
		s.spool = nil
	}
}

// finishScanned scans a received message and relays it, or refuses it.
func (s *session) finishScanned(spool *spamscan.Spool, m *msgState) error {
	sc := s.p.cfg.Scan
	reset := func() error {
		s.inTx, s.rcpts = false, 0
		if r, err := s.be.cmd("RSET"); err != nil || r.code != 250 {
			return s.backendLost(errors.New("RSET after a refused message failed"))
		}
		return nil
	}
	if m.failed != nil {
		s.log.Error("spooling a message failed", "err", m.failed)
		if err := s.reply(newReply(451, "4.3.0 Error: local error spooling the message; try again later")); err != nil {
			return err
		}
		return reset()
	}
	var d guard.Decision
	if spool.Size() <= sc.MaxSize || sc.MaxSize <= 0 {
		ctx, cancel := context.WithTimeout(s.sessionCtx(), sc.Timeout)
		v, err := sc.Scanner.Scan(ctx, spamscan.Message{Body: spool, Size: spool.Size(), From: s.from, Rcpt: s.rcptList,
			IP: s.client.Addr().Unmap(), Helo: s.helo, User: s.account})
		cancel()
		if err != nil {
			s.log.Warn("spam scanner failed; the message is delivered unscanned", "scanner", sc.Scanner.Name(), "err", err)
		} else {
			s.log.Info("scanned", "score", v.Score, "action", v.Action)
			d = s.gs.SpamScore(v.Score)
			if sc.Reject && s.overThreshold(v.Score) {
				s.p.message(false, 0)
				if err := s.reply(newReply(554, "5.7.1 Error: message rejected as spam")); err != nil {
					return err
				}
				if err := reset(); err != nil {
					return err
				}
				return s.after(d)
			}
		}
	}
	if err := s.forwardSpool(spool); err != nil {
		return err
	}
	return s.after(d)
}

func (s *session) overThreshold(score float64) bool {
	limit := s.p.eng.Settings().SpamScore(s.p.cfg.Service)
	return limit > 0 && score > limit
}

// forwardSpool relays a spooled message: DATA, the message dot-stuffed
// again, the end; the backend's final reply goes to the client.
func (s *session) forwardSpool(spool *spamscan.Spool) error {
	r, err := s.be.cmd("DATA")
	if err != nil {
		return s.tempFail(err)
	}
	rcpts := s.rcpts
	s.inTx, s.rcpts = false, 0
	if r.code != 354 {
		return s.reply(r)
	}
	s.be.armWrite()
	br := bufio.NewReader(io.NewSectionReader(spool, 0, spool.Size()))
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[0] == '.' {
				s.be.w.WriteByte('.')
			}
			s.be.w.Write(line)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: the rest follows without re-stuffing.
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				s.be.w.Write(line)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return s.tempFail(err)
		}
	}
	if n := spool.Size(); n > 0 {
		var lastByte [1]byte
		if _, err := spool.ReadAt(lastByte[:], n-1); err == nil && lastByte[0] != '\n' {
			s.be.w.WriteString("\r\n") // a chunked message need not end with a line end
		}
	}
	s.be.w.WriteString(".\r\n")
	if err := s.be.w.Flush(); err != nil {
		return s.tempFail(err)
	}
	final, err := s.be.read()
	if err != nil {
		return s.tempFail(err)
	}
	s.logMessage(spool.Size(), rcpts, final)
	s.p.message(final.code < 400, spool.Size())
	return s.reply(final)
}
