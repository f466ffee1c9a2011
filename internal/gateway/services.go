package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/dnsbl"
	"github.com/postern/postern/internal/evloop"
	"github.com/postern/postern/internal/imapproxy"
	"github.com/postern/postern/internal/metrics"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/pop3proxy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/spamscan"
	"github.com/postern/postern/internal/tlsconf"
	"github.com/postern/postern/internal/webproxy"
)

// slot is one configured service's place in the gateway: its listener,
// which outlives reloads, and the server generation accepting on it.
type slot struct {
	name   service.Service
	listen string // the address as configured
	ln     *netlisten.Listener
	certs  *tlsconf.Certs      // the certificates served; nil without tls
	limit  *relay.BackendLimit // shared by the generations, so a reload does not reset its count
	gen    *generation         // the server accepting now; nil before Run

	watched   *tlsconf.Certs     // the certificates being watched
	stopWatch context.CancelFunc // ends that watch
}

// generation is one server built from one configuration, serving one
// listener until it is handed over (or the gateway stops).
type generation struct {
	stop chan struct{}
	once sync.Once
}

func (gen *generation) handOver() { gen.once.Do(func() { close(gen.stop) }) }

// genAcceptor gives a generation the listener's connections until the
// generation is handed over; closing it hands it over, never closing the
// listener.
type genAcceptor struct {
	ln  *netlisten.Listener
	gen *generation
}

func (a genAcceptor) Accept() (relay.Conn, error) {
	c, err := a.ln.AcceptUntil(a.gen.stop)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a genAcceptor) Close() error { a.gen.handOver(); return nil }

// Dispatch starts the generation's handlers on the listener's goroutines
// until the generation is handed over (relay.Dispatcher).
func (a genAcceptor) Dispatch(start func(relay.Conn)) error {
	return a.ln.ServeUntil(a.gen.stop, func(c *netlisten.Conn) { start(c) })
}

// netListener is the acceptor as a net.Listener, for the web gateway's
// HTTP server.
func (a genAcceptor) netListener() net.Listener { return genNetListener{a} }

type genNetListener struct{ a genAcceptor }

func (l genNetListener) Accept() (net.Conn, error) {
	c, err := l.a.ln.AcceptUntil(l.a.gen.stop)
	if err != nil {
		return nil, err
	}
	return c, nil
}
func (l genNetListener) Close() error   { return l.a.Close() }
func (l genNetListener) Addr() net.Addr { return l.a.ln.Addr() }

// server is what the SMTP, IMAP and POP3 gateways offer the gateway.
type server interface {
	Serve(ctx context.Context, ln relay.Acceptor, drain time.Duration) error
}

// built is one service's front-end built from a snapshot, not yet serving.
type built struct {
	name    service.Service
	svc     *config.Service
	serve   func(ctx context.Context, acc genAcceptor, drain time.Duration) error
	certs   *tlsconf.Certs // the certificates it serves; nil without tls
	limit   *relay.BackendLimit
	bounds  [2]int // the backend limit's bounds in this configuration
	refusal string // the answer to a connection over a listener limit
	// owned: its sessions run on event loops (loops), whose client
	// sockets are their own (netlisten.Listener.SetOwnedSockets), and so
	// does its listener's accept loop (SetAcceptOnLoop).
	owned bool
	loops *evloop.Group
}

// plan is a whole configuration's front-ends, built and waiting to be put
// in service.
type plan struct {
	services []*built // in configuration order
	checker  *dnsbl.Checker
	dns      config.DNS
}

// prepare builds every front-end of snap. It changes nothing in the
// running gateway.
func (g *Gateway) prepare(snap *snapshot.Snapshot) (*plan, error) {
	f := snap.Config
	p := &plan{checker: g.checker, dns: f.DNS}
	if g.checker == nil || !sameDNS(g.dns, f.DNS) {
		p.checker = dnsbl.New(dnsbl.Options{Resolver: f.DNS.Resolver.Value, Timeout: f.DNS.Timeout.D, CacheTTL: f.DNS.Cache.D})
	}
	for _, name := range service.All {
		svc := f.Services[name]
		if svc == nil {
			continue
		}
		b, err := g.build(snap, p.checker, name, svc)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		p.services = append(p.services, b)
	}
	return p, nil
}

