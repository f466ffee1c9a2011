// Package webproxy is postern's web gateway (HTTP) for the web service:
// a reverse proxy (HTTP/1.1 and, over TLS, HTTP/2) in front of one or more
// webmail backends. Each connection is admitted by the intrusion prevention
// engine (service grant/deny, blocked addresses, connections per minute);
// each request is checked against the path rules on its cleaned path before
// the backend sees it. Webmail login forms are recognised per site: the
// account named in the form is checked against the login IP restriction
// before forwarding, and a failure recognised in the backend's answer (a
// status, a redirect or a header) counts as a failed login (L).
package webproxy

import (
	"crypto/tls"
	"fmt"
	"github.com/postern/postern/internal/gate"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
)

// Defaults for the zero values of Config.
const (
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultConnectTimeout = 10 * time.Second
	DefaultBackendTimeout = 60 * time.Second
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxLoginBody   = 64 << 10
	DefaultBodyTimeout    = 30 * time.Second
	DefaultWriteTimeout   = 60 * time.Second
	// DefaultRefusalTime is how long a refused login waits before its
	// answer until the backend has failed a login: Dovecot's default
	// auth_failure_delay, which a webmail in front of Dovecot inherits.
	DefaultRefusalTime = 2 * time.Second
	// maxRefusalTime bounds how long any refused login waits.
	maxRefusalTime = 30 * time.Second
)

// Config is one web service's configuration.
type Config struct {
	Service  service.Service // service.Web
	Backends []*url.URL      // all http or all https; round-robin, failing over when one is down
	// Watch judges and records successful logins (login_alerts); nil: none.
	Watch gate.LoginWatcher
	// TLS, when set, makes the listener HTTPS (HTTP/2 offered by ALPN).
	TLS *tls.Config
	// BackendTLS is the client configuration for https backends (nil:
	// verify with the system roots).
	BackendTLS *tls.Config
	LoginForms []LoginForm
	// Trusted reports the trusted upstreams (their PROXY header gives the
	// client address). Forwarding headers are dropped from them as from
	// anyone: the backend hears the client address from postern only.
	Trusted func(netip.Addr) bool

	HeaderTimeout  time.Duration // to send the request line and headers (slowloris)
	IdleTimeout    time.Duration // a keep-alive connection between requests
	ConnectTimeout time.Duration // connecting to a backend
	BackendTimeout time.Duration // waiting for a backend's response headers
	BodyTimeout    time.Duration // a request body that stops moving (each read), and a login form's whole body
	WriteTimeout   time.Duration // a client that stops reading the response (each write)
	MaxHeaderBytes int           // request line and headers
	MaxLoginBody   int64         // bytes of a login request read to find the account
	// RefusalTime is how long a login refused by the login IP
	// restriction waits before its answer while no backend failure time
	// is known (0: DefaultRefusalTime; negative: no wait until then).
	// Once the backend has failed logins, a refusal waits as long as one
	// of the recent failures took (a random draw).
	RefusalTime time.Duration

	// Relayed, when set, is told the bytes written to (toBackend) and
	// read from (toClient) the backend connections, as they move: the
	// requests and responses the proxy relays (with an https backend, as
	// TLS records). It must be cheap and must not block.
	Relayed func(toBackend, toClient int64)
	// HandshakeFailed, when set, is told each TLS handshake with a client
	// that failed (one net/http logs as "TLS handshake error").
	HandshakeFailed func()
}

func (c *Config) defaults() {
	if c.Service == 0 {
		c.Service = service.Web
	}
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&c.HeaderTimeout, DefaultHeaderTimeout)
	set(&c.IdleTimeout, DefaultIdleTimeout)
	set(&c.ConnectTimeout, DefaultConnectTimeout)
	set(&c.BackendTimeout, DefaultBackendTimeout)
	set(&c.BodyTimeout, DefaultBodyTimeout)
	set(&c.WriteTimeout, DefaultWriteTimeout)
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxLoginBody <= 0 {
		c.MaxLoginBody = DefaultMaxLoginBody
	}
	if c.RefusalTime == 0 {
		c.RefusalTime = DefaultRefusalTime
	}
}

