package console

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/passes"
)

// passesView is the Passes page's data.
type passesView struct {
	Passes    []passes.Pass
	Available bool
}

func (s *Server) passesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	p := s.pageFor(ss, "passes", "Travel passes")
	v := passesView{Available: s.opts.Passes != nil}
	if v.Available {
		v.Passes = s.opts.Passes.List()
	}
	p.Data = v
	s.render(w, http.StatusOK, "passes", p)
}

// passDone sets the flash and goes back to the Passes page.
func (s *Server) passDone(w http.ResponseWriter, r *http.Request, ss *session, msg string) {
	s.setFlash(ss, msg)
	http.Redirect(w, r, "/passes", http.StatusSeeOther)
}

func (s *Server) addPass(w http.ResponseWriter, r *http.Request, ss *session) {
	if s.opts.Passes == nil {
		s.passDone(w, r, ss, "Travel passes are not available here.")
		return
	}
	rq := passes.AddRequest{
		Account: r.PostFormValue("account"),
		From:    r.PostFormValue("from"),
		For:     strings.TrimSpace(r.PostFormValue("for")),
		Comment: r.PostFormValue("comment"),
	}
	p, err := s.opts.Passes.Add(r.Context(), rq, actor(ss))
	if err != nil {
		s.passDone(w, r, ss, s.passFailMsg("Add pass", err))
		return
	}
	addr, _ := clientAddr(r)
	s.log.Info("console request", "user", ss.user, "remote", addr, "result", "pass "+p.ID+" for "+p.Account)
	s.passDone(w, r, ss, "Pass "+p.ID+": "+p.Account+" may log in from "+p.From+" until "+p.Until.UTC().Format(time.DateTime)+" UTC.")
}

func (s *Server) removePass(w http.ResponseWriter, r *http.Request, ss *session) {
	if s.opts.Passes == nil {
		s.passDone(w, r, ss, "Travel passes are not available here.")
		return
	}
	p, err := s.opts.Passes.Remove(r.Context(), r.PostFormValue("id"), actor(ss))
	if err != nil {
		s.passDone(w, r, ss, s.passFailMsg("Remove pass", err))
		return
	}
	s.passDone(w, r, ss, "Removed pass "+p.ID+" for "+p.Account+".")
}

// passFailMsg words a pass operation's error: the caller's fault with
// its text, else a pointer to the log.
func (s *Server) passFailMsg(what string, err error) string {
	if errors.Is(err, passes.ErrInvalid) || errors.Is(err, passes.ErrNotFound) {
		return what + ": " + err.Error()
	}
	return s.failMsg(what, err)
}

var _ admin.PassManager = (*passes.Manager)(nil)
