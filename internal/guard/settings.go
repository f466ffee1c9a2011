package guard

import (
	"math"
	"net/netip"
	"strings"
	"time"

	"github.com/postern/postern/internal/bypass"
	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/diag"
	"github.com/postern/postern/internal/patterns"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/service"
)

// Defaults, as IceWarp has them.
const (
	DefaultBlockTime     = 240 * time.Minute
	DefaultEscalationCap = 7 * 24 * time.Hour
	DefaultMemory        = 30 * 24 * time.Hour
	DefaultPurgeAfter    = 7 * 24 * time.Hour
	DefaultAccountDelay  = 2 * time.Second
	connectionWindow     = time.Minute
)

// Settings are the engine's compiled, immutable configuration. The engine
// swaps them atomically on reload.
type Settings struct {
	Policy *policy.Policy // grant/deny lists and trusted upstreams, for Admit

	BlockTime     time.Duration
	RefuseBlocked bool
	CloseBlocked  bool
	CloseAll      bool
	CrossSession  bool
	TarpitDelay   time.Duration

	EscalationFactor float64 // ≤ 1: off
	EscalationCap    time.Duration
	Memory           time.Duration // how long past blocks count for escalation

	PrefixV4, PrefixV6 int   // bits one block covers
	SubnetV4           int   // 0: off
	SubnetV6           []int // may be empty
	SubnetFactor       int

	AccountFailures int
	AccountDelay    time.Duration
	PurgeAfter      time.Duration // 0: expired blocks stay until purged by hand

	// AcrossLogins is failed_logins_across_groups: when above zero, the
	// failed logins of every configured group also count toward one
	// counter per block prefix, which blocks at this threshold.
	AcrossLogins int

	Bypass       *bypass.List // compiled by the snapshot build; nil: none
	LocalDomains map[string]bool

	groups [numGroups]groupSettings
}

type groupSettings struct {
	on          bool             // the group is configured: intrusion prevention processes it
	threshold   [numTriggers]int // counting triggers I L P Y R; 1 for the instant ones when enabled
	spamScore   float64
	messageSize int64
	tarpit      *patterns.Set
	logOnly     [numTriggers]bool
	// refuseAll: the group's services refuse new connections from every
	// blocked address (refuse_blocked). refuseAuto: they refuse those of
	// blocks a trigger made (refuse_blocked or close_blocked_connection).
	// A group's own refuse_blocked: false turns both off.
	refuseAll, refuseAuto bool
}

