package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerOptions configure the metrics listener's HTTP server.
type ServerOptions struct {
	// Grant says which client addresses may connect; nil: loopback only.
	// It is called for every request, so a reload may change it.
	Grant func(netip.Addr) bool
	// Ready reports why the gateway is not ready to serve (nil: ready),
	// for /readyz.
	Ready func() error
	// Log receives errors; nil: discard.
	Log *slog.Logger
}

// ScrapeTimeout bounds one scrape.
const ScrapeTimeout = 10 * time.Second

// Handler serves /metrics (the Prometheus text format), /healthz (200
// while the process serves HTTP at all) and /readyz (200 when Ready says
// so, else 503 with the reason), each to granted addresses only (403 to
// others).
func (m *Metrics) Handler(o ServerOptions) http.Handler {
	grant := o.Grant
	if grant == nil {
		grant = netip.Addr.IsLoopback
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       ScrapeTimeout,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if o.Ready != nil {
			if err := o.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, "not ready:", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil || !addrOK(grant, ap.Addr()) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Server is the metrics listener's HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr (host:port) for the metrics listener; Serve serves it.
// Binding comes first so that it can happen before privileges drop.
func (m *Metrics) Listen(ctx context.Context, addr string, o ServerOptions) (*Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{ln: ln, srv: &http.Server{
		Handler:           m.Handler(o),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      ScrapeTimeout + 5*time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}}, nil
}

// Addr returns the address bound.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx is done, then gives requests in flight a few
// seconds to finish.
func (s *Server) Serve(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- s.srv.Serve(s.ln) }()
	select {
	case err := <-done:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("metrics listener: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	<-done
	return nil
}

// Close closes the listener without serving (a start that failed later).
func (s *Server) Close() error { return s.ln.Close() }
