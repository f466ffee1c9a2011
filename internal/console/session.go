package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/netip"
	"time"
)

// session is one signed-in user.
type session struct {
	id    string
	user  string
	csrf  string
	addr  netip.Addr
	last  time.Time
	flash string // a message for the next page
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	return hex.EncodeToString(b)
}

// cookieName is the session cookie's name: with TLS the __Host- prefix,
// which browsers accept only on a Secure cookie of this very host and
// path /.
func (s *Server) cookieName() string {
	if s.opts.TLS != nil {
		return "__Host-postern-console"
	}
	return "postern-console"
}

func (s *Server) preCookieName() string {
	if s.opts.TLS != nil {
		return "__Host-postern-signin"
	}
	return "postern-signin"
}

func (s *Server) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		Secure:   s.opts.TLS != nil,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
}

// newSession signs user in from addr and sets the cookie.
func (s *Server) newSession(w http.ResponseWriter, user string, addr netip.Addr) {
	now := s.opts.Engine.Now()
	ss := &session{id: randomToken(), user: user, csrf: randomToken(), addr: addr, last: now}
	s.mu.Lock()
	for id, o := range s.sess {
		if now.Sub(o.last) > s.opts.IdleTimeout {
			delete(s.sess, id)
		}
	}
	if len(s.sess) >= maxSessions { // drop the least recently used
		var oldest *session
		for _, o := range s.sess {
			if oldest == nil || o.last.Before(oldest.last) {
				oldest = o
			}
		}
		delete(s.sess, oldest.id)
	}
	s.sess[ss.id] = ss
	s.mu.Unlock()
	s.setCookie(w, s.cookieName(), ss.id, 0)
}

// sessionOf returns the request's live session (touching it), or nil.
// A session is bound to the address it signed in from.
func (s *Server) sessionOf(r *http.Request, addr netip.Addr) *session {
	c, err := r.Cookie(s.cookieName())
	if err != nil || c.Value == "" {
		return nil
	}
	now := s.opts.Engine.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.sess[c.Value]
	if ss == nil {
		return nil
	}
	if now.Sub(ss.last) > s.opts.IdleTimeout || ss.addr != addr {
		delete(s.sess, ss.id)
		return nil
	}
	ss.last = now
	return ss
}

func (s *Server) endSession(w http.ResponseWriter, ss *session) {
	s.mu.Lock()
	delete(s.sess, ss.id)
	s.mu.Unlock()
	s.setCookie(w, s.cookieName(), "", -1)
}

// takeFlash returns and clears the session's message.
func (s *Server) takeFlash(ss *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := ss.flash
	ss.flash = ""
	return f
}

func (s *Server) setFlash(ss *session, msg string) {
	s.mu.Lock()
	ss.flash = msg
	s.mu.Unlock()
}

// csrfOK checks the form's (or the X-CSRF-Token header's) token against
// want in constant time.
func csrfOK(r *http.Request, want string) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		got = r.PostFormValue("csrf")
	}
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}
