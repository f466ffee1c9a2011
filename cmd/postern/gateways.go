package main

import (
	"context"
	"crypto/tls"
	"fmt"
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
	"github.com/postern/postern/internal/netlisten"
	"github.com/postern/postern/internal/smtpproxy"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/spamscan"
	"github.com/postern/postern/internal/tlsconf"
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
		if svc == nil || !smtpproxy.IsService(name) {
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
			if name == "smtps" {
				implicit = certs.ServerConfig()
			}
		}
		maxPer := svc.MaxPerAddress
		if maxPer == 0 {
			maxPer = 20
		}
		ln, err := netlisten.Listen(ctx, netlisten.Config{
			Listen:     svc.Listen.Value,
			Trusted:    func(a netip.Addr) bool { return holder.Load().Policy.TrustedUpstream(a) },
			TLS:        implicit,
			MaxPerAddr: maxPer,
			MaxConns:   svc.MaxConnections,
			Logger:     log.With("service", name),
		})
		if err != nil {
			return fail(fmt.Errorf("service %s: %w", name, err))
		}
		host := svc.Hostname
		ln.SetOverLimit(func(c *netlisten.Conn, reason string) {
			fmt.Fprintf(c, "421 4.7.0 %s Error: too many connections from your address\r\n", orDefault(host, "postern"))
		})
		fe.ln = ln
		out = append(out, fe)
		log.Info("listening", "service", name, "addr", ln.Addr().String())
	}
	return out, nil
}

// smtpAcceptor adapts a netlisten.Listener to the SMTP proxy.
type smtpAcceptor struct{ ln *netlisten.Listener }

func (a smtpAcceptor) Accept() (net.Conn, netip.AddrPort, netip.AddrPort, error) {
	c, err := a.ln.Accept()
	if err != nil {
		return nil, netip.AddrPort{}, netip.AddrPort{}, err
	}
	return c, c.ClientAddr(), c.LocalAddrPort(), nil
}

func (a smtpAcceptor) Close() error { return a.ln.Close() }

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
		cfg, err := smtpproxy.FromConfig(fe.name, fe.svc, f, serverTLS)
		if err != nil {
			return err
		}
		if sp := f.Spam; sp.Rspamd.IsSet() || sp.Spamd.IsSet() {
			maxSize := sp.MaxSize.Bytes
			if maxSize == 0 {
				maxSize = 20 << 20
			}
			var sc spamscan.Scanner
			if sp.Rspamd.IsSet() {
				sc = spamscan.NewRspamd(sp.Rspamd.Value, spamscan.RspamdOptions{Timeout: sp.Timeout.D, MaxSize: maxSize})
			} else {
				sc = spamscan.NewSpamd(sp.Spamd.Value, sp.Timeout.D)
			}
			cfg.Scan = smtpproxy.Scanning{Scanner: sc, Reject: sp.Action.Value != "accept", Timeout: sp.Timeout.D, MaxSize: maxSize}
		}
		p := smtpproxy.New(cfg, g.engine, env, checker, g.log)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Serve(ctx, smtpAcceptor{fe.ln}, drainTime); err != nil {
				g.log.Error("front-end stopped", "service", fe.name, "err", err)
			}
		}()
	}
	return nil
}

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