// Compile builds Settings from the configuration. reg resolves [patterns]
// in tarpit_accounts; byp is the bypass list the snapshot build loaded from
// intrusion_prevention.bypass_file (nil: none), which the engine only reads.
func Compile(cfg *config.File, reg *patterns.Registry, pol *policy.Policy, byp *bypass.List) (*Settings, error) {
	ips := &cfg.IntrusionPrevention
	s := &Settings{
		Policy:        pol,
		BlockTime:     DefaultBlockTime,
		RefuseBlocked: boolOr(ips.RefuseBlocked, true),
		CloseBlocked:  boolOr(ips.CloseBlockedConnection, true),
		CloseAll:      ips.CloseAll,
		CrossSession:  boolOr(ips.CrossSession, true),
		TarpitDelay:   ips.TarpitDelay.D,

		EscalationFactor: ips.Escalation.Factor,
		EscalationCap:    DefaultEscalationCap,
		Memory:           DefaultMemory,
		PrefixV4:         32,
		PrefixV6:         64,
		SubnetV4:         ips.Subnets.IPv4,
		SubnetV6:         ips.Subnets.IPv6,
		SubnetFactor:     4,
		AccountFailures:  ips.AccountProtection.Failures,
		AccountDelay:     DefaultAccountDelay,
		PurgeAfter:       DefaultPurgeAfter,
		LocalDomains:     make(map[string]bool),
		Bypass:           byp,
	}
	if ips.BlockMinutes != nil {
		s.BlockTime = time.Duration(*ips.BlockMinutes) * time.Minute
	}
	if ips.Escalation.MaxMinutes > 0 {
		s.EscalationCap = time.Duration(ips.Escalation.MaxMinutes) * time.Minute
	}
	if ips.Escalation.Memory.Set {
		s.Memory = ips.Escalation.Memory.D
	}
	if ips.BlockPrefix.IPv4 != 0 {
		s.PrefixV4 = ips.BlockPrefix.IPv4
	}
	if ips.BlockPrefix.IPv6 != 0 {
		s.PrefixV6 = ips.BlockPrefix.IPv6
	}
	if ips.Subnets.Factor > 0 {
		s.SubnetFactor = ips.Subnets.Factor
	}
	if ips.AccountProtection.Delay.Set {
		s.AccountDelay = ips.AccountProtection.Delay.D
	}
	if ips.PurgeAfter != nil {
		s.PurgeAfter = ips.PurgeAfter.D
	}
	for _, d := range strings.Split(cfg.LocalDomains.Value, ";") {
		if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
			s.LocalDomains[d] = true
		}
	}
	if s.CrossSession {
		s.AcrossLogins = max(ips.FailedLoginsAcrossGroups.N, 0)
	}
	var errs diag.List
	for g, tc := range [numGroups]*config.Triggers{GroupSMTP: ips.SMTP, GroupMail: ips.IMAPPOP3, GroupWeb: ips.Web} {
		gs := &s.groups[g]
		gs.refuseAll = s.RefuseBlocked
		gs.refuseAuto = s.RefuseBlocked || s.CloseBlocked
		if tc == nil {
			continue
		}
		gs.on = true
		if tc.RefuseBlocked != nil {
			gs.refuseAll, gs.refuseAuto = *tc.RefuseBlocked, *tc.RefuseBlocked
		}
		gs.threshold[trigI] = tc.ConnectionsPerMinute
		gs.threshold[trigL] = tc.FailedLogins
		gs.threshold[trigP] = tc.UnknownRecipients
		gs.threshold[trigY] = tc.RelayDenials
		gs.threshold[trigR] = tc.RsetCount
		if tc.SpamScore > 0 {
			gs.threshold[trigS], gs.spamScore = 1, tc.SpamScore
		}
		if len(tc.DNSBL) > 0 {
			gs.threshold[trigD] = 1
		}
		if tc.MessageSize.Bytes > 0 {
			gs.threshold[trigM], gs.messageSize = 1, tc.MessageSize.Bytes
		}
		if tc.ContentRules {
			gs.threshold[trigC] = 1
		}
		if tc.TarpitAccounts.IsSet() {
			set, err := reg.Expr(patterns.Source{Text: tc.TarpitAccounts.Value, Pos: tc.TarpitAccounts.Pos, Quoted: tc.TarpitAccounts.Quoted})
			if err != nil {
				errs.Add(err)
			} else if set.HasHosts() {
				errs.Add(diag.Errorf(tc.TarpitAccounts.Pos, "tarpit_accounts holds a host mask, which names clients, not recipients: write a mail mask such as *@honeypot.example.com"))
			} else if !set.HasMail() {
				errs.Add(diag.Errorf(tc.TarpitAccounts.Pos, "tarpit_accounts lists no mail addresses (want masks such as trap@example.com or *@honeypot.example.com)"))
			} else {
				gs.tarpit, gs.threshold[trigA] = set, 1
			}
		}
		for _, lo := range tc.LogOnly {
			code, _ := config.TriggerCode(lo.Value)
			if t, ok := triggerOf(code); ok {
				gs.logOnly[t] = true
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// DefaultConsoleFailedLogins is how many failed sign-ins to the web
// console (service console) block the address while the web group's
// failed_logins is off: postern guards its own console whatever the
// webmail's settings.
const DefaultConsoleFailedLogins = 5

// limit is trigger t's threshold for a session of svc in group g: the
// group's, except that failed console sign-ins always count
// (DefaultConsoleFailedLogins when the group's failed_logins is off).
func (st *Settings) limit(g Group, svc service.Service, t trigger) int {
	n := st.groups[g].threshold[t]
	if n <= 0 && t == trigL && svc == service.Console {
		return DefaultConsoleFailedLogins
	}
	return n
}

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// blockDuration is the block time of an offender's (level+1)th block:
// BlockTime × factor^level, capped.
func (s *Settings) blockDuration(level int) time.Duration {
	d := s.BlockTime
	if s.EscalationFactor > 1 && level > 0 {
		f := math.Pow(s.EscalationFactor, float64(level))
		if x := float64(d) * f; x < float64(s.EscalationCap) {
			d = time.Duration(x)
		} else {
			d = s.EscalationCap
		}
	}
	return d
}

// prefixOf returns the block prefix covering addr.
func (s *Settings) prefixOf(addr netip.Addr) netip.Prefix {
	bits := s.PrefixV6
	if addr.Is4() {
		bits = s.PrefixV4
	}
	p, _ := addr.Prefix(bits)
	return p
}

// subnetsOf returns the enclosing prefixes counted for multi-prefix
// counting, longest first.
func (s *Settings) subnetsOf(addr netip.Addr, buf []netip.Prefix) []netip.Prefix {
	buf = buf[:0]
	if addr.Is4() {
		if s.SubnetV4 > 0 && s.SubnetV4 < s.PrefixV4 {
			p, _ := addr.Prefix(s.SubnetV4)
			buf = append(buf, p)
		}
		return buf
	}
	for _, bits := range s.SubnetV6 {
		if bits < s.PrefixV6 {
			p, _ := addr.Prefix(bits)
			buf = append(buf, p)
		}
	}
	return buf
}

// refuses reports whether a new connection to a service of group g from an
// address under block b is refused: every block with refuse_blocked, the
// blocks a trigger made (every reason but U, manual) with
// close_blocked_connection — "all connections just incoming from this
// address are blocked for the block time" — and none where the group
// opted out with its own refuse_blocked: false.
func (s *Settings) refuses(g Group, r reason.Code) bool {
	gs := &s.groups[g]
	return gs.refuseAll || gs.refuseAuto && r != reason.Manual
}

// RefusesBlock reports whether a new connection to service from an
// address under a block with reason r is refused at connect (else it is
// let in, tarpitted when tarpit_delay is set; its login attempts are
// refused whatever this says).
func (s *Settings) RefusesBlock(svc service.Service, r reason.Code) bool {
	g, ok := GroupOf(svc)
	if !ok {
		g = GroupSMTP
	}
	return s.refuses(g, r)
}

// TriggersEnabled returns, per group, the reason codes whose triggers are
// on, for `postern check`.
func (s *Settings) TriggersEnabled() map[string]string {
	out := make(map[string]string)
	for g := range numGroups {
		var b strings.Builder
		for t := range numTriggers {
			if s.groups[g].threshold[t] > 0 {
				b.WriteByte(byte(trigger(t).reason()))
				if s.groups[g].logOnly[t] {
					b.WriteString("(log)")
				}
			}
		}
		out[Group(g).String()] = b.String()
	}
	return out
}

// SpamScore returns the spam score above which the service's group blocks
// (S), or 0 when the trigger is off.
func (s *Settings) SpamScore(svc service.Service) float64 {
	g, ok := GroupOf(svc)
	if !ok {
		return 0
	}
	return s.groups[g].spamScore
}
