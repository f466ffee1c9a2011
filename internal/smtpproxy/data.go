package smtpproxy

import (
	"strconv"
	"time"

	"github.com/postern/postern/internal/ascii"
	"github.com/postern/postern/internal/guard"
)

// msgState follows one message as it streams through: its size, whether
// it is still being forwarded, and the content rules.
type msgState struct {
	size   int64
	insp   *inspector
	failed error // the backend failed mid-message
}

func (s *session) newMsg() *msgState {
	m := &msgState{}
	if len(s.p.cfg.ContentRules) > 0 {
		m.insp = &inspector{rules: s.p.cfg.ContentRules}
	}
	return m
}

// check counts n more bytes of the message and checks them; it reports
// a decision that ends the session (M or C), if any.
func (s *session) check(m *msgState, chunk []byte) (guard.Decision, string) {
	m.size += int64(len(chunk))
	if d := s.gs.MessageSize(m.size); d.Action == guard.Close {
		return d, "552 5.3.4 Error: message too big; connection closed"
	}
	if m.insp != nil {
		if rule := m.insp.feed(chunk); rule != "" {
			s.log.Info("content rule matched", "rule", rule)
			// The message is refused and, mid-stream, the connection closed.
			if d := s.gs.ContentRule(rule); d.Reject {
				return d, "554 5.7.1 Error: message content rejected"
			}
		}
	}
	return guard.Decision{}, ""
}

// abortMessage ends a session mid-message: the backend connection is
// closed (so it discards the partial message), the client gets text and is
// closed.
func (s *session) abortMessage(text string, d guard.Decision) error {
	s.p.message(false, 0)
	s.be.close()
	if d.Blocked {
		s.log.Info("message stopped and connection closed", "reason", d.Reason.String(), "reply", text)
	}
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	s.wd.forget()
	s.w.WriteString(text + "\r\n")
	s.w.Flush()
	return errClosed
}

// data relays DATA: the message streams to the backend as it arrives; the
// client's final reply is the backend's own.
func (s *session) data(c command) error {
	if len(c.args) > 0 {
		return s.reply(newReply(501, "5.5.4 Syntax: DATA"))
	}
	if s.p.cfg.Scan.Scanner != nil && s.inTx && s.rcpts > 0 {
		return s.dataScanned()
	}
	r, err := s.be.cmd("DATA")
	if err != nil {
		return s.backendLost(err)
	}
	if r.code != 354 {
		return s.reply(r)
	}
	if err := s.reply(r); err != nil {
		return err
	}
	m := s.newMsg()
	bareLF, err := s.readMessage(m, true, func(chunk []byte, _ []int) error {
		s.be.armWrite()
		_, err := s.be.w.Write(chunk)
		return err
	})
	if err != nil {
		s.be.close()
		return err
	}
	rcpts := s.rcpts
	s.inTx, s.rcpts = false, 0
	s.gs.MessageDone()
	if bareLF {
		return s.abortMessage("554 5.5.2 Error: bare <LF> received; lines must end with <CR><LF>", guard.Decision{})
	}
	if m.failed != nil {
		return s.tempFail(m.failed)
	}
	// The end line went with the last chunk; what is buffered goes out
	// with the first read of the final reply.
	final, err := s.be.flushRead()
	if err != nil {
		return s.tempFail(err)
	}
	s.logMessage(m.size, rcpts, final)
	s.p.message(final.code < 400, m.size)
	return s.reply(final)
}

// tempFail answers a message the backend failed to take with a temporary
// error, so the client keeps it and retries, and ends the session.
func (s *session) tempFail(err error) error {
	s.p.message(false, 0)
	s.log.Error("backend failed during the message; the client will retry", "err", err)
	s.be.close()
	s.reply(newReply(451, "4.3.0 Error: the mail server failed, message not accepted; try again later"))
	return errClosed
}

// bdat relays one BDAT chunk (CHUNKING) byte for byte.
func (s *session) bdat(c command) error {
	f := c.args
	n, err := int64(0), error(nil)
	if len(f) >= 1 {
		// Digits only, as the server reads a size: "+5" or "0x5" would be
		// a size to postern and a syntax error to the server, which would
		// then read the chunk's bytes as commands.
		if !allDigits(f[0]) || len(f[0]) > 18 {
			err = errBadSyntax
		} else {
			n, err = strconv.ParseInt(f[0], 10, 64)
		}
	}
	last := len(f) == 2 && ascii.EqualFold(f[1], "LAST")
	if len(f) == 0 || len(f) > 2 || err != nil || n < 0 || len(f) == 2 && !last {
		// The chunk's length is unknown, so its bytes cannot be skipped.
		s.reply(newReply(501, "5.5.4 Syntax: BDAT size [LAST]"))
		return errClosed
	}
	if s.msg == nil {
		s.msg = s.newMsg()
	}
	m := s.msg
	if s.p.cfg.Scan.Scanner != nil {
		return s.bdatScanned(m, n, last)
	}
	if last && n == 0 {
		if d, text := s.checkEnd(m); text != "" {
			return s.abortMessage(text, d)
		}
	}
	cmd := "BDAT " + strconv.FormatInt(n, 10)
	if last {
		cmd += " LAST"
	}
	if err := s.be.send(cmd); err != nil {
		m.failed = err
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
				return s.abortMessage(text, d)
			}
			if left == 0 && last {
				// The end of the message: checked before its last bytes go.
				if d, text := s.checkEnd(m); text != "" {
					return s.abortMessage(text, d)
				}
			}
			if m.failed == nil {
				s.be.armWrite()
				if _, err := s.be.w.Write(buf[:k]); err != nil {
					m.failed = err
				}
			}
		}
		if err != nil {
			s.be.close()
			return errClosed
		}
	}
	if m.failed == nil {
		if err := s.be.w.Flush(); err != nil {
			m.failed = err
		}
	}
	if m.failed != nil {
		return s.tempFail(m.failed)
	}
	r, err := s.be.read()
	if err != nil {
		return s.tempFail(err)
	}
	if last || r.code >= 400 {
		s.logMessage(m.size, s.rcpts, r)
		s.p.message(r.code < 400, m.size)
		s.msg = nil
		if last {
			s.inTx, s.rcpts = false, 0
			s.gs.MessageDone()
		}
	}
	return s.reply(r)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
