// Package pop3mem is a small in-memory POP3 server: RFC 1939 with CAPA
// (RFC 2449), AUTH PLAIN and LOGIN with initial responses (RFC 5034), STLS
// (RFC 2595) and, optionally, a mandatory PROXY protocol header (version 1
// or 2) in front of every connection, as Dovecot's haproxy listeners
// expect.
//
// It stands in for Dovecot as the POP3 backend in postern's tests and runs
// the demo backends of "postern demo". Mailboxes live in memory; a session
// works on a snapshot of its mailbox taken at login, and deletions are
// applied when the client ends the session with QUIT (the UPDATE state).
// Replies follow Dovecot's wording where clients or tests look at it, for
// example "-ERR [AUTH] Authentication failed.".
package pop3mem

import (
	"bytes"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultHostname    = "pop3mem"
	DefaultIdleTimeout = 10 * time.Minute
)

// maxRecords bounds the login and session records a Server keeps; the
// oldest are dropped first.
const maxRecords = 10000

// Options configures a Server. The zero value is a plain POP3 server that
// refuses passwords on connections without TLS.
type Options struct {
	// Hostname is named in the greeting; default "pop3mem".
	Hostname string
	// TLS enables STLS; nil: STLS is not offered.
	TLS *tls.Config
	// RequireProxyHeader makes every connection start with a PROXY
	// protocol header, version 1 (text) or 2 (binary), as with Dovecot's
	// haproxy listeners. The client address it carries is what Logins and
	// Sessions record and what is logged; with the LOCAL command (v2) or
	// UNKNOWN protocol (v1) the peer's own address is used. The header
	// must arrive within 5 seconds; a missing or malformed header closes
	// the connection without a greeting.
	RequireProxyHeader bool
	// AllowPlaintextAuth allows USER/PASS and AUTH on connections without
	// TLS. When false they are refused with "-ERR [AUTH] Plaintext
	// authentication disallowed on non-secure (SSL/TLS) connections."
	// until STLS has completed.
	AllowPlaintextAuth bool
	// Logger receives connection and login events; nil discards them.
	Logger *slog.Logger
	// IdleTimeout bounds the wait for each command line and each reply
	// write; default 10 minutes.
	IdleTimeout time.Duration
}

// LoginRecord is one login attempt as the server saw it.
type LoginRecord struct {
	User   string         // the user name as the client sent it
	Client netip.AddrPort // from the PROXY header, or the peer address
	OK     bool           // the credentials were accepted
	Mech   string         // "USER" (USER/PASS), "PLAIN" or "LOGIN"
	TLS    bool           // the attempt was made after STLS
}

// SessionRecord describes one connection.
type SessionRecord struct {
	Client netip.AddrPort // from the PROXY header, or the peer address
	TLS    bool           // STLS completed
	User   string         // the user logged in as, or "" if none
	Ended  bool           // the connection has closed
}

// Server is an in-memory POP3 server (RFC 1939, CAPA RFC 2449, AUTH
// PLAIN/LOGIN RFC 5034 with initial response, STLS RFC 2595). Safe for
// concurrent use.
type Server struct {
	opts  Options
	log   *slog.Logger
	idle  time.Duration
	epoch uint32 // prefix of unique ids, so ids differ between servers

	mu        sync.Mutex
	users     map[string]*mailbox // key: lower-case user name
	seq       uint64              // last unique-id sequence number
	logins    []LoginRecord
	sessions  []*SessionRecord
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	closed    bool
	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
}

// mailbox is one user's maildrop.
type mailbox struct {
	password string
	msgs     []*message
}

// message is one stored message; it is never modified after it is added,
// so sessions share it without locking.
type message struct {
	uid  string
	data []byte // CRLF line ends, ends with CRLF unless empty
}

// New returns a Server with no users. Start it with Serve.
func New(opts Options) *Server {
	if opts.Hostname == "" {
		opts.Hostname = DefaultHostname
	}
	idle := opts.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		opts:      opts,
		log:       log,
		idle:      idle,
		epoch:     uint32(time.Now().Unix()),
		users:     make(map[string]*mailbox),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[net.Conn]struct{}),
		done:      make(chan struct{}),
	}
}

// AddUser adds a user with an empty mailbox or, if the user exists,
// changes the password and keeps the mailbox. Names are case-insensitive.
func (s *Server) AddUser(name, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(name)
	if mb, ok := s.users[key]; ok {
		mb.password = password
		return
	}
	s.users[key] = &mailbox{password: password}
}