func sameDNS(a, b config.DNS) bool {
	return a.Resolver.Value == b.Resolver.Value && a.Timeout.D == b.Timeout.D && a.Cache.D == b.Cache.D
}

// build makes one service's front-end from snap.
func (g *Gateway) build(snap *snapshot.Snapshot, checker *dnsbl.Checker, name service.Service, svc *config.Service) (*built, error) {
	f := snap.Config
	b := &built{name: name, svc: svc, limit: &relay.BackendLimit{}}
	sl := g.slots[name]
	if sl != nil {
		b.limit = sl.limit
	}
	var serverTLS *tls.Config
	if svc.TLS != nil {
		if sl != nil && sl.certs != nil && sl.certs.CertFile() == svc.TLS.Cert.Value && sl.certs.KeyFile() == svc.TLS.Key.Value {
			b.certs = sl.certs
		} else {
			certs, err := tlsconf.Load(svc.TLS.Cert.Value, svc.TLS.Key.Value)
			if err != nil {
				return nil, err
			}
			b.certs = certs
		}
		serverTLS = g.serverTLS(name, b.certs)
	}
	host := "postern"
	if svc.SMTP != nil && svc.SMTP.Hostname != "" {
		host = string(svc.SMTP.Hostname)
	}
	b.refusal = overLimitReply(name, host)
	if name == service.Web && svc.TLS != nil {
		b.refusal = "" // HTTPS: no answer before the handshake; the connection is closed
	}
	switch {
	case name.Protocol() == service.ProtocolSMTP:
		cfg, err := smtpproxy.FromConfig(svc, f, serverTLS)
		if err != nil {
			return nil, err
		}
		if cfg.BackendLimit != nil {
			b.bounds = [2]int{cfg.BackendLimit.Max, cfg.BackendLimit.PerNetwork}
		}
		cfg.BackendLimit = b.limit
		cfg.Observer = g.smtpObserver()
		if sp := f.Spam; sp.Rspamd.IsSet() || sp.Spamd.IsSet() {
			maxSize := sp.MaxSize.Bytes
			var sc spamscan.Scanner
			if sp.Rspamd.IsSet() {
				sc = spamscan.NewRspamd(sp.Rspamd.Value, spamscan.RspamdOptions{Timeout: sp.Timeout.D, MaxSize: maxSize})
			} else {
				sc = spamscan.NewSpamd(sp.Spamd.Value, sp.Timeout.D)
			}
			cfg.Scan = smtpproxy.Scanning{Scanner: g.scanner(sc), Reject: sp.Action.Value != "accept", Timeout: sp.Timeout.D, MaxSize: maxSize}
		}
		cfg.Watch = g.loginWatcher()
		cfg.Loops = g.eventLoops(snap.Config.EventLoopsOn())
		b.owned, b.loops = cfg.Loops != nil && !name.ImplicitTLS(), cfg.Loops
		srv := smtpproxy.New(cfg, g.engine, g.smtpEnv, g.dnsbl(checker), g.log)
		b.serve = func(ctx context.Context, acc genAcceptor, drain time.Duration) error {
			return srv.Serve(ctx, acc, drain)
		}
	case svc.Mail != nil:
		d, plain, err := mailDialer(snap, svc)
		if err != nil {
			return nil, err
		}
		lim := relay.NewBackendLimit(svc.Mail.MaxBackend, svc.Mail.MaxBackendPerNetwork)
		b.bounds = [2]int{lim.Max, lim.PerNetwork}
		d.Limit = b.limit
		d.Names = &relay.Names{} // backend host names looked up at most every DefaultNameTTL
		g.measureDialer(&d, name)
		// imapproxy.Config and pop3proxy.Config are the one mailgate.Config.
		cfg := imapproxy.Config{Service: name, Backend: d, ImplicitTLS: name.ImplicitTLS(), PlaintextLogin: plain,
			PreAuthIdle: svc.Mail.Timeouts.Command.D, BackendTimeout: svc.Mail.Timeouts.Backend.D, Watch: g.loginWatcher(),
			Loops: g.eventLoops(snap.Config.EventLoopsOn())}
		if !name.ImplicitTLS() {
			cfg.TLS = serverTLS // STARTTLS, STLS
		}
		b.owned, b.loops = cfg.Loops != nil && !name.ImplicitTLS(), cfg.Loops
		var srv server
		if name == service.IMAP || name == service.IMAPS {
			srv = imapproxy.New(cfg, g.engine, g.currentPolicy, g.log)
		} else {
			srv = pop3proxy.New(cfg, g.engine, g.currentPolicy, g.log)
		}
		b.serve = func(ctx context.Context, acc genAcceptor, drain time.Duration) error {
			return srv.Serve(ctx, acc, drain)
		}
	case svc.Web != nil:
		cfg, err := webproxy.FromConfig(svc, serverTLS)
		if err != nil {
			return nil, err
		}
		cfg.Trusted = g.trustedUpstream
		g.measureWeb(&cfg)
		cfg.Watch = g.loginWatcher()
		wp, err := webproxy.New(cfg, g.engine, g.currentPolicy, g.log)
		if err != nil {
			return nil, err
		}
		b.serve = func(ctx context.Context, acc genAcceptor, drain time.Duration) error {
			return wp.Serve(ctx, acc.netListener(), drain)
		}
	default:
		return nil, fmt.Errorf("no gateway for this service")
	}
	return b, nil
}