// LoginForm recognises one webmail login form: a request with Method on
// one of Paths is read (query, cookies, body) the way the application reads
// it; it is a login attempt when it carries one of Params (from any of
// them), or the user field, or when Params is empty. A request on those
// paths that cannot be read with certainty is refused.
type LoginForm struct {
	Method string     // POST, PUT, PATCH or GET
	Path   string     // the first of Paths, for logs
	Paths  []FormPath // compared with the request's cleaned path, ignoring case
	Params url.Values // identifying parameters ("_action=login"); any one, from query, body or cookie
	// MaxBody is the most of a body read (0: the service's MaxLoginBody);
	// a request on the form's paths with a longer body is refused (413).
	MaxBody int64

	UserField     string // form field naming the account
	PasswordField string // optional, for the wrong-password fingerprint

	// A backend answer is a failure when it matches any that is set.
	FailStatus         int
	FailRedirect       string // prefix of Location
	FailHeader         string // canonical header name
	FailHeaderContains string // text the header's value must contain ("": present)
}

// FormPath is one path of a login form: a cleaned path, or with Below
// also every path under it ("/index.php/*": PATH_INFO).
type FormPath struct {
	Path  string
	Below bool
}

// matches reports whether a cleaned request path is this one.
func (f FormPath) matches(clean string) bool {
	if strings.EqualFold(clean, f.Path) {
		return true
	}
	if !f.Below || len(clean) <= len(f.Path) {
		return false
	}
	prefix := f.Path
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return len(clean) >= len(prefix) && strings.EqualFold(clean[:len(prefix)], prefix)
}

// newFormPath cleans a configured path; a trailing "/*" covers the paths
// below.
func newFormPath(p string) FormPath {
	below := strings.HasSuffix(p, "/*")
	if below {
		p = strings.TrimSuffix(p, "/*")
	}
	return FormPath{Path: policy.CleanPath(p), Below: below}
}

// FromConfig builds the gateway configuration of a web service. serverTLS
// is the listener's TLS configuration (nil for plain HTTP).
func FromConfig(svc *config.Service, serverTLS *tls.Config) (Config, error) {
	w := svc.Web
	if w == nil {
		return Config{}, fmt.Errorf("service %s is not the web service", svc.Name)
	}
	c := Config{
		Service:        service.Web,
		TLS:            serverTLS,
		HeaderTimeout:  w.Timeouts.Command.D,
		IdleTimeout:    w.Timeouts.Idle.D,
		ConnectTimeout: w.Timeouts.Connect.D,
		BackendTimeout: w.Timeouts.Backend.D,
	}
	for _, b := range svc.WebBackends() {
		u, err := url.Parse(b)
		if err != nil {
			return c, fmt.Errorf("web backend %q: %w", b, err)
		}
		c.Backends = append(c.Backends, u)
	}
	if !svc.BackendTLSVerify {
		c.BackendTLS = &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	for i := range w.LoginForms {
		lf := &w.LoginForms[i]
		paths, params := lf.FormRoutes()
		var fps []FormPath
		for _, p := range paths {
			fps = append(fps, newFormPath(p))
		}
		name, contains := lf.FailHeaderMatch()
		if !lf.FailHeader.IsSet() {
			name = ""
		}
		first := ""
		if len(fps) > 0 {
			first = fps[0].Path
		}
		c.LoginForms = append(c.LoginForms, LoginForm{
			Method: strings.ToUpper(lf.Method.Value), Path: first, Paths: fps, Params: params, MaxBody: lf.MaxBody.Bytes,
			UserField: lf.UserField.Value, PasswordField: lf.PasswordField.Value,
			FailStatus: lf.FailStatus, FailRedirect: lf.FailRedirect.Value,
			FailHeader: name, FailHeaderContains: contains,
		})
	}
	return c, c.check()
}

func (c *Config) check() error {
	if len(c.Backends) == 0 {
		return fmt.Errorf("webproxy: no backend")
	}
	scheme := c.Backends[0].Scheme
	for _, u := range c.Backends {
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("webproxy: bad backend %q: want http://host:port or https://host:port", u)
		}
		if u.Scheme != scheme {
			return fmt.Errorf("webproxy: backends must all be http or all https")
		}
	}
	for i := range c.LoginForms {
		f := &c.LoginForms[i]
		if len(f.Paths) == 0 && f.Path != "" {
			f.Paths = []FormPath{newFormPath(f.Path)}
		}
		if f.UserField == "" || len(f.Paths) == 0 {
			return fmt.Errorf("webproxy: login form %q needs a path and a user field", f.Path)
		}
		for _, p := range f.Paths {
			if !strings.HasPrefix(p.Path, "/") {
				return fmt.Errorf("webproxy: login form path %q does not start with /", p.Path)
			}
		}
		if f.FailStatus == 0 && f.FailRedirect == "" && f.FailHeader == "" {
			return fmt.Errorf("webproxy: login form %s needs a failure match", f.Path)
		}
	}
	return nil
}
