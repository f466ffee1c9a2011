// Package explain composes the one explanation of "may this address use
// this service (request this path, log in as this account), and why": the
// access policy of a compiled configuration, the login restriction, and —
// when the running gateway is asked — its live block table, with the bypass
// list in force. `postern explain` and the administration API's GET
// /v1/explain both answer with its typed Answer, so the command line and the
// API cannot drift apart.
//
// Explanations are for people: they allocate and may look client names up
// for host masks. The accept path never comes here.
package explain

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

// ErrQuery marks a question that cannot be answered as asked: an unknown
// or unconfigured service, a path for a service other than web, an invalid
// address. The administration API answers it with 400; the command line
// exits 2.
var ErrQuery = errors.New("cannot explain")

// Live is what an explanation needs of the running intrusion-prevention
// engine: its block table and its clock. *guard.Engine satisfies it.
type Live interface {
	// BlockOf returns the active block covering addr, if any.
	BlockOf(addr netip.Addr) (store.Block, bool)
	// Now is the engine's clock; a block's expiry is judged against it.
	Now() time.Time
}

// PassLive is what an explanation asks a running engine that holds
// travel passes (*guard.Engine does): the pass, if any, that lets an
// account (as the backend resolves it) log in from an address now.
type PassLive interface {
	LoginPass(ctx context.Context, account string, addr netip.Addr) (passes.Pass, bool)
}

// Query is what is asked: a client address and, each optional, the
// service it connects to, the web path it requests and the account it logs
// in as.
type Query struct {
	Addr    netip.Addr
	Service string
	Account string
	Path    string
}

// Check reports a question that cannot be answered whatever the
// configuration: an invalid address, an unknown service name, a path
// without service web. Its errors wrap ErrQuery.
func (q Query) Check() error {
	switch {
	case !q.Addr.IsValid() || q.Addr.Zone() != "":
		return fmt.Errorf("%w: want an IP address without a zone", ErrQuery)
	case q.Service != "" && !q.service().Valid():
		return fmt.Errorf("%w: unknown service %q: want one of %s", ErrQuery, q.Service, service.Names)
	case q.Path != "" && q.Service != "web":
		return fmt.Errorf("%w: a path applies to service web only", ErrQuery)
	}
	return nil
}

// service is the service asked about; not Valid when none (or an unknown
// one, which Check refuses).
func (q Query) service() service.Service {
	svc, _ := service.Parse(q.Service)
	return svc
}

// Verdict is an explanation's decision.
type Verdict string

// The two verdicts.
const (
	Allow Verdict = "allow"
	Deny  Verdict = "deny"
)

// Where an answer comes from.
const (
	// SourceGateway: the running gateway answered, from its running
	// configuration and its live block table.
	SourceGateway = "gateway"
	// SourceConfiguration: the configuration file alone; blocks the running
	// gateway holds were not consulted.
	SourceConfiguration = "configuration"
)

// Kind says what a step consulted.
type Kind string

// The kinds of step, in the order an answer lists them.
const (
	KindService Kind = "service" // the service's grant or deny list
	KindPath    Kind = "path"    // a web path rule's grant or deny list
	KindLogin   Kind = "login"   // the login IP restriction of the account
	KindPass    Kind = "pass"    // a travel pass that allows a login its restriction refuses
	KindBlock   Kind = "block"   // an active block in the live block table
	KindBypass  Kind = "bypass"  // an address item of the bypass list
	// KindUpstream: the address is a trusted upstream, whose connections
	// must begin with a PROXY header.
	KindUpstream Kind = "upstream"
)

