package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/store"
)

// Limits on request values.
const (
	maxCommentBytes = 1024
	defaultAudit    = 100
	maxAudit        = 10000
)

// LockoutMessage is the answer (409) to a change that would block the
// address making it.
const LockoutMessage = "this would block your own address; send force=true to do it anyway"

// handlerFunc serves one route. It writes the answer, or returns an error
// for serveHTTP to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request, rq *request) error

// request is what a handler knows of the request beyond *http.Request.
type request struct {
	peer
	result string // what was done, for the log line of a mutating request
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status string    `json:"status"`
	Now    time.Time `json:"now"`
}

type blockList struct {
	Blocks []Block `json:"blocks"`
}

type auditList struct {
	Entries []AuditEntry `json:"entries"`
}

// AddRequest is the body of POST /v1/blocks.
type AddRequest struct {
	Target   string `json:"target"`             // an address or a prefix
	Duration string `json:"duration,omitempty"` // "4h", "7d"; "" or "0": the configured block time
	Comment  string `json:"comment,omitempty"`
	Force    bool   `json:"force,omitempty"` // block even the requesting client's own address
}

// newMux routes the API with net/http's method patterns ("GET /v1/blocks").
// Two answers the mux would give differently are taken over: a wrong method
// gets the API's JSON error with Allow (the mux answers plain text), and
// HEAD, which the mux serves with a GET route, is a wrong method too (the
// API never answers without a body). So each path's method-less pattern,
// and its HEAD pattern, answer 405; "/" answers 404 in JSON.
func (s *Server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	allow := make(map[string][]string)
	handle := func(method, path string, h handlerFunc) {
		mux.Handle(method+" "+path, s.endpoint(h))
		allow[path] = append(allow[path], method)
	}
	handle(http.MethodGet, "/v1/health", s.handleHealth)
	handle(http.MethodGet, "/v1/blocks", s.handleList)
	handle(http.MethodPost, "/v1/blocks", s.handleAdd)
	handle(http.MethodDelete, "/v1/blocks", s.handleRemove)
	handle(http.MethodPost, "/v1/blocks/purge-expired", s.handlePurge)
	handle(http.MethodGet, "/v1/blocks/export", s.handleExport)
	handle(http.MethodPost, "/v1/blocks/import", s.handleImport)
	handle(http.MethodGet, "/v1/audit", s.handleAudit)
	handle(http.MethodGet, "/v1/explain", s.handleExplain)
	handle(http.MethodGet, "/v1/status", s.handleStatus)
	handle(http.MethodGet, "/v1/passes", s.handleListPasses)
	handle(http.MethodPost, "/v1/passes", s.handleAddPass)
	handle(http.MethodDelete, "/v1/passes", s.handleRemovePass)
	for path, methods := range allow {
		slices.Sort(methods)
		wrong := methodNotAllowed(methods)
		mux.Handle(path, wrong)
		if slices.Contains(methods, http.MethodGet) {
			mux.Handle(http.MethodHead+" "+path, wrong)
		}
	}
	mux.HandleFunc("/", notFound)
	return mux
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
}

// methodNotAllowed answers 405 naming the methods a path allows.
func methodNotAllowed(methods []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s: use %s", r.Method, r.URL.Path, strings.Join(methods, " or ")))
	})
}

// serveHTTP checks the client's grant and token, then routes.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	p := requestPeer(r)
	if p.tcp && !s.grant(p.addr) {
		s.log.Warn("admin API: request refused: address not granted", "remote", p.String())
		writeError(w, http.StatusForbidden, "forbidden")
		return
	}
	if !s.authorized(r) {
		s.log.Warn("admin API: unauthorized request", "method", r.Method, "path", r.URL.Path, "remote", p.String())
		h.Set("WWW-Authenticate", `Bearer realm="postern"`)
		writeError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	// The mux would redirect an unclean path (/v1//blocks, /v1/x/../blocks)
	// to its clean form; the API answers only its endpoints' exact paths.
	if ep := r.URL.EscapedPath(); ep != path.Clean(ep) {
		notFound(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// endpoint runs one route's handler: it answers the handler's error and
// logs the request (mutating ones at info level).
func (s *Server) endpoint(hf handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := requestPeer(r)
		sw := &statusWriter{ResponseWriter: w}
		rq := &request{peer: p}
		if err := hf(sw, r, rq); err != nil {
			if sw.code != 0 { // the answer was under way: the client went away
				rq.result = "answer not delivered: " + err.Error()
			} else {
				s.fail(sw, r, rq, err)
			}
		}
		level := slog.LevelDebug
		if r.Method != http.MethodGet {
			level = slog.LevelInfo
		}
		s.log.Log(r.Context(), level, "admin request", "method", r.Method, "path", r.URL.Path,
			"actor", rq.actor(), "remote", p.String(), "status", sw.status(), "result", rq.result)
	})
}

// httpError is an answer other than 200 decided by a handler.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

func badRequest(err error) error {
	return &httpError{status: http.StatusBadRequest, msg: err.Error()}
}

// fail answers a handler's error: its own status, 400 for ErrBadRequest,
// 413 for a body over the limit, else 500 with the detail in the log only.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, rq *request, err error) {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		rq.result = he.msg
		writeError(w, he.status, he.msg)
	case errors.As(err, &mbe):
		rq.result = "body too large"
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit))
	case errors.Is(err, ErrBadRequest):
		rq.result = err.Error()
		writeError(w, http.StatusBadRequest, err.Error())
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		rq.result = "client went away"
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
	default:
		rq.result = "internal error"
		s.log.Error("admin API: request failed", "method", r.Method, "path", r.URL.Path, "actor", rq.actor(), "err", err)
		writeError(w, http.StatusInternalServerError, "internal error (details in the postern log)")
	}
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// writeJSON encodes v completely before answering, so an encoding error
// can still be answered with 500.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err := w.Write(buf.Bytes())
	return err
}

