package policyd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
)

// maxDovecotBody bounds a Dovecot policy request's JSON body: the default
// attributes (login, pwhash, remote, device_id, protocol, session_id) are
// a few hundred bytes.
const maxDovecotBody = 16 << 10

// Dovecot answers Dovecot's authentication policy requests
// (auth_policy_server_url): an HTTP POST of a JSON object to
// URL?command=allow before authentication (and after it, with
// auth_policy_check_after_auth) and URL?command=report after it. The
// answer is what weakforced answers, {"status":N,"msg":"…"}: N < 0
// rejects the login, 0 allows it, N > 0 delays it N seconds.
type Dovecot struct {
	eng     Engine
	opts    Options
	stats   Stats
	pending inflight
}

// NewDovecot returns a Dovecot policy server on eng.
func NewDovecot(eng Engine, opts Options) *Dovecot {
	return &Dovecot{eng: eng, opts: opts.withDefaults()}
}

// Stats returns the server's counters.
func (d *Dovecot) Stats() *Stats { return &d.stats }

// dcRequest is the part of Dovecot's request postern reads; the keys are
// those of Dovecot's default auth_policy_request_attributes, and what
// Dovecot adds to a report.
type dcRequest struct {
	Login        string `json:"login"`
	PwHash       string `json:"pwhash"`
	Remote       string `json:"remote"`
	Protocol     string `json:"protocol"`
	SessionID    string `json:"session_id"`
	Success      *bool  `json:"success"`
	PolicyReject bool   `json:"policy_reject"`
}

// dcAnswer is the answer Dovecot reads.
type dcAnswer struct {
	Status int    `json:"status"`
	Msg    string `json:"msg,omitempty"`
}

// dcService is the service a Dovecot protocol name stands for: SMTP AUTH
// through Dovecot SASL (Postfix says "smtp") counts as submission, where
// mail clients log in.
func dcService(protocol string) (service.Service, bool) {
	switch protocol {
	case "imap":
		return service.IMAP, true
	case "pop3":
		return service.POP3, true
	case "smtp", "submission":
		return service.Submission, true
	}
	return 0, false
}

// Serve answers HTTP requests on ln until ctx ends or ln is closed.
func (d *Dovecot) Serve(ctx context.Context, ln net.Listener) error {
	l := &listener{Listener: ln, opts: &d.opts, stats: &d.stats, slots: make(chan struct{}, d.opts.MaxConns)}
	srv := &http.Server{
		Handler:           d,
		ReadHeaderTimeout: writeTimeout,
		ReadTimeout:       writeTimeout,
		WriteTimeout:      writeTimeout + d.opts.DecisionTimeout,
		IdleTimeout:       d.opts.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(d.opts.Log.Handler(), slog.LevelWarn),
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
	})
	defer stop()
	sweepDone := make(chan struct{})
	sweepCtx, stopSweep := context.WithCancel(ctx)
	go func() {
		defer close(sweepDone)
		t := time.NewTicker(pendingTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-sweepCtx.Done():
				return
			case now := <-t.C:
				if n := d.pending.sweep(now.Add(-pendingTTL)); n > 0 {
					d.opts.Log.Warn("dovecot never reported logins; their slots are freed uncounted", "logins", n)
				}
			}
		}
	}()
	defer func() {
		stopSweep()
		<-sweepDone
		d.pending.closeAll()
	}()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, errClosed) {
		return nil
	}
	return fmt.Errorf("policyd: dovecot: %w", err)
}

// ServeHTTP answers one policy request.
func (d *Dovecot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	cmd := r.URL.Query().Get("command")
	if cmd != "allow" && cmd != "report" {
		d.stats.Bad.Add(1)
		http.Error(w, "command must be allow or report", http.StatusBadRequest)
		return
	}
	var req dcRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDovecotBody))
	if err := dec.Decode(&req); err != nil {
		d.stats.Bad.Add(1)
		d.opts.Log.Warn("dovecot policy request refused", "peer", r.RemoteAddr, "err", err)
		http.Error(w, "bad request body", http.StatusBadRequest)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		d.stats.Bad.Add(1)
		http.Error(w, "bad request body: more than one JSON value", http.StatusBadRequest)
		return
	}
	ans, ok := within(d.opts.DecisionTimeout, func() dcAnswer { return d.decide(cmd, &req) })
	if !ok {
		d.stats.NoOpinion.Add(1)
		d.opts.Log.Warn("dovecot policy decision took too long; answered allow", "remote", req.Remote, "command", cmd)
		ans = dcAnswer{}
	}
	d.stats.Requests.Add(1)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ans)
}

