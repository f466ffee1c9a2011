package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/config"
)

// checkWeb asks one web backend for / as the web gateway would reach it
// (no redirects followed) and reports its status line. Any answer below
// 500 passes: a login page, a redirect and a 404 all show a running web
// server; a 5xx is a broken application behind it.
func checkWeb(ctx context.Context, svc *config.Service, backend string, o Options) Result {
	r := Result{Check: "web", Server: "web backend", Target: backend}
	u, err := url.Parse(backend)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return r.fail(fmt.Sprintf("web backend %q is not an http:// or https:// URL", backend), err)
	}
	tr := &http.Transport{
		Proxy:             nil,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: !svc.BackendTLSVerify, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ref := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	if ref.Path == "" {
		ref.Path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.String(), nil)
	if err != nil {
		return r.fail("cannot build the request", err)
	}
	req.Header.Set("User-Agent", "postern-doctor")
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return r.fail(fmt.Sprintf("nothing listens at %s: start the web server there or correct services.web.backend (see examples/roundcube/nginx.conf.snippet)", u.Host), err)
		}
		return r.fail(fmt.Sprintf("the web backend at %s did not answer", u.Host), err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	r.HTTPStatus = resp.Proto + " " + resp.Status
	if loc := resp.Header.Get("Location"); loc != "" {
		r.Notes = append(r.Notes, "redirects to "+loc)
	}
	if resp.StatusCode >= 500 {
		return r.fail(fmt.Sprintf("the web backend at %s answers %s: the application behind the web server is failing (its error log says why)", u.Host, resp.Status), nil)
	}
	r.OK = true
	return r
}

// checkRspamd asks rspamd's /ping.
func checkRspamd(ctx context.Context, base string, o Options) Result {
	r := Result{Check: "spam", Server: "rspamd", Target: base}
	u, err := url.Parse(strings.TrimRight(base, "/") + "/ping")
	if err != nil {
		return r.fail(fmt.Sprintf("spam.rspamd %q is not a URL", base), err)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return r.fail("cannot build the request", err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return r.fail(fmt.Sprintf("rspamd at %s does not answer: start it (rspamd's normal worker listens on port 11333) or correct spam.rspamd", u.Host), err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(strings.TrimSpace(string(body)), "pong") {
		return r.fail(fmt.Sprintf("%s does not answer like rspamd (GET /ping: %s %q): spam.rspamd must name the normal worker (port 11333), not the controller", u.Host, resp.Status, strings.TrimSpace(string(body))), nil)
	}
	r.Notes = append(r.Notes, "rspamd answers /ping")
	r.OK = true
	return r
}

// checkSpamd sends spamd a PING.
func checkSpamd(ctx context.Context, addr string, o Options) Result {
	r := Result{Check: "spam", Server: "spamd", Target: addr}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return r.fail(fmt.Sprintf("spamd at %s does not answer: start it or correct spam.spamd", addr), err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		c.SetDeadline(d)
	}
	if _, err := io.WriteString(c, "PING SPAMC/1.5\r\n\r\n"); err != nil {
		return r.fail("spamd PING failed", err)
	}
	line, err := bufio.NewReader(io.LimitReader(c, 512)).ReadString('\n')
	if err != nil && line == "" {
		return r.fail(fmt.Sprintf("spamd at %s did not answer PING", addr), err)
	}
	if !strings.Contains(line, "PONG") {
		return r.fail(fmt.Sprintf("%s does not answer like spamd: %q", addr, strings.TrimSpace(line)), nil)
	}
	r.Notes = append(r.Notes, "spamd answers PING")
	r.OK = true
	return r
}

// checkDNS asks the configured resolver for the root's name servers. An
// answer shows it reachable; REFUSED and SERVFAIL fail the check, since
// DNSBL lookups would fail the same way.
func checkDNS(ctx context.Context, resolver string, o Options) Result {
	r := Result{Check: "dns", Server: "DNS resolver", Target: resolver}
	m := new(dns.Msg)
	m.SetQuestion(".", dns.TypeNS)
	m.RecursionDesired = true
	c := &dns.Client{}
	if d, ok := ctx.Deadline(); ok {
		c.Timeout = max(0, time.Until(d))
	}
	in, _, err := c.ExchangeContext(ctx, m, resolver)
	if err != nil {
		return r.fail(fmt.Sprintf("the DNS resolver at %s does not answer: DNSBL and host-mask lookups will fail; correct dns.resolver or leave it out for the system resolver", resolver), err)
	}
	rc := dns.RcodeToString[in.Rcode]
	switch in.Rcode {
	case dns.RcodeRefused:
		return r.fail(fmt.Sprintf("the DNS resolver at %s refuses postern's queries: allow postern's address in its access list (DNSBL and host-mask lookups need it)", resolver), nil)
	case dns.RcodeServerFailure:
		return r.fail(fmt.Sprintf("the DNS resolver at %s answers SERVFAIL for the root zone: it cannot resolve (no upstream, or DNSSEC failing)", resolver), nil)
	}
	r.Notes = append(r.Notes, "answers queries ("+rc+")")
	r.OK = true
	return r
}

// checkAdmin connects to the administration API and, when the token can
// be read, asks for its health.
func checkAdmin(ctx context.Context, a config.Admin, o Options) Result {
	listen := a.Listen.Value
	if listen == "" {
		listen = admin.DefaultListen
	}
	tokenFile := a.TokenFile.Value
	if tokenFile == "" {
		tokenFile = admin.DefaultTokenFile
	}
	r := Result{Check: "admin", Server: "postern's admin API", Target: listen}
	network, addr, ok := strings.Cut(listen, ":")
	if !ok || network != "unix" && network != "tcp" {
		return r.fail(fmt.Sprintf("admin.listen %q: want unix:/path or tcp:host:port", listen), nil)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
			return r.fail(fmt.Sprintf("nothing listens at %s: is `postern serve` running with this configuration?", listen), err)
		case errors.Is(err, syscall.EACCES):
			return r.fail(fmt.Sprintf("no permission to open %s: run doctor as root or as postern's user", listen), err)
		}
		return r.fail(fmt.Sprintf("cannot connect to %s", listen), err)
	}
	c.Close()
	read := o.AdminToken
	if read == nil {
		read = admin.ReadToken
	}
	tok, err := read(tokenFile)
	if err != nil {
		r.Notes = append(r.Notes, "reachable; the token could not be read, so the API was not asked ("+err.Error()+")")
		r.OK = true
		return r
	}
	cl := admin.NewClient(listen, tok)
	defer cl.CloseIdleConnections()
	if _, err := cl.Health(ctx); err != nil {
		var ae *admin.APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			return r.fail(fmt.Sprintf("the admin API refused the token in %s: it is not the running postern's (restart postern after replacing it)", tokenFile), err)
		}
		return r.fail(fmt.Sprintf("the admin API at %s does not answer", listen), err)
	}
	r.Notes = append(r.Notes, "answers with the token in "+tokenFile)
	r.OK = true
	return r
}
