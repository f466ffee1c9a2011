package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Timeouts and limits of the HTTP server.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 5 * time.Minute // an import of up to maxImportBytes
	writeTimeout      = 5 * time.Minute // an export
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
	shutdownTimeout   = 10 * time.Second

	maxBodyBytes   = 64 << 10  // request bodies but imports
	maxImportBytes = 256 << 20 // imports, decoded as they stream in
)

// Server serves the administration API. Create it with NewServer; it is
// safe for concurrent use.
type Server struct {
	eng       Engine
	explain   Explainer
	tokenHash [sha256.Size]byte
	hasToken  bool
	log       *slog.Logger
	grant     func(netip.Addr) bool
	mux       *http.ServeMux // the routes, behind the grant and token checks
	status    atomic.Pointer[StatusSource]
	passes    atomic.Pointer[PassManager]
}

// NewServer returns a server for eng. explain may be nil (GET /v1/explain
// then answers 501). Every request must carry token as a bearer token; an
// empty token refuses every request. grant says which client addresses
// may connect to a TCP listener; nil allows loopback only. log may be nil.
func NewServer(eng Engine, explain Explainer, token string, log *slog.Logger, grant func(netip.Addr) bool) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if grant == nil {
		grant = netip.Addr.IsLoopback
	}
	s := &Server{
		eng:       eng,
		explain:   explain,
		tokenHash: sha256.Sum256([]byte(token)),
		hasToken:  token != "",
		log:       log,
		grant:     grant,
	}
	s.mux = s.newMux()
	return s
}

// Handler returns the API's HTTP handler. Mounted elsewhere than through
// Serve, it tells TCP clients (actor ActorTCP, self-lockout guard, grant
// check) from unix-socket ones by the request's RemoteAddr; without the
// connection it cannot read peer credentials, so their actor is ActorUnix.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve listens on listen ("unix:/path" or "tcp:host:port", see Listen)
// and serves the API until ctx is done, then shuts down gracefully. It
// returns nil after a shutdown asked for by ctx.
func (s *Server) Serve(ctx context.Context, listen string) error {
	ln, err := s.Listen(ctx, listen)
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves the API on ln (from Listen) until ctx is done, then
// stops accepting, lets requests in progress finish for a bounded time,
// and closes ln. It returns nil after a shutdown asked for by ctx.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	var track inflight
	srv := &http.Server{
		Handler:           track.wrap(s.Handler()),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// Requests outlive ctx by the shutdown grace period: a block being
		// written is finished, not cancelled.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, peerOfConn(c))
		},
	}
	s.log.Info("admin API listening", "addr", ln.Addr().Network()+":"+ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var err error
	stopped := false
	select {
	case err = <-done: // the listener failed; Serve closed it
		stopped = true
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		s.log.Warn("admin API: requests still running at shutdown; closing them", "err", serr)
		srv.Close()
	}
	if !stopped {
		err = <-done
	}
	track.wait() // no handler outlives ServeListener
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin API: %w", err)
	}
	s.log.Info("admin API stopped")
	return nil
}

// inflight counts running handlers so ServeListener can wait for them.
type inflight struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (t *inflight) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			writeError(w, http.StatusServiceUnavailable, "shutting down")
			return
		}
		t.wg.Add(1)
		t.mu.Unlock()
		defer t.wg.Done()
		h.ServeHTTP(w, r)
	})
}

func (t *inflight) wait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}

// peer is who is at the other end of a connection.
type peer struct {
	tcp  bool
	addr netip.Addr // TCP only
	user string     // unix socket only: the OS user, from the peer credentials
}

type connKey struct{}

func peerOf(a net.Addr) peer {
	if ip, ok := remoteAddr(a); ok {
		return peer{tcp: true, addr: ip}
	}
	return peer{}
}

// peerOfConn is peerOf with, for a unix socket, the OS user at the other
// end as the kernel recorded it when the client connected.
func peerOfConn(c net.Conn) peer {
	p := peerOf(c.RemoteAddr())
	if uc, ok := c.(*net.UnixConn); ok {
		p.user = peerUser(uc)
	}
	return p
}

// userName names the user with this uid: its login name, else "uid N".
func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid " + id
}

// requestPeer finds the peer of a request: from the connection when the
// request came through ServeListener, else from RemoteAddr.
func requestPeer(r *http.Request) peer {
	if p, ok := r.Context().Value(connKey{}).(peer); ok {
		return p
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return peer{tcp: true, addr: ap.Addr().Unmap().WithZone("")}
	}
	return peer{}
}

func (p peer) actor() string {
	switch {
	case p.tcp:
		return ActorTCP
	case p.user != "":
		return p.user
	}
	return ActorUnix
}

func (p peer) String() string {
	if p.tcp {
		return p.addr.String()
	}
	return "unix"
}

// authorized checks the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) == 1 && s.hasToken
}
