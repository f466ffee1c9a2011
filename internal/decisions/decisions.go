// Package decisions serves postern's block table as a decision stream in
// the format of CrowdSec's local API for bouncers, so that an unmodified
// CrowdSec firewall bouncer can keep a host firewall in sync with postern:
//
//	GET /v1/decisions/stream?startup=true   every current block ("new")
//	GET /v1/decisions/stream                blocks added ("new") and removed
//	                                        ("deleted") since this key's last call
//	GET /v1/decisions?ip=A                  the blocks covering A
//
// Bouncers authenticate with the X-Api-Key header; keys are read from a
// file. The stream reads the engine's block table and never writes it.
package decisions

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postern/postern/internal/store"
)

// Source lists the blocks (guard.Engine.Blocks): expired ones are skipped.
type Source interface {
	Blocks() []store.Block
}

// Decision is one block in CrowdSec's decision format.
type Decision struct {
	ID        int64  `json:"id"`
	Origin    string `json:"origin"`
	Type      string `json:"type"`
	Scope     string `json:"scope"`
	Value     string `json:"value"`
	Duration  string `json:"duration"`
	Until     string `json:"until,omitempty"`
	Scenario  string `json:"scenario"`
	Simulated bool   `json:"simulated"`
}

// Stream is the answer of /v1/decisions/stream.
type Stream struct {
	New     []Decision `json:"new"`
	Deleted []Decision `json:"deleted"`
}

// Permanent is the duration announced for a block without expiry.
const Permanent = 8760 * time.Hour

// Key is one bouncer's API key.
type Key struct {
	Name string
	sum  [32]byte
}

// MaxKeys bounds the keys file (and so the per-key stream state).
const MaxKeys = 256

// ParseKeys reads a keys file: one key per line, optionally preceded by
// a name ("firewall-1 <key>"); blank lines and lines starting with # are
// skipped. Keys are at least 16 characters of printable ASCII.
func ParseKeys(data []byte) ([]Key, error) {
	var keys []Key
	seen := map[[32]byte]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		var name, key string
		switch len(f) {
		case 1:
			name, key = fmt.Sprintf("key%d", len(keys)+1), f[0]
		case 2:
			name, key = f[0], f[1]
		default:
			return nil, fmt.Errorf("line %d: want a key, or a name and a key", n)
		}
		if len(key) < 16 {
			return nil, fmt.Errorf("line %d: key %q is shorter than 16 characters", n, name)
		}
		for i := 0; i < len(key); i++ {
			if key[i] <= ' ' || key[i] > '~' {
				return nil, fmt.Errorf("line %d: key %q has a character outside printable ASCII", n, name)
			}
		}
		k := Key{Name: name, sum: sha256.Sum256([]byte(key))}
		if seen[k.sum] {
			return nil, fmt.Errorf("line %d: key %q repeats an earlier key", n, name)
		}
		seen[k.sum] = true
		keys = append(keys, k)
		if len(keys) > MaxKeys {
			return nil, fmt.Errorf("more than %d keys", MaxKeys)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key in the file")
	}
	return keys, nil
}

// LoadKeys reads a keys file.
func LoadKeys(path string) ([]Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("decision keys: %w", err)
	}
	keys, err := ParseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("decision keys %s: %w", path, err)
	}
	return keys, nil
}

// Options configure a Handler.
type Options struct {
	Source Source
	Keys   []Key
	// Grant reports whether a client may connect; nil: loopback only.
	Grant func(netip.Addr) bool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Handler serves the bouncer API.
type Handler struct {
	src   Source
	keys  []Key
	grant func(netip.Addr) bool
	now   func() time.Time

	mu   sync.Mutex
	sent map[string]map[string]Decision // key name → value → decision sent last
}

// New returns the Handler.
func New(opts Options) (*Handler, error) {
	if opts.Source == nil {
		return nil, errors.New("decision stream: no block source")
	}
	if len(opts.Keys) == 0 {
		return nil, errors.New("decision stream: no API key")
	}
	h := &Handler{src: opts.Source, keys: opts.Keys, grant: opts.Grant, now: opts.Now, sent: map[string]map[string]Decision{}}
	if h.grant == nil {
		h.grant = netip.Addr.IsLoopback
	}
	if h.now == nil {
		h.now = time.Now
	}
	return h, nil
}

// key returns the name of the key presented, comparing in constant time
// against every key.
func (h *Handler) key(r *http.Request) (string, bool) {
	got := r.Header.Get("X-Api-Key")
	if got == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(got))
	name, ok := "", 0
	for _, k := range h.keys {
		if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 {
			name, ok = k.Name, 1
		}
	}
	return name, ok == 1
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type message struct {
	Message string `json:"message"`
}

// ServeHTTP answers one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil || !h.grant(ap.Addr().Unmap()) {
		writeJSON(w, http.StatusForbidden, message{"access forbidden"})
		return
	}
	name, ok := h.key(r)
	if !ok {
		writeJSON(w, http.StatusForbidden, message{"access forbidden"})
		return
	}
	switch {
	case r.URL.Path == "/v1/decisions/stream" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.stream(w, r, name)
	case r.URL.Path == "/v1/decisions" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		h.list(w, r)
	case r.URL.Path == "/v1/usage-metrics" && r.Method == http.MethodPost:
		// bouncers report their usage; postern does not keep it.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<16))
		writeJSON(w, http.StatusCreated, struct{}{})
	default:
		writeJSON(w, http.StatusNotFound, message{"not found"})
	}
}

