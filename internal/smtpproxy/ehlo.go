package smtpproxy

import (
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
// supports; STARTTLS and AUTH are postern's own.
func (s *session) filterEHLO(r reply) reply {
	out := reply{code: 250, lines: []string{r.lines[0]}}
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
				s.sizeLimit = n
			}
			exts = append(exts, ext)
		case name == "BINARYMIME" && s.p.cfg.Scan.Scanner != nil:
			// Scanned messages are relayed with DATA, which cannot carry binary.
		case passedExtensions[name]:
			exts = append(exts, ext)
		}
	}
	if !s.tls && s.p.cfg.TLS != nil {
		exts = append(exts, "STARTTLS")
	}
	if backendAuth && !s.authed && (s.tls || s.p.cfg.AllowInsecureAuth) {
		exts = append(exts, "AUTH PLAIN LOGIN")
	}
	first := strings.TrimPrefix(strings.TrimPrefix(r.lines[0], "250-"), "250 ")
	if len(exts) == 0 {
		out.lines[0] = "250 " + first
		return out
	}
	out.lines[0] = "250-" + first
	for i, e := range exts {
		sep := "-"
		if i == len(exts)-1 {
			sep = " "
		}
		out.lines = append(out.lines, "250"+sep+e)
	}
	return out
}
