// Package bypass reads IceWarp's bypass list into a compiled, immutable
// List. The snapshot build loads it (with every item's file position, so an
// error in a file pulled in with f: names that file and line); the engine
// only reads it.
package bypass

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/safefile"
)

// maxDepth bounds how deep f: includes nest.
const maxDepth = 8

// resolveTimeout bounds the lookup of one a: host name.
const resolveTimeout = 5 * time.Second

// List is a compiled bypass list, loaded unchanged from IceWarp's format:
// one item a line,
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
// '#' starts a comment. Authenticated and trusted sessions are bypassed
// even with an empty file, except for connections per minute and RSET
// (authentication is lost on RSET). Nothing in a List changes after Load;
// a nil *List bypasses nothing.
type List struct {
	addrs        *patterns.Set // i: items, bare items and a: host addresses
	senders      *patterns.Set
	recipients   *patterns.Set
	Zones        []string // w: DNS whitelist zones, for the SMTP gateway to look up
	localSenders bool     // l:
	Hosts        []string // a: names, kept for explanations
	files        []string // the bypass file and every file it pulls in
}

// Resolver looks up the addresses of an a: host name.
type Resolver func(ctx context.Context, host string) ([]netip.Addr, error)

// item is one address, sender or recipient item and where it was written.
type item struct {
	text string
	pos  diag.Pos // the value's own file, line and column
}

// loader holds the state of one Load.
type loader struct {
	ctx                        context.Context
	resolve                    Resolver
	list                       *List
	addrs, senders, recipients []item
	errs                       diag.List
}

// Load reads the bypass file at path, named at from in the configuration
// (the zero Pos: the file itself), and every file it includes. Host names
// (a:) are resolved with resolve (nil: the system resolver) within ctx,
// each in at most five seconds; a name that does not resolve is an error
// naming its line. Every problem of every file is reported, each at its
// own file:line:column.
func Load(ctx context.Context, path string, from diag.Pos, resolve Resolver) (*List, error) {
	if resolve == nil {
		resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if !from.IsValid() {
		from = diag.Pos{File: path}
	}
	l := &loader{ctx: ctx, resolve: resolve, list: &List{}}
	l.read(path, 0, from)
	b := l.list
	var err error
	b.addrs, err = compile("bypass addresses", l.addrs, false, &b.files)
	l.errs.Add(err)
	b.senders, err = compile("bypass senders", l.senders, true, &b.files)
	l.errs.Add(err)
	b.recipients, err = compile("bypass recipients", l.recipients, true, &b.files)
	l.errs.Add(err)
	if err := l.errs.Err(); err != nil {
		return nil, err
	}
	return b, nil
}

// read reads one file, named at from, depth includes deep.
func (l *loader) read(path string, depth int, from diag.Pos) {
	if depth > maxDepth {
		l.errs.Add(diag.Errorf(from, "bypass includes nested more than %d deep", maxDepth))
		return
	}
	// A regular file only, bounded, opened without blocking (a FIFO must
	// not hang a reload).
	data, err := safefile.ReadFile(path, safefile.MaxText)
	if err != nil {
		l.errs.Add(diag.Errorf(from, "bypass file: open %w", err))
		return
	}
	l.list.files = append(l.list.files, path)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		l.line(path, line, sc.Text(), depth)
	}
	if err := sc.Err(); err != nil {
		l.errs.Add(diag.Errorf(diag.Pos{File: path, Line: line + 1}, "bypass file: %w", err))
	}
}