func writeError(w http.ResponseWriter, status int, msg string) {
	_ = writeJSON(w, status, map[string]string{"error": msg})
}

// checkParams refuses query parameters the endpoint does not take, so a
// misspelt filter is not silently ignored.
func checkParams(q url.Values, allowed ...string) error {
	for k := range q {
		if !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return errorf(http.StatusBadRequest, "unknown parameter %q: this endpoint takes none", k)
			}
			return errorf(http.StatusBadRequest, "unknown parameter %q: this endpoint takes %s", k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// readJSON decodes a JSON body of at most limit bytes into v, refusing
// unknown fields and trailing data.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "empty body: want a JSON object")
		}
		return errorf(http.StatusBadRequest, "bad JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errorf(http.StatusBadRequest, "bad JSON body: unexpected data after the object")
	}
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request, _ *request) error {
	if err := checkParams(r.URL.Query()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, Health{Status: "ok", Now: s.eng.Now().UTC()})
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request, _ *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "reason", "service", "search", "active", "since", "until", "expires_before"); err != nil {
		return err
	}
	f, err := parseFilter(q)
	if err != nil {
		return badRequest(err)
	}
	now := s.eng.Now()
	if err := f.check(now); err != nil {
		return badRequest(err)
	}
	all := s.eng.Blocks()
	bs := make([]store.Block, 0, len(all))
	for i := range all {
		if f.Match(&all[i], now) {
			bs = append(bs, all[i])
		}
	}
	return writeJSON(w, http.StatusOK, blockList{Blocks: apiBlocks(bs, now)})
}

// apiBlocks sorts blocks and converts them for the API.
func apiBlocks(bs []store.Block, now time.Time) []Block {
	sortBlocks(bs)
	out := make([]Block, len(bs))
	for i, b := range bs {
		out[i] = newBlock(b, now)
	}
	return out
}

func (s *Server) handleAdd(w http.ResponseWriter, r *http.Request, rq *request) error {
	if err := checkParams(r.URL.Query()); err != nil {
		return err
	}
	var req AddRequest
	if err := readJSON(w, r, maxBodyBytes, &req); err != nil {
		return err
	}
	var client netip.Addr
	if rq.tcp {
		client = rq.addr
	}
	b, result, err := AddBlock(r.Context(), s.eng, req, client, rq.actor())
	if err != nil {
		return err
	}
	rq.result = result
	return writeJSON(w, http.StatusCreated, newBlock(b, s.eng.Now()))
}

func (s *Server) handleRemove(w http.ResponseWriter, r *http.Request, rq *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "target", "all"); err != nil {
		return err
	}
	targets := q["target"]
	switch {
	case len(targets) > 0 && q.Has("all"):
		return errorf(http.StatusBadRequest, "give target=… or all=true, not both")
	case q.Has("all"):
		if q.Get("all") != "true" {
			return errorf(http.StatusBadRequest, "all: want all=true to remove every block")
		}
		n, err := s.eng.UnblockAll(r.Context(), rq.actor())
		if err != nil {
			return fmt.Errorf("unblock all: %w", err)
		}
		rq.result = fmt.Sprintf("removed all %d blocks", n)
		return writeJSON(w, http.StatusOK, map[string]int{"removed": n})
	case len(targets) == 0:
		return errorf(http.StatusBadRequest, "want target=ADDRESS|PREFIX (repeatable) or all=true")
	}
	prefixes := make([]netip.Prefix, 0, len(targets))
	for _, t := range targets {
		p, err := ParseTarget(t)
		if err != nil {
			return errorf(http.StatusBadRequest, "target: %v", err)
		}
		if !slices.Contains(prefixes, p) {
			prefixes = append(prefixes, p)
		}
	}
	n, err := s.eng.Unblock(r.Context(), prefixes, rq.actor())
	if err != nil {
		return fmt.Errorf("unblock: %w", err)
	}
	names := make([]string, len(prefixes))
	for i, p := range prefixes {
		names[i] = FormatTarget(p)
	}
	if n == 0 {
		return errorf(http.StatusNotFound, "not blocked: %s", strings.Join(names, ", "))
	}
	rq.result = fmt.Sprintf("removed %d of %s", n, strings.Join(names, ", "))
	return writeJSON(w, http.StatusOK, map[string]int{"removed": n})
}

func (s *Server) handlePurge(w http.ResponseWriter, r *http.Request, rq *request) error {
	if err := checkParams(r.URL.Query()); err != nil {
		return err
	}
	n, err := s.eng.PurgeExpired(r.Context(), rq.actor())
	if err != nil {
		return fmt.Errorf("purge expired: %w", err)
	}
	rq.result = fmt.Sprintf("purged %d", n)
	return writeJSON(w, http.StatusOK, map[string]int{"purged": n})
}

func (s *Server) handleExport(w http.ResponseWriter, r *http.Request, _ *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "format"); err != nil {
		return err
	}
	format := q.Get("format")
	if format == "" {
		format = FormatJSON
	}
	if format != FormatCSV && format != FormatJSON {
		return errorf(http.StatusBadRequest, "format: want csv or json, got %q", format)
	}
	now := s.eng.Now()
	bs := slices.Clone(s.eng.Blocks()) // sorted here, not in the engine's hands
	sortBlocks(bs)
	name := "postern-blocks-" + now.UTC().Format("20060102T150405Z") + "." + format
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	if format == FormatJSON {
		return writeJSON(w, http.StatusOK, blockList{Blocks: apiBlocks(bs, now)})
	}
	var buf bytes.Buffer
	if err := writeCSV(&buf, bs); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	_, err := w.Write(buf.Bytes())
	return err
}

func (s *Server) handleImport(w http.ResponseWriter, r *http.Request, rq *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "force"); err != nil {
		return err
	}
	force := false
	if v := q.Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return errorf(http.StatusBadRequest, "force: want true or false, got %q", v)
		}
	}
	mt, _, merr := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if merr != nil || mt != "text/csv" && mt != "application/json" {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be text/csv or application/json")
	}
	// Decoded as it streams in: the body is never held whole. Every row is
	// checked before anything is enforced.
	if r.ContentLength > maxImportBytes {
		return &http.MaxBytesError{Limit: maxImportBytes}
	}
	body := http.MaxBytesReader(w, r.Body, maxImportBytes)
	var client netip.Addr
	if rq.tcp {
		client = rq.addr
	}
	n, err := ImportBlocks(r.Context(), s.eng, body, mt, force, client, rq.actor())
	if err != nil {
		return err
	}
	rq.result = fmt.Sprintf("imported %d", n)
	return writeJSON(w, http.StatusOK, map[string]int{"imported": n})
}

func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request, _ *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "since", "limit"); err != nil {
		return err
	}
	var since time.Time
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return errorf(http.StatusBadRequest, "since: want an RFC 3339 time such as 2026-05-01T12:00:00Z, got %q", v)
		}
		since = t
	}
	limit := defaultAudit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAudit {
			return errorf(http.StatusBadRequest, "limit: want a number from 1 to %d, got %q", maxAudit, v)
		}
		limit = n
	}
	es, err := s.eng.Audit(r.Context(), since, limit)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	out := auditList{Entries: make([]AuditEntry, len(es))}
	for i, e := range es {
		out.Entries[i] = newAuditEntry(e)
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleExplain(w http.ResponseWriter, r *http.Request, _ *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "ip", "service", "account", "path"); err != nil {
		return err
	}
	if s.explain == nil {
		return errorf(http.StatusNotImplemented, "explain is not available on this server")
	}
	a, err := netip.ParseAddr(strings.TrimSpace(q.Get("ip")))
	if err != nil || a.Zone() != "" {
		return errorf(http.StatusBadRequest, "ip: want an IP address, got %q", q.Get("ip"))
	}
	res, err := s.explain(r.Context(), explain.Query{Addr: a.Unmap(), Service: q.Get("service"), Account: q.Get("account"), Path: q.Get("path")})
	if errors.Is(err, explain.ErrQuery) {
		return badRequest(err)
	}
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	return writeJSON(w, http.StatusOK, res)
}