// mailDialer builds the backend dialer and the plaintext-login rule of an
// IMAP or POP3 service.
func mailDialer(snap *snapshot.Snapshot, svc *config.Service) (relay.Dialer, func(netip.Addr) bool, error) {
	o := svc.Mail
	d := relay.Dialer{Addr: svc.Backend.Value, Proxy: string(o.BackendProxy), Timeout: o.Timeouts.Connect.D}
	if o.BackendTLS == config.TLSImplicit {
		host, _, err := net.SplitHostPort(d.Addr)
		if err != nil {
			return d, nil, fmt.Errorf("backend %q: %w", d.Addr, err)
		}
		d.TLS = &tls.Config{ServerName: host, InsecureSkipVerify: !svc.BackendTLSVerify, MinVersion: tls.VersionTLS12}
	}
	var plain func(netip.Addr) bool
	if pl := o.PlaintextLogin; pl.IsSet() {
		set, err := snap.Patterns.Expr(patternSource(pl))
		if err != nil {
			return d, nil, err
		}
		plain = func(a netip.Addr) bool { return set.ContainsClient(context.Background(), a) }
	}
	return d, plain, nil
}

func patternSource(t config.Text) patterns.Source {
	return patterns.Source{Text: t.Value, Pos: t.Pos, Quoted: t.Quoted}
}

// smtpEnv is what the SMTP gateways read of the running configuration per
// session.
func (g *Gateway) smtpEnv() smtpproxy.Env {
	s := g.holder.Load()
	e := smtpproxy.Env{Policy: s.Policy, LocalDomains: s.Guard.LocalDomains}
	if t := s.Config.IntrusionPrevention.SMTP; t != nil {
		for _, z := range t.DNSBL {
			e.DNSBLZones = append(e.DNSBLZones, z.Value)
		}
	}
	if s.Guard.Bypass != nil {
		e.DNSWLZones = s.Guard.Bypass.Zones
	}
	return e
}

// currentPolicy is the access policy of the running configuration.
func (g *Gateway) currentPolicy() *policy.Policy { return g.holder.Load().Policy }

// trustedUpstream reports the load balancers of the running configuration.
func (g *Gateway) trustedUpstream(a netip.Addr) bool {
	return g.holder.Load().Policy.TrustedUpstream(a)
}