// line reads one line of the file at path.
func (l *loader) line(path string, n int, raw string, depth int) {
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	text := strings.TrimSpace(raw)
	if text == "" {
		return
	}
	// Columns count bytes from 1, as the configuration's positions do.
	start := len(raw) - len(strings.TrimLeftFunc(raw, unicode.IsSpace))
	pos := diag.Pos{File: path, Line: n, Col: start + 1}
	kind, value, valuePos := byte('i'), text, pos
	if len(text) >= 2 && text[1] == ':' && strings.IndexByte("israwflt", lower(text[0])) >= 0 && !isIPv6ish(text) {
		kind = lower(text[0])
		rest := text[2:]
		value = strings.TrimSpace(rest)
		valuePos.Col = pos.Col + 2 + len(rest) - len(strings.TrimLeftFunc(rest, unicode.IsSpace))
	}
	switch kind {
	case 'i':
		l.addrs = append(l.addrs, item{value, valuePos})
	case 's':
		l.senders = append(l.senders, item{value, valuePos})
	case 'r':
		l.recipients = append(l.recipients, item{value, valuePos})
	case 'a':
		ctx, cancel := context.WithTimeout(l.ctx, resolveTimeout)
		ips, err := l.resolve(ctx, value)
		cancel()
		if err != nil || len(ips) == 0 {
			l.errs.Add(diag.Errorf(pos, "a:%s: the host name does not resolve: %v", value, err))
			return
		}
		l.list.Hosts = append(l.list.Hosts, value)
		for _, ip := range ips {
			l.addrs = append(l.addrs, item{ip.Unmap().String(), valuePos})
		}
	case 'w':
		if value == "" || strings.ContainsAny(value, " /@") {
			l.errs.Add(diag.Errorf(pos, "w:%s: want a DNS zone such as list.dnswl.example", value))
			return
		}
		l.list.Zones = append(l.list.Zones, strings.TrimSuffix(strings.ToLower(value), "."))
	case 'f':
		p := value
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(path), p)
		}
		l.read(p, depth+1, pos)
	case 'l':
		l.list.localSenders = true
	case 't':
		// Trusted sessions are always bypassed.
	}
}

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// isIPv6ish tells "a:b::1" (an address) from "a:host" (a prefix item).
func isIPv6ish(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(s)
	return err == nil
}

// compile compiles items into one anonymous pattern, each item parsed at
// its own position. mail items must be mail masks. Include files the
// items read are added to files.
func compile(name string, items []item, mail bool, files *[]string) (*patterns.Set, error) {
	if len(items) == 0 {
		return nil, nil
	}
	reg, err := patterns.Compile(nil, patterns.Options{})
	if err != nil {
		return nil, err
	}
	var errs diag.List
	parts := make([]*patterns.Set, 0, len(items))
	for _, it := range items {
		if mail && !strings.Contains(it.text, "@") {
			errs.Add(diag.Errorf(it.pos, "%s: %q is not a mail mask", name, it.text))
			continue
		}
		set, err := reg.Expr(patterns.Source{Text: it.text, Pos: it.pos})
		if err != nil {
			if !mail && strings.Contains(err.Error(), "host mask") && !strings.ContainsAny(it.text, "*?") {
				// A plain host name: the bypass list names hosts with a:.
				err = diag.Errorf(it.pos, "%s: %q is a host name: write a:%s to bypass the addresses it resolves to", name, it.text, it.text)
			}
			errs.Add(err)
			continue
		}
		parts = append(parts, set)
	}
	*files = append(*files, reg.Files()...)
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return patterns.Union(name, parts), nil
}

// Files returns the bypass file and every file it pulls in (f: lines and
// {include} items), for watching; nil for a nil List.
func (b *List) Files() []string {
	if b == nil {
		return nil
	}
	return slices.Clone(b.files)
}

// Addr reports whether addr is on the list itself (i:, a:).
func (b *List) Addr(addr netip.Addr) bool { return b != nil && b.addrs.Contains(addr) }

// Sender reports whether a MAIL FROM address is bypassed (s:).
func (b *List) Sender(mail string) bool { return b != nil && b.senders.ContainsMail(mail) }

// Recipient reports whether a recipient is bypassed (r:).
func (b *List) Recipient(mail string) bool { return b != nil && b.recipients.ContainsMail(mail) }

// LocalSenders reports whether local senders (l:) are bypassed.
func (b *List) LocalSenders() bool { return b != nil && b.localSenders }

// ExplainAddr says which address item (i:, a:, or a bare item) puts addr
// on the list, for explanations; it agrees with Addr.
func (b *List) ExplainAddr(addr netip.Addr) patterns.Match {
	if b == nil {
		return patterns.Match{}
	}
	return b.addrs.Explain(addr)
}