// Answer is one explanation, as `postern explain --json` prints it and GET
// /v1/explain answers it.
type Answer struct {
	Address string `json:"address"`
	Service string `json:"service,omitempty"`
	Account string `json:"account,omitempty"`
	Path    string `json:"path,omitempty"`
	// CleanPath is Path as the path rules compare it.
	CleanPath string  `json:"clean_path,omitempty"`
	Verdict   Verdict `json:"verdict"`
	// Source is SourceGateway or SourceConfiguration.
	Source string `json:"source"`
	// Note says why an answer comes from the configuration alone (the
	// gateway could not be reached, or was not asked).
	Note  string `json:"note,omitempty"`
	GeoIP *GeoIP `json:"geoip,omitempty"` // nil: no GeoIP database configured
	// Steps are the rules, the block and the bypass entry consulted, in
	// that order.
	Steps []Step `json:"steps"`
	// Because lists, in words, what denies; empty when the verdict is
	// allow.
	Because []string  `json:"because"`
	At      time.Time `json:"at"`
}

// Allowed reports whether the verdict is allow.
func (a *Answer) Allowed() bool { return a.Verdict == Allow }

// GeoIP is where the GeoIP data places the address.
type GeoIP struct {
	Country  string    `json:"country,omitempty"` // "": in no country of the databases
	Database string    `json:"database,omitempty"`
	Built    time.Time `json:"built,omitzero"`
}

// Pos is a position in a configuration, pattern or bypass file.
type Pos struct {
	File string `json:"file"`
	Line int    `json:"line"`
	Col  int    `json:"col,omitempty"`
}

// String formats p as file:line:col.
func (p Pos) String() string { return diag.Pos(p).String() }

// Step is one thing consulted.
type Step struct {
	Kind Kind `json:"kind"`
	// Rule names it: "imap deny", "web path /admin grant", "login *",
	// "block 203.0.113.0/24", "bypass list".
	Rule string `json:"rule"`
	// Text is the list as written in the configuration (rules only).
	Text string `json:"text,omitempty"`
	// Pos is where the rule is written (rules only).
	Pos *Pos `json:"pos,omitempty"`
	// Effect is what it did: "denies", "grants", "does not grant",
	// "no match", "allows", "refuses"; for a block and a bypass entry, a
	// sentence.
	Effect string `json:"effect"`
	// Denies is true when this step alone makes the verdict deny.
	Denies bool `json:"denies"`
	// Items are the pattern items that decided, from the outermost
	// pattern to the innermost item: the item that holds the address, or
	// the exclusion that removed it.
	Items []Item `json:"items,omitempty"`
	// ClientName is the outcome of the client name lookup host masks
	// made; nil when none was made.
	ClientName *ClientName `json:"client_name,omitempty"`
	Block      *Block      `json:"block,omitempty"` // KindBlock only
	// Pass is the travel pass that allowed the login (KindPass only).
	Pass *passes.Pass `json:"pass,omitempty"`
}

// Item is one pattern item of a step.
type Item struct {
	// Pattern is the named pattern holding the item ("[Partners]"); ""
	// for a list written in place.
	Pattern string `json:"pattern,omitempty"`
	Text    string `json:"text"` // as written, with its "!" for an exclusion
	Pos     Pos    `json:"pos"`
	// ByName is the forward-confirmed client name that a host mask item
	// matched.
	ByName string `json:"by_name,omitempty"`
}

// ClientName is the outcome of a client name lookup for host masks.
type ClientName struct {
	Name  string `json:"name,omitempty"`  // forward-confirmed name
	Error string `json:"error,omitempty"` // why there is none
}

// Block is an active block holding the address.
type Block struct {
	// Target is the blocked address, or prefix ("203.0.113.0/24").
	Target     string    `json:"target"`
	Reason     string    `json:"reason"`
	ReasonName string    `json:"reason_name"`
	Detail     string    `json:"detail,omitempty"`
	Expires    time.Time `json:"expires,omitzero"` // zero: never
	By         string    `json:"by,omitempty"`
	// Refused says new connections to the service are refused at connect
	// (refuse_blocked, close_blocked_connection); otherwise they are let
	// in (tarpitted when tarpit_delay is set) and only logins are refused.
	Refused bool `json:"refused"`
}

