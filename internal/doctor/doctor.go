// Package doctor checks that postern can reach everything its
// configuration names, as postern would: each mail backend is dialled with
// the same PROXY header, XCLIENT and TLS settings as the gateways use, its
// greeting and capabilities are read as a client reads them, and the web
// backends, the spam scanner, the DNS resolver and the administration API
// are asked whether they answer. Failures come with advice in plain words
// (the PROXY header advice is relay's, so the gateways log the same words).
//
// The package knows the protocols only as a client does; it imports no
// gateway.
package doctor

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/service"
)

// DefaultTimeout bounds each check when Options.Timeout is zero. It is
// longer than Dovecot's haproxy_timeout (3 s) and the example Postfix
// smtpd_upstream_proxy_timeout (5 s), so a backend waiting for a PROXY
// header that never comes shows its own reaction.
const DefaultTimeout = 10 * time.Second

// ClientPort is the made-up client port of the doctor's PROXY headers and
// XCLIENT.
const ClientPort = 40000

// Options tune a run.
type Options struct {
	// Timeout bounds each check (default DefaultTimeout).
	Timeout time.Duration
	// Client is the client address written into the PROXY header and
	// XCLIENT (default 127.0.0.1 port ClientPort: the backends log it).
	// Its port must not be 0: Dovecot refuses a v1 header with port 0.
	Client netip.AddrPort
	// AdminToken reads the administration API's token from a file
	// (nil: admin.ReadToken). Tests replace it.
	AdminToken func(path string) (string, error)
}

// Result is the outcome of one check.
type Result struct {
	Check  string `json:"check"`            // "smtp", "imap", … "web", "spam", "dns", "admin"
	Server string `json:"server,omitempty"` // Postfix, Dovecot, rspamd, …
	Target string `json:"target"`           // address or URL checked
	Via    string `json:"via,omitempty"`    // how postern connects: "PROXY v2", "XCLIENT", "STARTTLS", "TLS"
	OK     bool   `json:"ok"`

	Greeting     string   `json:"greeting,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"` // IMAP CAPABILITY, POP3 CAPA, SMTP EHLO keywords
	Auth         []string `json:"auth,omitempty"`         // SASL mechanisms offered
	StartTLS     *bool    `json:"starttls,omitempty"`     // whether STARTTLS (POP3 STLS) is offered
	HTTPStatus   string   `json:"http_status,omitempty"`  // the web backend's status line
	Notes        []string `json:"notes,omitempty"`        // other facts in plain words

	Problem string `json:"problem,omitempty"` // what went wrong and what to change
	Error   string `json:"error,omitempty"`   // the underlying error, when there is one
}

// Report is the outcome of a run.
type Report struct {
	OK      bool     `json:"ok"` // every check passed
	Results []Result `json:"results"`
}

// Run checks everything f configures, each check in its own goroutine,
// and returns the results in a fixed order: the services in
// configuration order, then spam, dns and admin.
func Run(ctx context.Context, f *config.File, o Options) Report {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if !o.Client.IsValid() {
		o.Client = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ClientPort)
	}
	var checks []func(context.Context) Result
	for _, sv := range service.All {
		svc := f.Services[sv]
		if svc == nil {
			continue
		}
		name := sv.String()
		switch sv.Protocol() {
		case service.ProtocolSMTP:
			checks = append(checks, func(ctx context.Context) Result { return checkSMTP(ctx, name, svc, o) })
		case service.ProtocolMail:
			checks = append(checks, func(ctx context.Context) Result { return checkMail(ctx, name, svc, o) })
		default:
			for _, b := range svc.WebBackends() {
				checks = append(checks, func(ctx context.Context) Result { return checkWeb(ctx, svc, b, o) })
			}
		}
	}
	if sp := f.Spam; sp.Rspamd.IsSet() {
		checks = append(checks, func(ctx context.Context) Result { return checkRspamd(ctx, sp.Rspamd.Value, o) })
	} else if sp.Spamd.IsSet() {
		checks = append(checks, func(ctx context.Context) Result { return checkSpamd(ctx, sp.Spamd.Value, o) })
	}
	if r := f.DNS.Resolver; r.IsSet() {
		checks = append(checks, func(ctx context.Context) Result { return checkDNS(ctx, r.Value, o) })
	}
	checks = append(checks, func(ctx context.Context) Result { return checkAdmin(ctx, f.Admin, o) })

	rep := Report{Results: make([]Result, len(checks)), OK: true}
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			rep.Results[i] = c(cctx)
		}()
	}
	wg.Wait()
	for _, r := range rep.Results {
		rep.OK = rep.OK && r.OK
	}
	return rep
}

// fail sets r's problem (and the underlying error, if any) and returns r.
func (r Result) fail(problem string, err error) Result {
	r.OK = false
	r.Problem = problem
	if err != nil {
		r.Error = err.Error()
	}
	return r
}
