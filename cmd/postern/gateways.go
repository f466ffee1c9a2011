package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/dnsbl"
	"github.com/postern/postern/internal/imapproxy"
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/pop3proxy"
	"github.com/postern/postern/internal/relay"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/spamscan"
	"github.com/postern/postern/internal/tlsconf"
	"github.com/postern/postern/internal/webproxy"
)

// drainTime is how long live sessions may finish after a stop signal.
const drainTime = 30 * time.Second

// frontEnd is one bound listener waiting for its protocol handler.
type frontEnd struct {
	name  string
	svc   *config.Service
	ln    *netlisten.Listener
	certs *tlsconf.Certs
}

// bindFrontEnds binds the listeners of every configured protocol service.
// It runs before privileges are dropped.
func bindFrontEnds(ctx context.Context, snap *snapshot.Snapshot, holder *snapshot.Holder, log *slog.Logger) ([]*frontEnd, error) {
	var out []*frontEnd
	fail := func(err error) ([]*frontEnd, error) {
		for _, fe := range out {
			fe.ln.Close()
		}
		return nil, err
	}
	for _, name := range config.ServiceNames {
		svc := snap.Config.Services[name]
		if svc == nil {
			continue
		}
		fe := &frontEnd{name: name, svc: svc}
		var implicit *tls.Config
		if svc.TLS != nil {
			certs, err := tlsconf.Load(svc.TLS.Cert.Value, svc.TLS.Key.Value)
			if err != nil {
				return fail(fmt.Errorf("service %s: %w", name, err))
			}
			for _, w := range certs.Warnings() {
				log.Warn("certificate", "service", name, "warning", w)
			}
			fe.certs = certs
			if config.ImplicitTLS(name) {
				implicit = certs.ServerConfig()
			}
		}
		ln, err := netlisten.Listen(ctx, netlisten.Config{
			Listen:     svc.Listen.Value,
			Trusted:    func(a netip.Addr) bool { return holder.Load().Policy.TrustedUpstream(a) },
			TLS:        implicit,
			MaxPerAddr: svc.MaxPerAddress,
			MaxConns:   svc.MaxConnections,
			Logger:     log.With("service", name),
		})
		if err != nil {
			return fail(fmt.Errorf("service %s: %w", name, err))
		}
		host := "postern"
		if svc.SMTP != nil && svc.SMTP.Hostname != "" {
			host = string(svc.SMTP.Hostname)
		}
		refusal := overLimitReply(name, host)
		if name == "web" && svc.TLS != nil {
			refusal = "" // HTTPS: no answer before the handshake; the connection is closed
		}
		ln.SetOverLimit(func(c *netlisten.Conn, reason string) {
			if refusal != "" {
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, refusal)
			}
		})
		fe.ln = ln
		out = append(out, fe)
		log.Info("listening", "service", name, "addr", ln.Addr().String())
	}
	return out, nil
}

