package smtpproxy

import (
	"slices"
	"strconv"
	"strings"
)

// passedExtensions are the backend's EHLO extensions postern relays as
// they are: it passes their commands and parameters through unchanged.
var passedExtensions = map[string]bool{
	"SIZE": true, "PIPELINING": true, "8BITMIME": true, "SMTPUTF8": true, "CHUNKING": true,
	"BINARYMIME": true, "DSN": true, "ENHANCEDSTATUSCODES": true, "REQUIRETLS": true,
	"DELIVERBY": true, "MT-PRIORITY": true, "FUTURERELEASE": true, "LIMITS": true,
}

// filterEHLO keeps the backend's first line and the extensions postern
// supports; STARTTLS and AUTH are postern's own. A backend answers every
// session's EHLO alike: what postern makes of its last answer is kept
// (ehloSet) and served while the backend's lines stay the same.
func (s *session) filterEHLO(r reply) reply {
	scan := s.p.cfg.Scan.Scanner != nil
	set := s.p.ehlo.Load()
	if set == nil || set.scan != scan || !slices.Equal(set.in, r.lines) {
		set = newEHLOSet(r, scan)
		s.p.ehlo.Store(set)
	}
	if set.hasSize {
		s.sizeLimit = set.size
	}
	v := 0
	if !s.tls && s.p.cfg.TLS != nil {
		v |= ehloStartTLS
	}
	if !s.authed && (s.tls || s.p.cfg.AllowInsecureAuth) {
		v |= ehloAuth
	}
	return set.out[v]
}

// What a session may add to the backend's extensions: ehloSet.out's index.
const (
	ehloStartTLS = 1 << iota // STARTTLS, on a plain connection with TLS configured
	ehloAuth                 // AUTH, if the backend offers it, to a client not logged in where logins may be
)

// ehloSet is what postern answers to EHLO for one answer of the backend's.
type ehloSet struct {
	in      []string // the backend's lines
	scan    bool     // with a spam scanner (no BINARYMIME)
	size    int64    // SIZE's limit, when hasSize
	hasSize bool
	out     [4]reply // by what the session adds (ehloStartTLS, ehloAuth); shared: never changed
}

// newEHLOSet makes postern's answers from the backend's answer r.
func newEHLOSet(r reply, scan bool) *ehloSet {
	set := &ehloSet{in: r.lines, scan: scan}
	var exts []string
	backendAuth := false
	for _, l := range r.lines[1:] {
		if len(l) <= 4 {
			continue
		}
		ext := l[4:]
		name, params, _ := strings.Cut(ext, " ")
		name = strings.ToUpper(name)
		switch {
		case name == "AUTH" || strings.HasPrefix(name, "AUTH="):
			backendAuth = true
		case name == "SIZE":
			if n, err := strconv.ParseInt(strings.TrimSpace(params), 10, 64); err == nil {
				set.size, set.hasSize = n, true
			}
			exts = append(exts, ext)
		case name == "BINARYMIME" && scan:
			// Scanned messages are relayed with DATA, which cannot carry binary.
		case passedExtensions[name]:
			exts = append(exts, ext)
		}
	}
	first := strings.TrimPrefix(strings.TrimPrefix(r.lines[0], "250-"), "250 ")
	for v := range set.out {
		all := exts[:len(exts):len(exts)] // appended to: a copy
		if v&ehloStartTLS != 0 {
			all = append(all, "STARTTLS")
		}
		if v&ehloAuth != 0 && backendAuth {
			all = append(all, "AUTH PLAIN LOGIN")
		}
		set.out[v] = ehloReply(first, all)
	}
	return set
}

// ehloReply is a 250 answer to EHLO: first, then each extension.
func ehloReply(first string, exts []string) reply {
	if len(exts) == 0 {
		return reply{code: 250, lines: []string{"250 " + first}}
	}
	out := reply{code: 250, lines: make([]string, 0, len(exts)+1)}
	out.lines = append(out.lines, "250-"+first)
	for i, e := range exts {
		sep := "-"
		if i == len(exts)-1 {
			sep = " "
		}
		out.lines = append(out.lines, "250"+sep+e)
	}
	return out
}
