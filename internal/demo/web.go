package demo

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Webmail paths and form fields, as the demo configuration's login_forms
// entry describes them.
const (
	LoginPath     = "/login"
	UserField     = "user"
	PasswordField = "password"
	// LoginFailedStatus is the webmail's answer to a wrong password.
	LoginFailedStatus = http.StatusUnauthorized
)

// maxWebSessions bounds the webmail's logged-in sessions; the oldest is
// dropped first.
const maxWebSessions = 1000

// webBackend is a tiny webmail: a login form, an inbox and an admin page.
// GET / is the form; POST /login with user and password answers 302 to
// /inbox and a session cookie on success, 401 "Login failed" otherwise;
// /admin is a page postern keeps for the Admins pattern.
type webBackend struct {
	b    *Backends
	srv  *http.Server
	addr netip.AddrPort
	done chan struct{}

	mu       sync.Mutex
	sessions map[string]string // cookie value → user
	order    []string          // cookie values, oldest first
}

func startWeb(b *Backends, ln net.Listener) *webBackend {
	w := &webBackend{b: b, addr: addrPort(ln), done: make(chan struct{}), sessions: make(map[string]string)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", w.form)
	mux.HandleFunc("POST "+LoginPath, w.login)
	mux.HandleFunc("GET /inbox", w.inbox)
	mux.HandleFunc("GET /admin", w.admin)
	mux.HandleFunc("GET /admin/", w.admin)
	w.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	go func() {
		defer close(w.done)
		w.srv.Serve(ln)
	}()
	return w
}

func (w *webBackend) close() error {
	err := w.srv.Close()
	<-w.done
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// client is the address postern put in X-Forwarded-For (its last entry),
// or the peer address.
func client(r *http.Request) netip.Addr {
	if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		parts := strings.Split(xff[len(xff)-1], ",")
		if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-1])); err == nil {
			return a.Unmap()
		}
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>%s — postern demo webmail</title></head>
<body><h1>%s</h1>
%s
<p><small>postern demo webmail; your address as postern passed it on: %s</small></p>
</body></html>
`

func writePage(rw http.ResponseWriter, status int, title, body string, from netip.Addr) {
	rw.Header().Set("Content-Type", "text/html; charset=utf-8")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(status)
	fmt.Fprintf(rw, page, html.EscapeString(title), html.EscapeString(title), body, html.EscapeString(from.String()))
}

const loginForm = `<form method="post" action="` + LoginPath + `">
<p><label>Address <input name="` + UserField + `" autocomplete="username"></label></p>
<p><label>Password <input type="password" name="` + PasswordField + `" autocomplete="current-password"></label></p>
<p><button>Log in</button></p>
</form>`

func (w *webBackend) form(rw http.ResponseWriter, r *http.Request) {
	writePage(rw, http.StatusOK, "Webmail login", loginForm, client(r))
}

func (w *webBackend) login(rw http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(rw, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		writePage(rw, http.StatusBadRequest, "Bad request", "<p>The form could not be read.</p>", client(r))
		return
	}
	user, pass := r.PostForm.Get(UserField), r.PostForm.Get(PasswordField)
	want, known := password(user)
	if !known {
		want = "\x00unknown user"
	}
	ok := known && subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
	w.b.recordLogin(Login{Backend: "web", User: user, Client: client(r), OK: ok})
	if !ok {
		writePage(rw, LoginFailedStatus, "Login failed", "<p>Login failed: wrong address or password.</p>"+loginForm, client(r))
		return
	}
	var raw [16]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	w.mu.Lock()
	if len(w.order) >= maxWebSessions {
		delete(w.sessions, w.order[0])
		w.order = w.order[1:]
	}
	w.sessions[id] = strings.ToLower(user)
	w.order = append(w.order, id)
	w.mu.Unlock()
	http.SetCookie(rw, &http.Cookie{Name: "demo_session", Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(rw, r, "/inbox", http.StatusFound)
}

func (w *webBackend) inbox(rw http.ResponseWriter, r *http.Request) {
	user := ""
	if c, err := r.Cookie("demo_session"); err == nil {
		w.mu.Lock()
		user = w.sessions[c.Value]
		w.mu.Unlock()
	}
	if user == "" {
		http.Redirect(rw, r, "/", http.StatusFound)
		return
	}
	msgs := w.b.pop3.srv.Messages(user)
	var sb strings.Builder
	fmt.Fprintf(&sb, "<p>%d messages for %s:</p><ul>\n", len(msgs), html.EscapeString(user))
	for _, m := range msgs {
		fmt.Fprintf(&sb, "<li>%s</li>\n", html.EscapeString(subject(m)))
	}
	sb.WriteString("</ul>")
	writePage(rw, http.StatusOK, "Inbox", sb.String(), client(r))
}

func (w *webBackend) admin(rw http.ResponseWriter, r *http.Request) {
	writePage(rw, http.StatusOK, "Webmail administration",
		"<p>Only the Admins pattern reaches this page: postern answers 403 to everyone else before the request gets here.</p>", client(r))
}

// subject returns a message's Subject header, or "(no subject)".
func subject(msg []byte) string {
	head, _, _ := strings.Cut(string(msg), "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.EqualFold(name, "Subject") {
			return strings.TrimSpace(value)
		}
	}
	return "(no subject)"
}
