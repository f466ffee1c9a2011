// Package console is postern's web console: server-rendered pages for the
// Blocked IPs queue (with live updates over Server-Sent Events), explain,
// the audit log, the configuration and a dashboard, for the users of a
// users file (argon2id hashes) or the holder of the admin API token.
//
// It changes nothing itself: every change goes through internal/admin's
// operations (and so through its self-lockout guard) to the engine.
// Sign-ins are login attempts the engine counts like any other: a run of
// wrong passwords blocks the address (L).
package console

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Timeouts of the HTTP server and sessions.
const (
	readHeaderTimeout  = 10 * time.Second
	readTimeout        = 30 * time.Second
	writeTimeout       = time.Minute // each answer but the live feed
	idleTimeout        = 2 * time.Minute
	shutdownTimeout    = 5 * time.Second
	maxHeaderBytes     = 16 << 10
	maxFormBytes       = 64 << 10
	maxImportBytes     = 16 << 20
	DefaultIdleTimeout = 30 * time.Minute // a session unused this long is signed out
	maxSessions        = 1000
	eventPoll          = time.Second      // how often the live feed looks for new blocks
	pingEvery          = 30 * time.Second // a comment line keeps idle feeds open through proxies
	eventLifetime      = 10 * time.Minute
)

// LoginService is the service a console sign-in is counted on by the
// engine: service "console", of the web protocol group, so its failed
// sign-ins are failed logins (L) under intrusion_prevention.web (or, with
// that off, guard.DefaultConsoleFailedLogins of them block), with the
// account "console:USER", and a block made from them names the console.
const LoginService = service.Console

// Engine is what the console needs of the intrusion-prevention engine:
// the administration API's operations, and sessions to count sign-ins as
// logins. *guard.Engine satisfies it.
type Engine interface {
	admin.Engine
	// Open starts a session for a connection from addr (no access check:
	// the console checks its own grant).
	Open(addr netip.Addr, svc service.Service, closer func()) (*guard.Session, guard.Decision)
	// BlockOf returns the block holding addr, if any.
	BlockOf(addr netip.Addr) (store.Block, bool)
	// PasswordFingerprint fingerprints a wrong password, so a client
	// repeating the same one is counted once.
	PasswordFingerprint(account, password string) uint64
}

// Listener is the state of one service's listener for the dashboard.
type Listener struct {
	Service string
	Listen  string
	Up      bool
	Detail  string // e.g. the error of a failed bind, or the backend
}

// Stats gives the dashboard what the gateway knows beyond the engine.
type Stats interface {
	Listeners() []Listener
}

// ServiceTraffic is one service's traffic over the last minute (or since
// start, when that is shorter): the counts in the window and their rates
// per second.
type ServiceTraffic struct {
	Service          string  `json:"service"`
	Window           float64 `json:"window_seconds"` // the span counted
	Connections      uint64  `json:"connections"`    // admitted by the gate
	LoginsOK         uint64  `json:"logins_ok"`
	LoginsFailed     uint64  `json:"logins_failed"` // refused by the backend or the login IP restriction
	ConnectionsPerS  float64 `json:"connections_per_second"`
	LoginsOKPerS     float64 `json:"logins_ok_per_second"`
	LoginsFailedPerS float64 `json:"logins_failed_per_second"`
}

// Traffic gives the dashboard each service's connections and logins per
// second.
type Traffic interface {
	Traffic() []ServiceTraffic
}

// ConfigInfo is the running configuration as the Configuration page shows
// it.
type ConfigInfo struct {
	Path     string
	LoadedAt time.Time
	Text     string // the file's content
}

// Options configure a Server.
type Options struct {
	Engine  Engine
	Explain admin.Explainer // nil: the Explain page says it is not available
	// Token is the admin API token; it signs in as user "token". Empty:
	// only users of UsersFile sign in.
	Token string
	// UsersFile is read at each sign-in, so changes apply at once.
	UsersFile string
	// Grant says which client addresses may use the console; nil:
	// loopback only.
	Grant func(netip.Addr) bool
	// TLS, when set, serves HTTPS and marks the cookie Secure.
	TLS         *tls.Config
	IdleTimeout time.Duration // 0: DefaultIdleTimeout
	// Reload reloads the configuration (the button of the Configuration
	// page); nil hides the button.
	Reload func() error
	// Config describes the running configuration; nil: not shown.
	Config func() ConfigInfo
	Stats  Stats // nil: no listener states
	// Traffic is each service's connections and logins per second; nil:
	// not shown.
	Traffic Traffic
	// Country names the country of an address from the GeoIP databases
	// (two letters; "" unknown); nil: no countries shown.
	Country func(netip.Addr) string
	// Passes are the travel passes of the Passes page; nil: not
	// available.
	Passes admin.PassManager
	Log    *slog.Logger
}

// Server is the web console. It is safe for concurrent use.
type Server struct {
	opts  Options
	log   *slog.Logger
	tmpl  map[string]*template.Template
	mux   *http.ServeMux
	mu    sync.Mutex
	sess  map[string]*session
	reqWG sync.WaitGroup
	feed  feed
}

// New returns a console for opts.
func New(opts Options) (*Server, error) {
	if opts.Engine == nil {
		return nil, errors.New("console: no engine")
	}
	if opts.Grant == nil {
		opts.Grant = netip.Addr.IsLoopback
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Log, sess: map[string]*session{}}
	var err error
	if s.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	s.feed = feed{version: s.version, every: eventPoll}
	s.mux = s.routes()
	return s, nil
}

func parseTemplates() (map[string]*template.Template, error) {
	base, err := template.New("base").Funcs(funcs).ParseFS(templateFS, "templates/base.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		if p == "templates/base.html" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, p)
		if err != nil {
			return nil, fmt.Errorf("console: templates: %w", err)
		}
		out[p[len("templates/"):len(p)-len(".html")]] = t
	}
	return out, nil
}

// Handler returns the console's HTTP handler. The client address is read
// from the request's RemoteAddr.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Listen binds addr (host:port) for Serve.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("console: listen %s: %w", addr, err)
	}
	return ln, nil
}

// Serve serves the console on ln until ctx is done, then shuts down
// within a few seconds (live feeds are ended) and closes ln. It returns
// nil after a shutdown asked for by ctx.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ln = admin.GrantListener(ln, s.opts.Grant, s.log, "console")
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("console listening", "addr", ln.Addr().String(), "tls", s.opts.TLS != nil)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-done:
		return fmt.Errorf("console: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	err = <-done
	s.reqWG.Wait()
	s.feed.wait()
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("console: %w", err)
	}
	s.log.Info("console stopped")
	return nil
}