// overLimitReply is the protocol's refusal for a connection over a limit.
func overLimitReply(service, host string) string {
	switch service {
	case "imap", "imaps":
		return "* BYE Too many connections from your address\r\n"
	case "pop3", "pop3s":
		return "-ERR [SYS/TEMP] Too many connections from your address\r\n"
	case "web":
		const body = "Too many connections from your address.\n"
		return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 60\r\nConnection: close\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	return "421 4.7.0 " + host + " Error: too many connections from your address\r\n"
}

// acceptor adapts a netlisten.Listener to the gateways.
type acceptor struct{ ln *netlisten.Listener }

func (a acceptor) Accept() (relay.Conn, error) {
	c, err := a.ln.Accept()
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a acceptor) Close() error { return a.ln.Close() }

// server is what every gateway offers serve.
type server interface {
	Serve(ctx context.Context, ln relay.Acceptor, drain time.Duration) error
}

// mailReaderConfig builds the shared parts of the IMAP and POP3 gateways.
func (g *gateway) mailReaderConfig(fe *frontEnd, f *config.File) (relay.Dialer, func(netip.Addr) bool, error) {
	svc, o := fe.svc, fe.svc.Mail
	if o == nil {
		return relay.Dialer{}, nil, fmt.Errorf("service %s is not an IMAP or POP3 service", fe.name)
	}
	d := relay.Dialer{Addr: svc.Backend.Value, Proxy: string(o.BackendProxy), Timeout: o.Timeouts.Connect.D,
		Limit: relay.NewBackendLimit(o.MaxBackend, o.MaxBackendPerNetwork)}
	if o.BackendTLS == config.TLSImplicit {
		host, _, err := net.SplitHostPort(d.Addr)
		if err != nil {
			return d, nil, fmt.Errorf("service %s: backend %q: %w", fe.name, d.Addr, err)
		}
		d.TLS = &tls.Config{ServerName: host, InsecureSkipVerify: !svc.BackendTLSVerify, MinVersion: tls.VersionTLS12}
	}
	var plain func(netip.Addr) bool
	if pl := o.PlaintextLogin; pl.IsSet() {
		set, err := g.holder.Load().Patterns.Expr(patterns.Source{Text: pl.Value, Pos: pl.Pos, Quoted: pl.Quoted})
		if err != nil {
			return d, nil, err
		}
		plain = func(a netip.Addr) bool { return set.ContainsClient(context.Background(), a) }
	}
	return d, plain, nil
}

// runFrontEnds serves every bound listener until ctx is done.
func (g *gateway) runFrontEnds(ctx context.Context, wg *sync.WaitGroup) error {
	snap := g.holder.Load()
	f := snap.Config
	checker := dnsbl.New(dnsbl.Options{Resolver: f.DNS.Resolver.Value, Timeout: f.DNS.Timeout.D, CacheTTL: f.DNS.Cache.D})
	env := func() smtpproxy.Env {
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
	for _, fe := range g.fronts {
		var serverTLS *tls.Config
		if fe.certs != nil {
			serverTLS = fe.certs.ServerConfig()
			wg.Add(1)
			go func() {
				defer wg.Done()
				fe.certs.Watch(ctx, tlsconf.DefaultWatchInterval, func(msg string, args ...any) { g.log.Info(msg, append(args, "service", fe.name)...) })
			}()
		}
		var srv server
		switch fe.name {
		case "smtp", "submission", "smtps":
			cfg, err := smtpproxy.FromConfig(fe.name, fe.svc, f, serverTLS)
			if err != nil {
				return err
			}
			if sp := f.Spam; sp.Rspamd.IsSet() || sp.Spamd.IsSet() {
				maxSize := sp.MaxSize.Bytes // default in config.Spam
				var sc spamscan.Scanner
				if sp.Rspamd.IsSet() {
					sc = spamscan.NewRspamd(sp.Rspamd.Value, spamscan.RspamdOptions{Timeout: sp.Timeout.D, MaxSize: maxSize})
				} else {
					sc = spamscan.NewSpamd(sp.Spamd.Value, sp.Timeout.D)
				}
				cfg.Scan = smtpproxy.Scanning{Scanner: sc, Reject: sp.Action.Value != "accept", Timeout: sp.Timeout.D, MaxSize: maxSize}
			}
			srv = smtpproxy.New(cfg, g.engine, env, checker, g.log)
		case "imap", "imaps":
			d, plain, err := g.mailReaderConfig(fe, f)
			if err != nil {
				return err
			}
			cfg := imapproxy.Config{Service: fe.name, Backend: d, ImplicitTLS: fe.name == "imaps", PlaintextLogin: plain,
				PreAuthIdle: fe.svc.Mail.Timeouts.Command.D, BackendTimeout: fe.svc.Mail.Timeouts.Backend.D}
			if fe.name == "imap" {
				cfg.TLS = serverTLS
			}
			srv = imapproxy.New(cfg, g.engine, g.currentPolicy, g.log)
		case "pop3", "pop3s":
			d, plain, err := g.mailReaderConfig(fe, f)
			if err != nil {
				return err
			}
			cfg := pop3proxy.Config{Service: fe.name, Backend: d, ImplicitTLS: fe.name == "pop3s", PlaintextLogin: plain,
				PreAuthIdle: fe.svc.Mail.Timeouts.Command.D, BackendTimeout: fe.svc.Mail.Timeouts.Backend.D}
			if fe.name == "pop3" {
				cfg.TLS = serverTLS
			}
			srv = pop3proxy.New(cfg, g.engine, g.currentPolicy, g.log)
		case "web":
			cfg, err := webproxy.FromConfig(fe.svc, serverTLS)
			if err != nil {
				return fmt.Errorf("service web: %w", err)
			}
			cfg.Trusted = func(a netip.Addr) bool { return g.holder.Load().Policy.TrustedUpstream(a) }
			wp, err := webproxy.New(cfg, g.engine, g.currentPolicy, g.log)
			if err != nil {
				return fmt.Errorf("service web: %w", err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := wp.Serve(ctx, fe.ln.NetListener(), drainTime); err != nil {
					g.log.Error("front-end stopped", "service", fe.name, "err", err)
				}
			}()
			continue
		default:
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, acceptor{fe.ln}, drainTime); err != nil {
				g.log.Error("front-end stopped", "service", fe.name, "err", err)
			}
		}()
	}
	return nil
}

// currentPolicy is the access policy of the running configuration.
func (g *gateway) currentPolicy() *policy.Policy { return g.holder.Load().Policy }

// dropPrivileges switches to the run_as user once the ports are bound.
func dropPrivileges(name string, log *slog.Logger) error {
	if name == "" {
		if os.Geteuid() == 0 {
			log.Warn("running as root: set run_as to an unprivileged user")
		}
		return nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("run_as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if os.Geteuid() == uid {
		return nil
	}
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("run_as %s: setgroups: %w", name, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("run_as %s: setgid: %w", name, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("run_as %s: setuid: %w", name, err)
	}
	log.Info("dropped privileges", "user", name, "uid", uid, "gid", gid)
	return nil
}
