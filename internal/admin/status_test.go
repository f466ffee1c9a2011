package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/admin"
)

// statusSource answers a fixed status and remembers whether it was asked.
type statusSource struct {
	st    admin.Status
	asked int
}

func (s *statusSource) Status(ctx context.Context) admin.Status {
	s.asked++
	return s.st
}

// GET /v1/status: the source's state, the blocks counted from the engine
// at its clock (active by reason, expired), health judged from the rest;
// 501 without a source; no parameters; GET only.
func TestStatusEndpoint(t *testing.T) {
	f := startUnix(t, options{})
	f.eng.Put(sample()...)

	code, body := f.do(t, http.MethodGet, "/v1/status", "", "")
	wantStatus(t, "without a source", code, body, http.StatusNotImplemented, "status is not available")

	src := &statusSource{st: admin.Status{Version: "v1", Node: "gw1",
		Services: []admin.ServiceStatus{{Name: "imap", Listen: ":143", Bound: "[::]:143",
			Backends: []admin.BackendStatus{{Address: "127.0.0.1:1143", Reachable: true}}}},
		Store: admin.StoreStatus{LastWriteOK: true}}}
	f.srv.SetStatus(src)
	st, err := f.c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || len(st.Problems) != 0 || st.Version != "v1" || !st.Now.Equal(t0) {
		t.Errorf("healthy status: %+v", st)
	}
	// sample(): at t0, L twice and U once in force, P and D expired.
	want := admin.BlockCounts{Active: 3, Expired: 2, ByReason: []admin.ReasonCount{
		{Reason: "L", Name: "failed logins", Active: 2}, {Reason: "U", Name: "manual", Active: 1}}}
	if st.Blocks.Active != want.Active || st.Blocks.Expired != want.Expired || !slices.Equal(st.Blocks.ByReason, want.ByReason) {
		t.Errorf("blocks %+v, want %+v", st.Blocks, want)
	}

	code, body = f.do(t, http.MethodGet, "/v1/status?verbose=1", "", "")
	wantStatus(t, "a parameter", code, body, http.StatusBadRequest, `unknown parameter \"verbose\"`)
	code, body = f.do(t, http.MethodPost, "/v1/status", "", "")
	wantStatus(t, "POST", code, body, http.StatusMethodNotAllowed)
	code, _, body = f.raw(t, http.MethodGet, "/v1/status", "wrong-token-0123456789", nil, "")
	wantStatus(t, "a wrong token", code, body, http.StatusUnauthorized)
	if src.asked != 1 {
		t.Errorf("the source was asked %d times, want 1 (refused requests never reach it)", src.asked)
	}
}

// Judge: each thing down is one problem, and any problem is unhealthy.
func TestJudge(t *testing.T) {
	wrote := time.Now()
	for _, tc := range []struct {
		name     string
		st       admin.Status
		problems []string
	}{
		{name: "all well", st: admin.Status{Store: admin.StoreStatus{LastWriteOK: true},
			LastReload: &admin.ReloadStatus{OK: true},
			Services:   []admin.ServiceStatus{{Name: "smtp", Bound: "[::]:25", Backends: []admin.BackendStatus{{Address: "a:25", Reachable: true}}}}}},
		{name: "backend down", st: admin.Status{Store: admin.StoreStatus{LastWriteOK: true},
			Services: []admin.ServiceStatus{{Name: "web", Bound: "[::]:443", Backends: []admin.BackendStatus{
				{Address: "a:80", Reachable: true}, {Address: "b:80", Error: "i/o timeout"}}}}},
			problems: []string{"service web: backend b:80 unreachable: i/o timeout"}},
		{name: "not listening", st: admin.Status{Store: admin.StoreStatus{LastWriteOK: true},
			Services: []admin.ServiceStatus{{Name: "imap"}, {Name: "pop3", Bound: "127.0.0.1:110", Problem: "still on 127.0.0.1:110"}}},
			problems: []string{"service imap: not listening", "service pop3: still on 127.0.0.1:110"}},
		{name: "reload and store failed", st: admin.Status{
			Store:      admin.StoreStatus{LastWrite: &wrote, LastWriteError: "disk I/O error"},
			LastReload: &admin.ReloadStatus{Error: "bad key"}},
			problems: []string{"last configuration reload failed: bad key", "last store write failed: disk I/O error"}},
	} {
		admin.Judge(&tc.st)
		if tc.st.Healthy != (len(tc.problems) == 0) || strings.Join(tc.st.Problems, "|") != strings.Join(tc.problems, "|") || tc.st.Problems == nil {
			t.Errorf("%s: healthy %v, problems %q; want %q", tc.name, tc.st.Healthy, tc.st.Problems, tc.problems)
		}
	}
}

// The status JSON holds every property docs/openapi.yaml requires, and
// nothing it does not describe.
func TestStatusJSONMatchesOpenAPI(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Required   []string       `yaml:"required"`
				Properties map[string]any `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	wrote := t0
	st := admin.Status{Version: "v1", Revision: "abc", Problems: []string{},
		LastReload: &admin.ReloadStatus{Error: "x", Applied: []string{}, Restart: []string{}, Problems: []string{}},
		Services:   []admin.ServiceStatus{{Name: "imap", Problem: "p", Backends: []admin.BackendStatus{{Address: "a:1", Error: "e"}}}},
		Store:      admin.StoreStatus{LastWrite: &wrote, LastWriteError: "e"}}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	check := func(schema string, obj map[string]any) {
		s, ok := doc.Components.Schemas[schema]
		if !ok {
			t.Fatalf("openapi.yaml has no schema %s", schema)
		}
		for _, k := range s.Required {
			if _, ok := obj[k]; !ok {
				t.Errorf("%s: the JSON lacks required %q", schema, k)
			}
		}
		for k := range obj {
			if _, ok := s.Properties[k]; !ok {
				t.Errorf("%s: %q is not described in openapi.yaml", schema, k)
			}
		}
	}
	check("Status", m)
	check("ServiceStatus", m["services"].([]any)[0].(map[string]any))
}