// bind opens a service's listener. It runs before privileges are dropped
// at start; on a reload it can bind what the running user may.
func (g *Gateway) bind(ctx context.Context, name service.Service, svc *config.Service, certs *tlsconf.Certs) (*slot, error) {
	var implicit *tls.Config
	if certs != nil && name.ImplicitTLS() {
		implicit = g.serverTLS(name, certs)
	}
	ln, err := netlisten.Listen(ctx, netlisten.Config{
		Listen:     svc.Listen.Value,
		Trusted:    g.trustedUpstream,
		TLS:        implicit,
		MaxPerAddr: svc.MaxPerAddress,
		MaxConns:   svc.MaxConnections,
		Logger:     g.log.With("service", name),

		HandshakeFailed: g.handshakeFailed(name),
		EarlyTalker:     g.earlyTalker(name),
	})
	if err != nil {
		return nil, err
	}
	g.log.Info("listening", "service", name, "addr", ln.Addr().String())
	return &slot{name: name, listen: svc.Listen.Value, ln: ln, certs: certs, limit: &relay.BackendLimit{}}, nil
}

// bindAll binds the listener of every service at start, with its
// certificates.
func (g *Gateway) bindAll(ctx context.Context, snap *snapshot.Snapshot) error {
	for _, name := range service.All {
		svc := snap.Config.Services[name]
		if svc == nil {
			continue
		}
		var certs *tlsconf.Certs
		if svc.TLS != nil {
			c, err := tlsconf.Load(svc.TLS.Cert.Value, svc.TLS.Key.Value)
			if err != nil {
				return fmt.Errorf("service %s: %w", name, err)
			}
			certs = c
		}
		sl, err := g.bind(ctx, name, svc, certs)
		if err != nil {
			return listenError(name.String(), svc.Listen.Value, err)
		}
		g.slots[name] = sl
	}
	return nil
}

// commit puts a plan in service: each service's listener is set up for
// the new configuration (bound if new or moved) and handed to the new
// server; services no longer configured stop accepting. Sessions in
// flight go on. It returns what it could not do (a listener that could
// not be bound); the rest is applied.
func (g *Gateway) commit(p *plan) []error {
	var problems []error
	g.checker, g.dns = p.checker, p.dns
	keep := make(map[service.Service]bool, len(p.services))
	for _, b := range p.services {
		keep[b.name] = true
		sl := g.slots[b.name]
		switch {
		case sl == nil:
			nsl, err := g.bind(g.ctx, b.name, b.svc, b.certs)
			if err != nil {
				problems = append(problems, fmt.Errorf("service %s is configured but not started (a restart starts it): %w", b.name, listenError(b.name.String(), b.svc.Listen.Value, err)))
				continue
			}
			nsl.limit = b.limit
			g.slots[b.name] = nsl
			sl = nsl
		case sl.listen != b.svc.Listen.Value:
			nsl, err := g.bind(g.ctx, b.name, b.svc, b.certs)
			if err != nil {
				problems = append(problems, fmt.Errorf("service %s stays on %s until a restart: %w", b.name, sl.ln.Addr(), listenError(b.name.String(), b.svc.Listen.Value, err)))
				break
			}
			g.log.Info("service moved", "service", b.name, "from", sl.ln.Addr().String(), "to", nsl.ln.Addr().String())
			nsl.limit, nsl.watched, nsl.stopWatch = sl.limit, sl.watched, sl.stopWatch
			sl.watched, sl.stopWatch = nil, nil
			sl.retire()
			g.slots[b.name] = nsl
			sl = nsl
		}
		if err := g.configure(sl, b); err != nil {
			problems = append(problems, err)
		}
		g.startGen(sl, b)
	}
	for _, name := range service.All {
		if sl := g.slots[name]; sl != nil && !keep[name] {
			sl.retire()
			delete(g.slots, name)
			g.log.Info("service removed: its listener is closed, its sessions go on", "service", name, "addr", sl.ln.Addr().String())
		}
	}
	g.noteServices(p)
	return problems
}

