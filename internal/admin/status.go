package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/postern/postern/internal/reason"
)

// StatusSource tells the state of the running gateway for GET /v1/status:
// its build, configuration, last reload, services and store. The gateway
// implements it; the API adds the blocks (from the Engine) and judges
// health.
type StatusSource interface {
	// Status returns the gateway's state now. It may take as long as a
	// backend dial (it checks reachability when asked); it returns early,
	// with what it has, when ctx is done.
	Status(ctx context.Context) Status
}

// Status is the answer of GET /v1/status.
type Status struct {
	// Healthy is false when something is down: a backend that does not
	// accept a connection, a listener not bound, a failed last reload, a
	// failed last store write. Problems says what, one line each.
	Healthy  bool     `json:"healthy"`
	Problems []string `json:"problems"`

	Version   string    `json:"version"`
	Revision  string    `json:"revision,omitempty"`
	GoVersion string    `json:"go_version"`
	Node      string    `json:"node"`
	Started   time.Time `json:"started"`
	Uptime    int64     `json:"uptime_seconds"`
	Now       time.Time `json:"now"`

	Config     ConfigStatus    `json:"config"`
	LastReload *ReloadStatus   `json:"last_reload"` // null: no reload since start
	Services   []ServiceStatus `json:"services"`
	Blocks     BlockCounts     `json:"blocks"`
	Store      StoreStatus     `json:"store"`
}

// ConfigStatus is the running configuration: its file and when it was
// loaded (at start or by the last good reload).
type ConfigStatus struct {
	File   string    `json:"file"`
	Loaded time.Time `json:"loaded"`
}

// ReloadStatus is the outcome of the last configuration reload.
type ReloadStatus struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
	// Error says why a reload was rejected (the running configuration
	// stayed); empty when it was applied.
	Error string `json:"error,omitempty"`
	// Applied are the keys that changed and took effect; Restart those
	// that changed and wait for a restart; Problems what an applied
	// reload could not do (a listener it could not bind).
	Applied  []string `json:"applied"`
	Restart  []string `json:"restart"`
	Problems []string `json:"problems"`
	// Count is the number of reloads since start, failed ones included.
	Count int `json:"count"`
}

// ServiceStatus is one configured service.
type ServiceStatus struct {
	Name string `json:"name"`
	// Listen is the address as configured, Bound the one actually bound
	// (with the port the system chose for port 0); empty when not bound.
	Listen string `json:"listen"`
	Bound  string `json:"bound"`
	// Sessions is the number of client connections open on its listener.
	Sessions int             `json:"sessions"`
	Backends []BackendStatus `json:"backends"`
	// Problem says why the service is not served as configured (a
	// listener that could not be bound after a reload); empty if it is.
	Problem string `json:"problem,omitempty"`
}

// BackendStatus is a backend and whether it accepted a TCP connection
// when the status was asked.
type BackendStatus struct {
	Address   string  `json:"address"`
	Reachable bool    `json:"reachable"`
	DialMS    float64 `json:"dial_ms"` // how long the dial took (or failed after)
	Error     string  `json:"error,omitempty"`
}

// BlockCounts counts the blocks in the engine's table.
type BlockCounts struct {
	Active   int           `json:"active"`
	Expired  int           `json:"expired"`
	ByReason []ReasonCount `json:"by_reason"` // active blocks, in reason code order; reasons with none left out
}

// ReasonCount is the number of active blocks of one reason.
type ReasonCount struct {
	Reason string `json:"reason"`
	Name   string `json:"name"`
	Active int    `json:"active"`
}

// StoreStatus is the block store: its file, its size (with the WAL) and
// the outcome of its last write (none yet: LastWrite null, LastWriteOK
// true).
type StoreStatus struct {
	Path           string     `json:"path"`
	SizeBytes      int64      `json:"size_bytes"`
	LastWrite      *time.Time `json:"last_write"`
	LastWriteOK    bool       `json:"last_write_ok"`
	LastWriteError string     `json:"last_write_error,omitempty"`
}

// SetStatus gives the server the source of GET /v1/status (without one it
// answers 501). Call it before serving.
func (s *Server) SetStatus(src StatusSource) { s.status.Store(&src) }

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request, _ *request) error {
	if err := checkParams(r.URL.Query()); err != nil {
		return err
	}
	src := s.status.Load()
	if src == nil {
		return errorf(http.StatusNotImplemented, "status is not available on this server")
	}
	st := (*src).Status(r.Context())
	st.Now = s.eng.Now().UTC()
	st.Blocks = countBlocks(s.eng, st.Now)
	Judge(&st)
	return writeJSON(w, http.StatusOK, st)
}

// countBlocks counts the engine's blocks at now.
func countBlocks(eng Engine, now time.Time) BlockCounts {
	var c BlockCounts
	by := map[reason.Code]int{}
	for _, b := range eng.Blocks() {
		if b.Expired(now) {
			c.Expired++
			continue
		}
		c.Active++
		by[b.Reason]++
	}
	c.ByReason = []ReasonCount{}
	for _, code := range reason.All {
		if n := by[code]; n > 0 {
			c.ByReason = append(c.ByReason, ReasonCount{Reason: code.String(), Name: code.Name(), Active: n})
		}
	}
	return c
}

// Judge sets st.Healthy and st.Problems from the rest of st: every
// backend reachable, every service bound as configured, the last reload
// (if any) applied, the last store write (if any) committed.
func Judge(st *Status) {
	st.Problems = []string{}
	for _, svc := range st.Services {
		if svc.Problem != "" {
			st.Problems = append(st.Problems, fmt.Sprintf("service %s: %s", svc.Name, svc.Problem))
		} else if svc.Bound == "" {
			st.Problems = append(st.Problems, fmt.Sprintf("service %s: not listening", svc.Name))
		}
		for _, b := range svc.Backends {
			if !b.Reachable {
				st.Problems = append(st.Problems, fmt.Sprintf("service %s: backend %s unreachable: %s", svc.Name, b.Address, b.Error))
			}
		}
	}
	if lr := st.LastReload; lr != nil && !lr.OK {
		st.Problems = append(st.Problems, "last configuration reload failed: "+lr.Error)
	}
	if !st.Store.LastWriteOK {
		st.Problems = append(st.Problems, "last store write failed: "+st.Store.LastWriteError)
	}
	st.Healthy = len(st.Problems) == 0
}

// Status asks the running gateway for its state (GET /v1/status).
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, nil, "", &st)
	if st.Problems == nil {
		st.Problems = []string{}
	}
	return st, err
}