// scopes reads the scopes parameter ("ip,range" by default).
func scopes(r *http.Request) (ip, rng bool) {
	s := r.URL.Query().Get("scopes")
	if s == "" {
		return true, true
	}
	for _, f := range strings.Split(s, ",") {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "ip":
			ip = true
		case "range":
			rng = true
		}
	}
	return ip, rng
}

// current returns the active blocks as decisions, by value.
func (h *Handler) current(now time.Time, ip, rng bool) map[string]Decision {
	out := map[string]Decision{}
	for _, b := range h.src.Blocks() {
		if b.Expired(now) {
			continue
		}
		d := FromBlock(b, now)
		if d.Scope == "Ip" && !ip || d.Scope == "Range" && !rng {
			continue
		}
		out[d.Value] = d
	}
	return out
}

func (h *Handler) stream(w http.ResponseWriter, r *http.Request, key string) {
	now := h.now()
	startup := r.URL.Query().Get("startup") == "true"
	ip, rng := scopes(r)
	cur := h.current(now, ip, rng)
	res := Stream{New: []Decision{}, Deleted: []Decision{}}
	h.mu.Lock()
	prev, known := h.sent[key]
	if startup || !known {
		prev = nil
	}
	for v, d := range cur {
		if p, ok := prev[v]; !ok || p.ID != d.ID {
			res.New = append(res.New, d)
		}
	}
	for v, p := range prev {
		if _, ok := cur[v]; !ok {
			p.Duration = remaining(p.Until, now)
			res.Deleted = append(res.Deleted, p)
		}
	}
	// the state of one key is at most the block table's active entries.
	h.sent[key] = cur
	h.mu.Unlock()
	sortDecisions(res.New)
	sortDecisions(res.Deleted)
	writeJSON(w, http.StatusOK, res)
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	now := h.now()
	q := r.URL.Query()
	var want netip.Prefix
	switch {
	case q.Get("ip") != "":
		a, err := netip.ParseAddr(q.Get("ip"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, message{"bad ip"})
			return
		}
		want = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
	case q.Get("range") != "":
		p, err := netip.ParsePrefix(q.Get("range"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, message{"bad range"})
			return
		}
		want = p.Masked()
	}
	var out []Decision
	for _, d := range h.current(now, true, true) {
		if want.IsValid() {
			p, err := netip.ParsePrefix(d.Value)
			if err != nil {
				a, _ := netip.ParseAddr(d.Value)
				p = netip.PrefixFrom(a, a.BitLen())
			}
			// a block covering the address or range asked for.
			if p.Addr().Is4() != want.Addr().Is4() || p.Bits() > want.Bits() || !p.Contains(want.Addr()) {
				continue
			}
		}
		out = append(out, d)
	}
	sortDecisions(out)
	// CrowdSec answers null when nothing matches.
	writeJSON(w, http.StatusOK, out)
}

func sortDecisions(ds []Decision) {
	slices.SortFunc(ds, func(a, b Decision) int { return strings.Compare(a.Value, b.Value) })
}

// FromBlock converts a block: scope "Ip" for a single address, "Range"
// otherwise; the duration is the remaining time in whole seconds (Go
// duration syntax, as CrowdSec writes it); the scenario is the reason.
// The ID is derived from the prefix and expiry, so a refreshed block is a
// new decision.
func FromBlock(b store.Block, now time.Time) Decision {
	p := b.Prefix.Masked()
	d := Decision{Origin: "postern", Type: "ban", Scope: "Range", Value: p.String(), Scenario: b.Reason.Name()}
	if d.Scenario == "" {
		d.Scenario = "blocked"
	}
	if p.IsSingleIP() {
		d.Scope, d.Value = "Ip", p.Addr().String()
	}
	until := b.Expires
	if until.IsZero() {
		until = now.Add(Permanent)
		d.ID = id(p, time.Time{})
	} else {
		d.ID = id(p, b.Expires)
	}
	d.Until = until.UTC().Format(time.RFC3339)
	d.Duration = until.Sub(now).Truncate(time.Second).String()
	return d
}

func remaining(until string, now time.Time) string {
	t, err := time.Parse(time.RFC3339, until)
	if err != nil {
		return "0s"
	}
	return t.Sub(now).Truncate(time.Second).String()
}

func id(p netip.Prefix, exp time.Time) int64 {
	h := fnv.New64a()
	b, _ := p.MarshalBinary()
	h.Write(b)
	fmt.Fprint(h, exp.UnixNano())
	return int64(h.Sum64()>>1) | 1
}

// Server serves a Handler over plain HTTP.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr (host:port).
func Listen(addr string, h *Handler) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("decision stream: %w", err)
	}
	return &Server{ln: ln, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}}, nil
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers requests until done is closed.
func (s *Server) Serve(done <-chan struct{}) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case <-done:
		_ = s.srv.Close()
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("decision stream: %w", err)
	}
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }
