package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/postern/postern/internal/passes"
)

// PassManager is what the API needs of the travel passes
// (*passes.Manager is one).
type PassManager interface {
	// List returns the passes in force; expired ones are hidden.
	List() []passes.Pass
	// Add checks, stores and audits a pass; an error wrapping
	// passes.ErrInvalid is the caller's fault.
	Add(ctx context.Context, rq passes.AddRequest, actor string) (passes.Pass, error)
	// Remove deletes a pass by ID; passes.ErrNotFound when none has it.
	Remove(ctx context.Context, id, actor string) (passes.Pass, error)
}

// SetPasses gives the server the travel passes of /v1/passes (without
// them those endpoints answer 501). Call it before serving.
func (s *Server) SetPasses(m PassManager) { s.passes.Store(&m) }

type passList struct {
	Passes []passes.Pass `json:"passes"`
}

func (s *Server) passManager() (PassManager, error) {
	m := s.passes.Load()
	if m == nil {
		return nil, errorf(http.StatusNotImplemented, "travel passes are not available on this server")
	}
	return *m, nil
}

func (s *Server) handleListPasses(w http.ResponseWriter, r *http.Request, _ *request) error {
	if err := checkParams(r.URL.Query()); err != nil {
		return err
	}
	m, err := s.passManager()
	if err != nil {
		return err
	}
	l := m.List()
	if l == nil {
		l = []passes.Pass{}
	}
	return writeJSON(w, http.StatusOK, passList{Passes: l})
}

func (s *Server) handleAddPass(w http.ResponseWriter, r *http.Request, rq *request) error {
	if err := checkParams(r.URL.Query()); err != nil {
		return err
	}
	m, err := s.passManager()
	if err != nil {
		return err
	}
	var req passes.AddRequest
	if err := readJSON(w, r, maxBodyBytes, &req); err != nil {
		return err
	}
	p, err := m.Add(r.Context(), req, rq.actor())
	switch {
	case errors.Is(err, passes.ErrInvalid):
		return badRequest(err)
	case err != nil:
		return fmt.Errorf("add travel pass: %w", err)
	}
	rq.result = fmt.Sprintf("pass %s for %s from %s until %s", p.ID, p.Account, p.From, p.Until.Format(time.RFC3339))
	return writeJSON(w, http.StatusCreated, p)
}

func (s *Server) handleRemovePass(w http.ResponseWriter, r *http.Request, rq *request) error {
	q := r.URL.Query()
	if err := checkParams(q, "id"); err != nil {
		return err
	}
	m, err := s.passManager()
	if err != nil {
		return err
	}
	if len(q["id"]) != 1 || q.Get("id") == "" {
		return errorf(http.StatusBadRequest, "want one id=PASS-ID (see GET /v1/passes)")
	}
	p, err := m.Remove(r.Context(), q.Get("id"), rq.actor())
	switch {
	case errors.Is(err, passes.ErrNotFound):
		return errorf(http.StatusNotFound, "%v", err)
	case err != nil:
		return fmt.Errorf("remove travel pass: %w", err)
	}
	rq.result = fmt.Sprintf("removed pass %s for %s", p.ID, p.Account)
	return writeJSON(w, http.StatusOK, p)
}

// ListPasses returns the travel passes in force (GET /v1/passes).
func (c *Client) ListPasses(ctx context.Context) ([]passes.Pass, error) {
	var l passList
	err := c.do(ctx, http.MethodGet, "/v1/passes", nil, nil, "", &l)
	return l.Passes, err
}

// AddPass adds a travel pass (POST /v1/passes).
func (c *Client) AddPass(ctx context.Context, rq passes.AddRequest) (passes.Pass, error) {
	body, err := json.Marshal(rq)
	if err != nil {
		return passes.Pass{}, err
	}
	var p passes.Pass
	err = c.do(ctx, http.MethodPost, "/v1/passes", nil, bytes.NewReader(body), "application/json", &p)
	return p, err
}

// RemovePass removes the travel pass with the given ID (DELETE
// /v1/passes?id=…); an unknown ID is an APIError with status 404.
func (c *Client) RemovePass(ctx context.Context, id string) (passes.Pass, error) {
	var p passes.Pass
	err := c.do(ctx, http.MethodDelete, "/v1/passes", url.Values{"id": {id}}, nil, "", &p)
	return p, err
}