// Country says where the GeoIP data of snap places addr; nil when no
// GeoIP database is configured.
func Country(snap *snapshot.Snapshot, addr netip.Addr) *GeoIP {
	if snap.GeoIP == nil {
		return nil
	}
	g := &GeoIP{}
	if cc, src, ok := snap.GeoIP.Country(addr.Unmap()); ok {
		g.Country, g.Database, g.Built = cc, src.Path, src.BuildTime.UTC()
	}
	return g
}

// Items converts the chain of a pattern explanation, with the client name
// lookup it made (nil when none).
func Items(m patterns.Match) ([]Item, *ClientName) {
	var items []Item
	for _, st := range m.Steps {
		it := Item{Text: st.Item.String(), Pos: Pos(st.Item.Pos())}
		if st.Set.Name() != "" {
			it.Pattern = st.Set.String()
		}
		if st.Item.Kind == patterns.KindHost && m.Client != nil {
			it.ByName = m.Client.Name
		}
		items = append(items, it)
	}
	if m.Client == nil {
		return items, nil
	}
	c := &ClientName{Name: m.Client.Name}
	if m.Client.Err != nil {
		c.Error = m.Client.Err.Error()
	}
	return items, c
}

// Explain answers q from snap, the configuration, and live, the running
// engine's block table (nil: the configuration alone; the answer's Source
// says which). A client name lookup for host masks is bounded by the
// resolver's own deadline. Errors wrap ErrQuery.
func Explain(snap *snapshot.Snapshot, live Live, q Query) (Answer, error) {
	if err := q.Check(); err != nil {
		return Answer{}, err
	}
	addr := q.Addr.Unmap()
	a := Answer{
		Address: addr.String(), Service: q.Service, Account: q.Account, Path: q.Path,
		Verdict: Allow, Source: SourceConfiguration, Steps: []Step{}, Because: []string{},
	}
	if live != nil {
		a.Source, a.At = SourceGateway, live.Now().UTC()
	} else {
		a.At = time.Now().UTC()
	}
	a.GeoIP = Country(snap, addr)
	if q.Service != "" {
		v, err := snap.Policy.ExplainService(q.service(), addr)
		if err != nil {
			return Answer{}, fmt.Errorf("%w: %w", ErrQuery, err)
		}
		a.add(KindService, v, "the "+q.Service+" grant/deny lists")
	}
	if q.Path != "" {
		a.CleanPath = policy.CleanPath(q.Path)
		v, err := snap.Policy.ExplainPath(q.service(), q.Path, addr)
		if err != nil {
			return Answer{}, fmt.Errorf("%w: %w", ErrQuery, err)
		}
		a.add(KindPath, v, "a path rule for "+a.CleanPath)
	}
	if q.Account != "" {
		v := snap.Policy.ExplainLogin(q.Account, addr)
		pl, ok := live.(PassLive)
		var p passes.Pass
		if !v.Allow && ok {
			p, ok = pl.LoginPass(context.Background(), snap.Policy.Logins().Canon(q.Account), addr)
		}
		if v.Allow || !ok {
			a.add(KindLogin, v, "the login restriction for "+q.Account)
		} else {
			// The restriction refuses, the pass allows: the steps say both,
			// and neither denies.
			v.Allow = true
			a.add(KindLogin, v, "")
			for i := range a.Steps {
				if a.Steps[i].Kind == KindLogin {
					a.Steps[i].Denies = false
				}
			}
			a.Steps = append(a.Steps, Step{Kind: KindPass, Rule: "pass " + p.ID + " for " + p.Account, Text: p.From,
				Effect: "allows: a travel pass until " + p.Until.UTC().Format(time.RFC3339), Pass: &p})
		}
	}
	if snap.Policy.TrustedUpstream(addr) {
		// A client at this address is taken for the load balancer: every
		// connection from it must begin with a PROXY header, and one that
		// does not is dropped without a greeting.
		pos := Pos(snap.Config.TrustedUpstreams.Pos)
		a.Steps = append(a.Steps, Step{Kind: KindUpstream, Rule: "trusted_upstreams", Text: snap.Config.TrustedUpstreams.Value,
			Pos: &pos, Denies: true,
			Effect: "a trusted upstream: its connections must begin with a PROXY header naming the real client; without one they are dropped after the header timeout (5s), so a client cannot connect from this address directly"})
		a.deny("a client at a trusted upstream's address (trusted_upstreams): served only behind a PROXY header")
	}
	if live != nil {
		if b, ok := live.BlockOf(addr); ok {
			a.block(snap.Guard, b, q)
		}
	}
	if snap.Guard != nil && snap.Guard.Bypass.Addr(addr) {
		m := snap.Guard.Bypass.ExplainAddr(addr)
		if len(m.Steps) > 1 {
			// The first step is the list's union of its files' items, as
			// one reference holding them all; the item is what matters.
			m.Steps = m.Steps[1:]
		}
		items, _ := Items(m)
		// BypassTable's first row is the address condition (i:, a:).
		a.Steps = append(a.Steps, Step{
			Kind: KindBypass, Rule: "bypass list", Items: items,
			Effect: "on the bypass list: no trigger blocks it (" + guard.BypassTable()[0].Triggers + "); a block made by hand or imported still applies",
		})
	}
	return a, nil
}