// configure sets a slot's listener and shared parts to a built service.
func (g *Gateway) configure(sl *slot, b *built) error {
	var problem error
	if err := sl.ln.SetLimits(b.svc.MaxConnections, b.svc.MaxPerAddress); err != nil {
		problem = err
	}
	refusal := b.refusal
	sl.ln.SetOverLimit(func(c *netlisten.Conn, reason string) {
		g.refused(sl.name, metrics.WhyLimit)
		if refusal != "" {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, refusal)
		}
	})
	sl.limit.SetBounds(b.bounds[0], b.bounds[1])
	sl.ln.SetOwnedSockets(b.owned)
	if loops := b.loops; b.owned {
		sl.ln.SetAcceptOnLoop(func(h func(ctx context.Context)) { loops.Go(context.Background(), nil, h) })
	} else {
		sl.ln.SetAcceptOnLoop(nil)
	}
	if b.certs != sl.certs && b.certs != nil && sl.name.ImplicitTLS() {
		if err := sl.ln.SetTLS(g.serverTLS(sl.name, b.certs)); err != nil {
			problem = err
		}
	}
	if b.certs != nil && b.certs == sl.certs {
		changed, err := b.certs.ReloadIfChanged()
		switch {
		case err != nil:
			g.log.Error("certificate reload failed; the old certificate stays in service", "service", sl.name, "err", err)
		case changed:
			g.log.Info("certificate reloaded", "service", sl.name, "file", b.certs.CertFile(), "not_after", b.certs.NotAfter())
		}
	}
	sl.certs = b.certs
	if sl.watched != b.certs {
		if sl.stopWatch != nil {
			sl.stopWatch()
		}
		sl.watched, sl.stopWatch = nil, nil
		if certs := b.certs; certs != nil {
			for _, w := range certs.Warnings() {
				g.log.Warn("certificate", "service", sl.name, "warning", w)
			}
			ctx, cancel := context.WithCancel(g.ctx)
			sl.watched, sl.stopWatch = certs, cancel
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				certs.Watch(ctx, tlsconf.DefaultWatchInterval, func(msg string, args ...any) { g.log.Info(msg, append(args, "service", sl.name)...) })
			}()
		}
	}
	return problem
}

// startGen starts a server generation on the slot's listener and hands
// the previous one over: it accepts no more, its sessions go on.
func (g *Gateway) startGen(sl *slot, b *built) {
	gen := &generation{stop: make(chan struct{})}
	old := sl.gen
	sl.gen = gen
	acc := genAcceptor{ln: sl.ln, gen: gen}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := b.serve(g.ctx, acc, g.opts.Drain); err != nil {
			g.log.Error("front-end stopped", "service", b.name, "err", err)
		}
	}()
	if old != nil {
		old.handOver()
	}
}

// retire stops a slot's listener: its generation accepts no more, the
// socket is closed, the certificate watch ends. Its sessions go on.
func (sl *slot) retire() {
	if sl.gen != nil {
		sl.gen.handOver()
	}
	sl.ln.Close()
	if sl.stopWatch != nil {
		sl.stopWatch()
	}
}

// startAll puts the front-ends built at start in service.
func (g *Gateway) startAll() {
	for _, p := range g.commit(g.initial) {
		g.log.Error("front-ends", "err", p)
	}
	g.initial = nil
}

// closeListeners stops every listener accepting.
func (g *Gateway) closeListeners() {
	for _, sl := range g.slots {
		sl.retire()
	}
}

// overLimitReply is the protocol's refusal for a connection over a limit.
func overLimitReply(svc service.Service, host string) string {
	switch svc.Protocol() {
	case service.ProtocolMail:
		if svc == service.IMAP || svc == service.IMAPS {
			return "* BYE Too many connections from your address\r\n"
		}
		return "-ERR [SYS/TEMP] Too many connections from your address\r\n"
	case service.ProtocolWeb:
		const body = "Too many connections from your address.\n"
		return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 60\r\nConnection: close\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	return "421 4.7.0 " + host + " Error: too many connections from your address\r\n"
}