// AddMessage appends a copy of msg to the user's mailbox and gives it a new
// unique id. Line ends are expected to be CRLF: a bare LF becomes CRLF, and
// a message that does not end with a line end gets one, so what RETR sends
// and Messages returns are the same bytes. Sessions already logged in do
// not see the new message.
func (s *Server) AddMessage(user string, msg []byte) error {
	data := normalize(msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, ok := s.users[strings.ToLower(user)]
	if !ok {
		return fmt.Errorf("pop3mem: adding message: no user %q", user)
	}
	s.seq++
	mb.msgs = append(mb.msgs, &message{uid: fmt.Sprintf("%08x%08x", s.epoch, s.seq), data: data})
	return nil
}

// Messages returns copies of the messages now in the user's mailbox, in
// order (as normalized by AddMessage), or nil for an unknown user.
// Deletions show only after the deleting session's QUIT.
func (s *Server) Messages(user string) [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, ok := s.users[strings.ToLower(user)]
	if !ok {
		return nil
	}
	out := make([][]byte, len(mb.msgs))
	for i, m := range mb.msgs {
		out[i] = bytes.Clone(m.data)
	}
	return out
}

// Logins returns the login attempts so far, oldest first (at most the
// latest 10000): every USER/PASS pair and every completed AUTH exchange,
// whether it succeeded or not. Refused plaintext and cancelled exchanges
// carry no credentials and are not recorded.
func (s *Server) Logins() []LoginRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LoginRecord(nil), s.logins...)
}

// Sessions returns the connections so far that passed the PROXY header
// check (if required), oldest first (at most the latest 10000), as they
// are at the time of the call.
func (s *Server) Sessions() []SessionRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]SessionRecord, len(s.sessions))
	for i, r := range s.sessions {
		out[i] = *r
	}
	return out
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Close is called, then returns nil; called after Close, it returns
// nil at once. It closes ln when it returns. If accepting fails for
// another reason (ln closed by someone else), it returns that error;
// temporary accept errors are retried with a backoff. Serve may be called
// for several listeners.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
		s.wg.Done()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.Is(err, net.ErrClosed) || !errors.As(err, &te) || !te.Temporary() {
				return fmt.Errorf("pop3mem: accepting on %s: %w", ln.Addr(), err)
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("pop3mem: accept failed; retrying", "err", err, "delay", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return nil
			}
			continue
		}
		backoff = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.handle(c)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops the server: it closes every listener given to Serve and
// every open connection (sessions end without UPDATE, so their deletions
// are not applied), then waits until Serve and all connection goroutines
// have returned. Calling it again does nothing more.
func (s *Server) Close() error {
	s.mu.Lock()
	var lns []net.Listener
	var conns []net.Conn
	if !s.closed {
		s.closed = true
		close(s.done)
		for ln := range s.listeners {
			lns = append(lns, ln)
		}
		for c := range s.conns {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()

	var errs []error
	for _, ln := range lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("pop3mem: closing listener %s: %w", ln.Addr(), err))
		}
	}
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// handle runs one connection and unregisters it.
func (s *Server) handle(c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	sess := &session{srv: s, raw: c, nc: c}
	sess.run()
	sess.nc.Close() // after STLS, sends the TLS close_notify first
}

// addSession records a new connection and returns its record, which the
// session updates under s.mu.
func (s *Server) addSession(client netip.AddrPort) *SessionRecord {
	r := &SessionRecord{Client: client}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sessions) >= maxRecords {
		s.sessions = append(s.sessions[:0:0], s.sessions[len(s.sessions)-maxRecords+1:]...)
	}
	s.sessions = append(s.sessions, r)
	return r
}

// updateSession applies f to a session record under the lock.
func (s *Server) updateSession(r *SessionRecord, f func(*SessionRecord)) {
	if r == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f(r)
}

// authenticate checks a user's password, records the attempt, and on
// success returns a snapshot of the mailbox's messages.
func (s *Server) authenticate(rec LoginRecord, password string) (msgs []*message, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, found := s.users[strings.ToLower(rec.User)]
	// Compare even for unknown users, against a value that cannot match
	// in length, so both cases do the same work.
	want := "\x00unknown user"
	if found {
		want = mb.password
	}
	rec.OK = found && subtle.ConstantTimeCompare([]byte(password), []byte(want)) == 1
	s.recordLoginLocked(rec)
	if !rec.OK {
		return nil, false
	}
	return append([]*message(nil), mb.msgs...), true
}

// recordLogin records a failed attempt that never reached a password
// check (a malformed SASL PLAIN response, a foreign authorization id).
func (s *Server) recordLogin(rec LoginRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recordLoginLocked(rec)
}

func (s *Server) recordLoginLocked(rec LoginRecord) {
	if len(s.logins) >= maxRecords {
		s.logins = append(s.logins[:0:0], s.logins[len(s.logins)-maxRecords+1:]...)
	}
	s.logins = append(s.logins, rec)
}

// expunge removes the given messages from the user's mailbox. Messages
// already removed by another session are skipped.
func (s *Server) expunge(user string, del map[*message]bool) {
	if len(del) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mb, ok := s.users[strings.ToLower(user)]
	if !ok {
		return
	}
	kept := mb.msgs[:0:0]
	for _, m := range mb.msgs {
		if !del[m] {
			kept = append(kept, m)
		}
	}
	mb.msgs = kept
}

// normalize returns a copy of msg with every bare LF turned into CRLF and
// a final CRLF added if msg is not empty and does not end with one.
func normalize(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+len(msg)/32+2)
	for i, b := range msg {
		if b == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, b)
	}
	switch {
	case len(out) == 0 || bytes.HasSuffix(out, []byte("\r\n")):
	case out[len(out)-1] == '\r':
		out = append(out, '\n')
	default:
		out = append(out, '\r', '\n')
	}
	return out
}