func (a *Answer) deny(why string) {
	a.Verdict = Deny
	a.Because = append(a.Because, why)
}

// add appends the rules of a policy verdict.
func (a *Answer) add(k Kind, v policy.Verdict, why string) {
	for _, r := range v.Rules {
		items, client := Items(r.Match)
		pos := Pos(r.Pos)
		denies := r.Effect == "denies" || r.Effect == "does not grant" || r.Effect == "refuses"
		a.Steps = append(a.Steps, Step{Kind: k, Rule: r.Rule, Text: r.Text, Pos: &pos, Effect: r.Effect,
			Denies: denies, Items: items, ClientName: client})
	}
	if !v.Allow {
		a.deny(why)
	}
}

// block appends the step of an active block: refused at connect where the
// service's group refuses it, and a login is refused whatever that says.
func (a *Answer) block(st *guard.Settings, b store.Block, q Query) {
	refused := true
	if st != nil {
		refused = st.RefuseBlocked
		if q.Service != "" {
			refused = st.RefusesBlock(q.service(), b.Reason)
		}
	}
	target := b.Prefix.String()
	if b.Prefix.IsSingleIP() { // as the admin API writes targets
		target = b.Prefix.Addr().String()
	}
	s := Step{Kind: KindBlock, Rule: "block " + target, Block: &Block{
		Target: target, Reason: b.Reason.String(), ReasonName: b.Reason.Name(), Detail: b.Detail,
		Expires: b.Expires.UTC(), By: b.By, Refused: refused,
	}}
	if b.Expires.IsZero() {
		s.Block.Expires = time.Time{}
	}
	until := "no expiry"
	if !b.Expires.IsZero() {
		until = "until " + b.Expires.UTC().Format(time.RFC3339)
	}
	what := "blocked (" + b.Reason.String() + " " + b.Reason.Name() + ") " + until
	switch {
	case refused:
		s.Effect, s.Denies = "refuses new connections", true
		a.deny(what)
	case q.Account != "":
		s.Effect, s.Denies = "lets connections in but refuses every login", true
		a.deny(what + ": logins refused")
	case st != nil && st.TarpitDelay > 0:
		s.Effect = "lets new connections in, tarpitted; refuses every login"
	default:
		s.Effect = "lets new connections in; refuses every login"
	}
	a.Steps = append(a.Steps, s)
}

// Func returns the explanation the administration API serves: each call
// reads the snapshot current then (the running configuration) and the
// engine's live block table.
func Func(current func() *snapshot.Snapshot, live Live) func(context.Context, Query) (Answer, error) {
	return func(_ context.Context, q Query) (Answer, error) {
		return Explain(current(), live, q)
	}
}