// decide answers one request.
func (d *Dovecot) decide(cmd string, req *dcRequest) dcAnswer {
	addr, err := netip.ParseAddr(req.Remote)
	if err != nil {
		return dcAnswer{} // a login without a remote address: nothing to judge
	}
	addr = addr.Unmap()
	svc, known := dcService(req.Protocol)
	if !known {
		svc = service.IMAP
	}
	st := d.eng.Settings()
	var fp uint64
	if req.PwHash != "" {
		fp = d.eng.PasswordFingerprint(req.Login, "dovecot pwhash\x00"+req.PwHash)
	}
	failed := req.Success != nil && !*req.Success && !req.PolicyReject
	if cmd == "report" {
		if p, ok := d.pending.take(req.SessionID); req.SessionID != "" && ok && p.l != nil {
			defer p.s.Close()
			switch {
			case req.Success != nil && *req.Success:
				p.l.Succeeded()
			case failed:
				p.l.Failed(fp)
			default:
				p.l.Abandon()
			}
			return dcAnswer{}
		}
		if failed && req.Login != "" {
			s := d.eng.Attach(addr, svc)
			defer s.Close()
			s.LoginFailed(req.Login, fp)
		}
		return dcAnswer{}
	}
	var v guard.Verdict
	if known && st.Policy != nil && st.Policy.Service(svc) != nil {
		v = d.eng.Admit(addr, svc)
	} else {
		v = d.eng.AdmitBlocks(addr, svc)
	}
	if v.Action == guard.Refuse {
		return dcAnswer{Status: -1, Msg: v.Refusal()}
	}
	s := d.eng.Attach(addr, svc)
	defer s.Close()
	if bd, blocked := s.Blocked(); blocked {
		return dcAnswer{Status: -1, Msg: bd.Refusal()}
	}
	if req.Login != "" && st.Policy != nil && !st.Policy.AllowLogin(req.Login, addr) {
		fd := s.LoginFailed(req.Login, fp)
		if fd.Blocked {
			return dcAnswer{Status: -1, Msg: fd.Refusal()}
		}
		return dcAnswer{Status: -1, Msg: "Access denied"}
	}
	// The check after authentication (auth_policy_check_after_auth) asks
	// again about a login in flight: it was delayed and held already.
	if req.SessionID != "" && d.pending.has(req.SessionID) {
		return dcAnswer{}
	}
	delay := s.LoginDelay(req.Login)
	if v.Action == guard.Tarpit {
		delay += v.Delay
	}
	if delay > 0 {
		if req.SessionID != "" {
			// Remembered without a place in the login gate, so the check
			// after authentication does not delay the login again.
			d.pending.add(req.SessionID, pending{begun: time.Now()})
		}
		return dcAnswer{Status: int((delay + time.Second - 1) / time.Second)}
	}
	if req.SessionID != "" && req.Login != "" {
		if a, held := d.hold(addr, svc, req); held {
			return a
		}
	}
	return dcAnswer{}
}

// hold begins the login as the inline login gate does (BeginLogin) and
// keeps it until Dovecot reports its result: while an address's failures
// plus its logins in flight reach failed_logins, a further login waits
// for them, and is refused when it cannot go on before the decision
// deadline. held is false when the login is not held (the table is full).
func (d *Dovecot) hold(addr netip.Addr, svc service.Service, req *dcRequest) (dcAnswer, bool) {
	s := d.eng.Attach(addr, svc)
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.DecisionTimeout*3/4)
	defer cancel()
	l, bd := s.BeginLogin(ctx, req.Login)
	if l == nil {
		s.Close()
		return dcAnswer{Status: -1, Msg: bd.Refusal()}, true
	}
	if !d.pending.add(req.SessionID, pending{s: s, l: l, begun: time.Now()}) {
		l.Abandon()
		s.Close()
		return dcAnswer{}, false
	}
	return dcAnswer{}, true
}

// EnsureNonce makes sure the file at path holds a hash nonce for Dovecot's
// auth_policy_hash_nonce (read by Dovecot with "auth_policy_hash_nonce =
// <path"): it creates one (32 random bytes in hex, mode 0640) when the
// file does not exist and leaves an existing file alone.
func EnsureNonce(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("policyd: dovecot hash nonce: %w", err)
	}
	var b [32]byte
	rand.Read(b[:])
	_, err = f.WriteString(hex.EncodeToString(b[:]))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("policyd: dovecot hash nonce: %w", err)
	}
	return nil
}
