package main

import (
	"strings"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/service"
)

// ipsGroups are the protocol groups of intrusion prevention and the
// protocol of the services whose events each one counts.
var ipsGroups = []struct {
	name  string
	proto service.Protocol
}{
	{"smtp", service.ProtocolSMTP},
	{"imap_pop3", service.ProtocolMail},
	{"web", service.ProtocolWeb},
}

// triggerNames are the triggers' configuration names by reason code.
var triggerNames = map[byte]string{
	'I': "connections_per_minute", 'L': "failed_logins", 'P': "unknown_recipients", 'Y': "relay_denials",
	'R': "rset_count", 'S': "spam_score", 'D': "dnsbl", 'M': "message_size", 'A': "tarpit_accounts", 'C': "content_rules",
}

// deadTrigger is a trigger that is switched on but that nothing in the
// configuration can ever feed.
type deadTrigger struct {
	group string
	code  byte
	why   string
	pos   diag.Pos
}

// onTriggers returns the reason codes of the triggers t switches on, in
// the order postern check lists them.
func onTriggers(t *config.Triggers) []byte {
	var on []byte
	for _, c := range []struct {
		code byte
		on   bool
	}{
		{'I', t.ConnectionsPerMinute > 0}, {'L', t.FailedLogins > 0}, {'P', t.UnknownRecipients > 0},
		{'Y', t.RelayDenials > 0}, {'R', t.RsetCount > 0}, {'S', t.SpamScore > 0}, {'D', len(t.DNSBL) > 0},
		{'M', t.MessageSize.Bytes > 0}, {'A', t.TarpitAccounts.IsSet()}, {'C', t.ContentRules},
	} {
		if c.on {
			on = append(on, c.code)
		}
	}
	return on
}

// groupTriggers returns the configured triggers of the group of protocol
// p, nil when the group is absent.
func groupTriggers(ips *config.IntrusionPrevention, p service.Protocol) *config.Triggers {
	switch p {
	case service.ProtocolSMTP:
		return ips.SMTP
	case service.ProtocolMail:
		return ips.IMAPPOP3
	case service.ProtocolWeb:
		return ips.Web
	}
	return nil
}

// deadTriggers returns the triggers that are on but can never fire: a
// group with no service to watch, spam_score without a scanner,
// content_rules without rules, message triggers where every SMTP service
// requires AUTH (authenticated sessions bypass them), failed logins where
// no login can be made (SMTP AUTH and IMAP/POP3 logins need TLS or an
// explicit exception) or recognised (webmail needs login_forms).
func deadTriggers(f *config.File) []deadTrigger {
	var out []deadTrigger
	for _, g := range ipsGroups {
		t := groupTriggers(&f.IntrusionPrevention, g.proto)
		if t == nil {
			continue
		}
		on := onTriggers(t)
		var svcs []*config.Service
		var names []string
		allAuth := true // every service of the group takes mail only after AUTH
		for _, name := range service.All {
			if name.Protocol() != g.proto {
				continue
			}
			names = append(names, name.String())
			if svc := f.Services[name]; svc != nil {
				svcs = append(svcs, svc)
				if svc.SMTP != nil && !svc.SMTP.RequireAuth {
					allAuth = false
				}
			}
		}
		if len(svcs) == 0 {
			for _, c := range on {
				out = append(out, deadTrigger{g.name, c, "no " + strings.Join(names, ", ") + " service is configured", t.Pos()})
			}
			continue
		}
		for _, c := range on {
			why := ""
			switch {
			case c == 'S' && !f.Spam.Rspamd.IsSet() && !f.Spam.Spamd.IsSet():
				why = "no spam scanner is configured (spam.rspamd or spam.spamd)"
			case c == 'C' && len(f.ContentRules) == 0:
				why = "no content_rules are defined"
			case g.proto == service.ProtocolSMTP && allAuth && strings.IndexByte("PYSMAC", c) >= 0:
				why = "every smtp, submission and smtps service requires AUTH before mail, and an authenticated session is never blocked for it"
			case c == 'L' && g.proto == service.ProtocolSMTP && !anyService(svcs, func(s *config.Service) bool { return s.TLS != nil || s.SMTP != nil && s.SMTP.AllowInsecureAuth }):
				why = "SMTP AUTH needs TLS and no smtp, submission or smtps service has tls: (or allow_insecure_auth)"
			case c == 'L' && g.proto == service.ProtocolMail && !anyService(svcs, func(s *config.Service) bool { return s.TLS != nil || s.Mail != nil && s.Mail.PlaintextLogin.IsSet() }):
				why = "logins need TLS and no imap, imaps, pop3 or pop3s service has tls: (or plaintext_login)"
			case c == 'L' && g.proto == service.ProtocolWeb && !anyService(svcs, func(s *config.Service) bool { return s.Web != nil && len(s.Web.LoginForms) > 0 }):
				why = "the web service has no login_forms, so no failed webmail login is recognised"
			}
			if why != "" {
				out = append(out, deadTrigger{g.name, c, why, t.Pos()})
			}
		}
	}
	return out
}

func anyService(svcs []*config.Service, ok func(*config.Service) bool) bool {
	for _, s := range svcs {
		if ok(s) {
			return true
		}
	}
	return false
}

// ipsWarnings are the intrusion-prevention settings that do less than
// they seem: triggers that can never fire, log_only entries for triggers
// that are off, and blocks that neither refuse nor close.
func ipsWarnings(f *config.File) []error {
	var out []error
	ips := &f.IntrusionPrevention
	for _, d := range deadTriggers(f) {
		out = append(out, diag.Errorf(d.pos, "intrusion_prevention.%s.%s (%c) can never fire: %s",
			d.group, triggerNames[d.code], d.code, d.why))
	}
	for _, g := range ipsGroups {
		t := groupTriggers(ips, g.proto)
		if t == nil {
			continue
		}
		on := onTriggers(t)
		for _, lo := range t.LogOnly {
			if !strings.ContainsRune(string(on), rune(lo.Code)) {
				out = append(out, diag.Errorf(lo.Pos, "intrusion_prevention.%s.log_only lists %s, which is off: nothing to log",
					g.name, triggerNames[lo.Code]))
			}
		}
	}
	groupRefuses := false
	for _, g := range []*config.Triggers{ips.SMTP, ips.IMAPPOP3, ips.Web} {
		groupRefuses = groupRefuses || g != nil && g.RefuseBlocked != nil && *g.RefuseBlocked
	}
	if ips.RefuseBlocked != nil && !*ips.RefuseBlocked && ips.CloseBlockedConnection != nil && !*ips.CloseBlockedConnection && !groupRefuses {
		out = append(out, diag.Errorf(diag.Pos{File: f.Path},
			"intrusion_prevention: refuse_blocked and close_blocked_connection are both off, so a block neither refuses nor closes a connection (it only slows the address down, with tarpit_delay): turn at least one on"))
	}
	return out
}

// splitTriggers splits a TriggersEnabled list ("IL(log)PS") into its
// entries, each a reason code with its optional "(…)" note.
func splitTriggers(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		j := i + 1
		if j < len(s) && s[j] == '(' {
			if k := strings.IndexByte(s[j:], ')'); k >= 0 {
				j += k + 1
			}
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}
