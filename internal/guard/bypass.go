package guard

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/safefile"
)

// Bypass is IceWarp's bypass list (§6), loaded unchanged: one item a line,
//
//	203.0.113.7 / i:203.0.113.0/24   an address item (any pattern item) — never blocked
//	s:*@partner.example               a sender (MAIL FROM) mask
//	r:postmaster@*                    a recipient mask
//	a:mx.partner.example              a host name whose A/AAAA records are bypassed
//	w:list.dnswl.example              a DNS whitelist zone (the SMTP gateway looks it up)
//	f:more-bypass.txt                 an include file
//	l:                                a local sender (sender domain in local_domains)
//	t:                                trusted sessions (always on; accepted for compatibility)
//
// '#' starts a comment. Authenticated and trusted sessions are
// bypassed even with an empty file, except for connections per minute and
// RSET (authentication is lost on RSET).
type Bypass struct {
	addrs        *patterns.Set // i: items, bare items and a: host addresses
	senders      *patterns.Set
	recipients   *patterns.Set
	Zones        []string // w: DNS whitelist zones, for the SMTP gateway to look up
	localSenders bool     // l:
	hosts        []string // a: names, kept for explanations
}

// LoadBypass reads a bypass file, named at from in the configuration (the
// zero Pos: the file itself). Host names (a:) are resolved with resolve
// (nil: the system resolver) within ctx's deadline; a name that does not
// resolve is an error naming its line.
func LoadBypass(ctx context.Context, path string, from diag.Pos, resolve func(ctx context.Context, host string) ([]netip.Addr, error)) (*Bypass, error) {
	if resolve == nil {
		resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	var (
		addrs, senders, recipients []string
		b                          = &Bypass{}
		errs                       diag.List
	)
	var read func(path string, depth int, from diag.Pos)
	read = func(path string, depth int, from diag.Pos) {
		if depth > 8 {
			errs.Add(diag.Errorf(from, "bypass includes nested more than 8 deep"))
			return
		}
		// A regular file only, bounded, opened without blocking (a FIFO must
		// not hang a reload).
		data, err := safefile.ReadFile(path, safefile.MaxText)
		if err != nil {
			errs.Add(diag.Errorf(from, "bypass file: open %w", err))
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		line := 0
		for sc.Scan() {
			line++
			pos := diag.Pos{File: path, Line: line, Col: 1}
			text := sc.Text()
			if i := strings.IndexByte(text, '#'); i >= 0 {
				text = text[:i]
			}
			text = strings.TrimSpace(text)
			if text == "" {
				continue
			}
			kind, value := "i", text
			if len(text) >= 2 && text[1] == ':' && strings.IndexByte("israwflt", lower(text[0])) >= 0 && !isIPv6ish(text) {
				kind, value = string(lower(text[0])), strings.TrimSpace(text[2:])
			}
			item := fmt.Sprintf("%s\t%d", value, line)
			switch kind {
			case "i":
				addrs = append(addrs, item)
			case "s":
				senders = append(senders, item)
			case "r":
				recipients = append(recipients, item)
			case "a":
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				ips, err := resolve(rctx, value)
				cancel()
				if err != nil || len(ips) == 0 {
					errs.Add(diag.Errorf(pos, "a:%s: the host name does not resolve: %v", value, err))
					continue
				}
				b.hosts = append(b.hosts, value)
				for _, ip := range ips {
					addrs = append(addrs, fmt.Sprintf("%s\t%d", ip.Unmap(), line))
				}
			case "w":
				if value == "" || strings.ContainsAny(value, " /@") {
					errs.Add(diag.Errorf(pos, "w:%s: want a DNS zone such as list.dnswl.example", value))
					continue
				}
				b.Zones = append(b.Zones, strings.TrimSuffix(strings.ToLower(value), "."))
			case "f":
				p := value
				if !filepath.IsAbs(p) {
					p = filepath.Join(filepath.Dir(path), p)
				}
				read(p, depth+1, pos)
			case "l":
				b.localSenders = true
			case "t":
				// Trusted sessions are always bypassed.
			}
		}
		if err := sc.Err(); err != nil {
			errs.Add(diag.Errorf(diag.Pos{File: path, Line: line + 1}, "bypass file: %w", err))
		}
	}
	if !from.IsValid() {
		from = diag.Pos{File: path}
	}
	read(path, 0, from)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	var err error
	if b.addrs, err = compileLines("bypass addresses", path, addrs, false); err != nil {
		return nil, err
	}
	if b.senders, err = compileLines("bypass senders", path, senders, true); err != nil {
		return nil, err
	}
	if b.recipients, err = compileLines("bypass recipients", path, recipients, true); err != nil {
		return nil, err
	}
	return b, nil
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isIPv6ish tells "a:b::1" (an address) from "a:host" (a prefix item).
func isIPv6ish(s string) bool {
	_, err := netip.ParseAddr(s)
	if err == nil {
		return true
	}
	_, err = netip.ParsePrefix(s)
	return err == nil
}

// compileLines compiles "value\tline" items into one anonymous pattern,
// each item keeping its own line.
func compileLines(name, file string, lines []string, mail bool) (*patterns.Set, error) {
	if len(lines) == 0 {
		return nil, nil
	}
	reg, err := patterns.Compile(nil, patterns.Options{})
	if err != nil {
		return nil, err
	}
	var errs diag.List
	var parts []*patterns.Set
	for _, l := range lines {
		value, ln, _ := strings.Cut(l, "\t")
		var line int
		fmt.Sscan(ln, &line)
		if mail && !strings.Contains(value, "@") {
			errs.Add(diag.Errorf(diag.Pos{File: file, Line: line, Col: 3}, "%s: %q is not a mail mask", name, value))
			continue
		}
		set, err := reg.Expr(patterns.Source{Text: value, Pos: diag.Pos{File: file, Line: line, Col: 1}})
		if err != nil {
			errs.Add(err)
			continue
		}
		parts = append(parts, set)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return patterns.Union(name, parts), nil
}

// Addr reports whether addr is on the bypass list itself (i:, a:).
func (b *Bypass) Addr(addr netip.Addr) bool { return b != nil && b.addrs.Contains(addr) }

// Sender reports whether a MAIL FROM address is bypassed (s:).
func (b *Bypass) Sender(mail string) bool { return b != nil && b.senders.ContainsMail(mail) }

// Recipient reports whether a recipient is bypassed (r:).
func (b *Bypass) Recipient(mail string) bool { return b != nil && b.recipients.ContainsMail(mail) }

// LocalSenders reports whether local senders (l:) are bypassed.
func (b *Bypass) LocalSenders() bool { return b != nil && b.localSenders }

// BypassRow says which triggers one bypass condition can bypass. A
// condition known only later in a session cannot bypass a trigger that
// fires earlier (the seed's caveat).
type BypassRow struct {
	Condition string
	Known     string // when the condition becomes known
	Triggers  string // reason codes it can bypass
}

// BypassTable lists every bypass condition and the triggers it can bypass,
// for `postern check`.
func BypassTable() []BypassRow {
	return []BypassRow{
		{"i: address, a: host name", "at connect", "I L P Y R S D M A C"},
		{"w: DNS whitelist zone", "after the DNS lookup at connect", "L P Y R S D M A C"},
		{"t: trusted session (authenticated, or a trusted upstream)", "after AUTH", "P Y S M A C"},
		{"s: sender, l: local sender", "after MAIL FROM", "P Y R S M A C"},
		{"r: recipient", "at RCPT TO (that recipient; then the message)", "P Y S M A C"},
	}
}
