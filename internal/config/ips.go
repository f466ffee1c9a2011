package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/postern/postern/internal/diag"
)

// IntrusionPrevention configures the engine. Zero thresholds disable
// their trigger.
type IntrusionPrevention struct {
	BlockMinutes           *int        `yaml:"block_minutes"`            // default 240
	RefuseBlocked          *bool       `yaml:"refuse_blocked"`           // default true
	CloseBlockedConnection *bool       `yaml:"close_blocked_connection"` // default true
	CloseAll               bool        `yaml:"close_all"`
	CrossSession           *bool       `yaml:"cross_session"` // default true
	BypassFile             Text        `yaml:"bypass_file"`
	TarpitDelay            Duration    `yaml:"tarpit_delay"`
	Escalation             Escalation  `yaml:"escalation"`
	BlockPrefix            BlockPrefix `yaml:"block_prefix"`
	Subnets                Subnets     `yaml:"subnets"`
	AccountProtection      AccountProt `yaml:"account_protection"`
	PurgeAfter             *Duration   `yaml:"purge_expired_after"` // default 7 days; 0 keeps expired blocks until purged by hand
	// FailedLoginsAcrossGroups, when above zero, also counts the failed
	// logins of every configured group toward one counter per block
	// prefix, blocking at this threshold (off by default: each group
	// counts its own).
	FailedLoginsAcrossGroups Count `yaml:"failed_logins_across_groups"`

	SMTP *Triggers `yaml:"smtp"`
	// Outside SMTP a group takes only the triggers of connections and
	// logins; the decoder refuses the others at their position.
	IMAPPOP3 *Triggers `yaml:"imap_pop3" keys:"connections_per_minute|failed_logins|log_only|refuse_blocked" keyswhy:"applies to intrusion_prevention.smtp only"`
	Web      *Triggers `yaml:"web" keys:"connections_per_minute|failed_logins|log_only|refuse_blocked" keyswhy:"applies to intrusion_prevention.smtp only"`
}

// Triggers are the thresholds of one protocol group.
type Triggers struct {
	ConnectionsPerMinute int           `yaml:"connections_per_minute"` // I
	FailedLogins         int           `yaml:"failed_logins"`          // L
	UnknownRecipients    int           `yaml:"unknown_recipients"`     // P
	RelayDenials         int           `yaml:"relay_denials"`          // Y
	RsetCount            int           `yaml:"rset_count"`             // R
	SpamScore            float64       `yaml:"spam_score"`             // S
	DNSBL                []Text        `yaml:"dnsbl"`                  // D: zones
	MessageSize          Size          `yaml:"message_size"`           // M
	TarpitAccounts       Text          `yaml:"tarpit_accounts"`        // A: mail masks / [patterns]
	ContentRules         bool          `yaml:"content_rules"`          // C: block when a content rule matches
	LogOnly              []TriggerName `yaml:"log_only"`               // dry-run triggers: codes or names
	RefuseBlocked        *bool         `yaml:"refuse_blocked"`         // per group: nil follows the top-level refuse_blocked
	pos                  diag.Pos      `yaml:"-"`
}

// Pos returns where the group was configured.
func (t *Triggers) Pos() diag.Pos { return t.pos }

func (t *Triggers) decodeYAML(d *decoder, n *yaml.Node) error {
	t.pos = d.pos(n)
	d.decodeStruct(n, reflectValue(t))
	return nil
}

// Count is a whole number with the position it was written at.
type Count struct {
	N   int
	Pos diag.Pos
	Set bool
}

func (c *Count) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a whole number, got %s", describe(n))
	}
	v, err := strconv.Atoi(strings.TrimSpace(n.Value))
	if err != nil {
		return fmt.Errorf("want a whole number, got %q", n.Value)
	}
	*c = Count{N: v, Pos: d.pos(n), Set: true}
	return nil
}

// Escalation multiplies a repeat offender's block time.
type Escalation struct {
	Factor     float64  `yaml:"factor"`      // 0 or 1: off; 2 doubles each time
	MaxMinutes int      `yaml:"max_minutes"` // cap; default 7 days
	Memory     Duration `yaml:"memory"`      // how long a past block counts; default 30 days
}

// BlockPrefix says how much address space one block covers.
type BlockPrefix struct {
	IPv4 int `yaml:"ipv4"` // default 32
	IPv6 int `yaml:"ipv6"` // default 64
}

// Subnets configures multi-prefix counting: events are also counted per
// enclosing prefix, and a prefix is blocked at Factor × the address
// threshold.
type Subnets struct {
	IPv4   int   `yaml:"ipv4"`   // e.g. 24; 0 off
	IPv6   []int `yaml:"ipv6"`   // e.g. [64, 48]
	Factor int   `yaml:"factor"` // default 4
}

// AccountProt delays logins of an account that failed from many addresses.
type AccountProt struct {
	Failures int      `yaml:"failures"` // distinct addresses failing within the window; 0 off
	Delay    Duration `yaml:"delay"`    // added before each login of that account; default 2s
}

// Store configures the blocked-address store.
type Store struct {
	Path Text `yaml:"path"` // SQLite file; default /var/lib/postern/postern.db
}

// Admin configures the administration API.
type Admin struct {
	Listen    Text `yaml:"listen"`     // unix:/path or tcp:host:port; default unix:/run/postern/admin.sock
	TokenFile Text `yaml:"token_file"` // created (0600) with a random token if missing
	Grant     Text `yaml:"grant"`      // tcp only: addresses that may connect; default loopback
}

// Duration is a time span written as Go durations ("90s", "4h") or with a
// day suffix ("7d").
type Duration struct {
	D   time.Duration
	Pos diag.Pos
	Set bool
}

func (v *Duration) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 30s, 4h or 7d, got %s", describe(n))
	}
	dur, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*v = Duration{D: dur, Pos: d.pos(n), Set: true}
	return nil
}

// ParseDuration parses "90s", "4h", "1h30m", "7d" or "0". Negative spans
// are refused.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	var dur time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n float64
		n, err = strconv.ParseFloat(days, 64)
		dur = time.Duration(n * float64(24*time.Hour))
	} else {
		dur, err = time.ParseDuration(s)
	}
	if err != nil || dur < 0 {
		return 0, fmt.Errorf("bad duration %q: want e.g. 30s, 15m, 4h or 7d", s)
	}
	return dur, nil
}

// Size is a byte count written as a number with an optional unit: K/KB,
// M/MB, G/GB (binary multiples, as in IceWarp).
type Size struct {
	Bytes int64
	Pos   diag.Pos
}

func (v *Size) decodeYAML(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 100MB, got %s", describe(n))
	}
	b, err := ParseSize(n.Value)
	if err != nil {
		return err
	}
	if b > 0 && b < MinBareSize && isBareNumber(n.Value) {
		return fmt.Errorf("size %s has no unit, so it means %d bytes: write the unit (%sKB, %sMB, or %sB if bytes are meant)",
			strings.TrimSpace(n.Value), b, strings.TrimSpace(n.Value), strings.TrimSpace(n.Value), strings.TrimSpace(n.Value))
	}
	*v = Size{Bytes: b, Pos: d.pos(n)}
	return nil
}

// MinBareSize is the smallest size that may be written without a unit: a
// plain number below it (message_size: 100) is almost always meant in KB
// or MB, and as bytes it would refuse every message, so it is an error;
// 0 (off) and sizes with a unit (100B) are accepted.
const MinBareSize = 1024

// isBareNumber reports whether s is digits only (after trimming blanks).
func isBareNumber(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// ParseSize parses "100MB", "512k", "1G" or a plain byte count.
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q: want e.g. 100MB, 512KB or 1GB", s)
	}
	return n * mult, nil
}

func (f *File) validateIPS(d *decoder) {
	ips := &f.IntrusionPrevention
	if ips.BlockMinutes != nil && *ips.BlockMinutes <= 0 {
		d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "intrusion_prevention.block_minutes must be at least 1"))
	}
	if ips.BypassFile.IsSet() {
		f.resolve(&ips.BypassFile)
	}
	if e := ips.Escalation; e.Factor != 0 && (e.Factor < 1 || e.Factor > 100) {
		d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "intrusion_prevention.escalation.factor must be between 1 and 100"))
	}
	if p := ips.BlockPrefix; p.IPv4 != 0 && (p.IPv4 < 8 || p.IPv4 > 32) || p.IPv6 != 0 && (p.IPv6 < 16 || p.IPv6 > 128) {
		d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "intrusion_prevention.block_prefix: ipv4 must be 8-32 and ipv6 16-128"))
	}
	if s := ips.Subnets; s.IPv4 != 0 && (s.IPv4 < 8 || s.IPv4 > 31) {
		d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "intrusion_prevention.subnets.ipv4 must be 8-31"))
	}
	for _, b := range ips.Subnets.IPv6 {
		if b < 16 || b > 127 {
			d.errs.Add(diag.Errorf(diag.Pos{File: f.Path}, "intrusion_prevention.subnets.ipv6 lengths must be 16-127"))
		}
	}
	if a := ips.FailedLoginsAcrossGroups; a.Set {
		switch {
		case a.N < 0:
			d.errs.Add(diag.Errorf(a.Pos, "intrusion_prevention.failed_logins_across_groups cannot be negative (0 or absent: off)"))
		case a.N > 0 && ips.CrossSession != nil && !*ips.CrossSession:
			d.errs.Add(diag.Errorf(a.Pos, "intrusion_prevention.failed_logins_across_groups counts across connections; it needs cross_session: true"))
		}
	}
	for name, g := range map[string]*Triggers{"smtp": ips.SMTP, "imap_pop3": ips.IMAPPOP3, "web": ips.Web} {
		if g == nil {
			continue
		}
		for _, v := range []int{g.ConnectionsPerMinute, g.FailedLogins, g.UnknownRecipients, g.RelayDenials, g.RsetCount} {
			if v < 0 {
				d.errs.Add(diag.Errorf(g.pos, "intrusion_prevention.%s: thresholds cannot be negative", name))
				break
			}
		}
		if g.SpamScore < 0 {
			d.errs.Add(diag.Errorf(g.pos, "intrusion_prevention.%s.spam_score cannot be negative", name))
		}
	}
}

// TriggerName is a trigger written as its one-letter code or its name,
// resolved to the code once, when the file is decoded.
type TriggerName struct {
	Text
	Code byte // I L P Y R S D M A C
}

func (t *TriggerName) decodeYAML(d *decoder, n *yaml.Node) error {
	if err := t.Text.decodeYAML(d, n); err != nil {
		return err
	}
	c, ok := TriggerCode(t.Value)
	if !ok {
		return fmt.Errorf("log_only: unknown trigger %q: want a code (I L P Y R S D M A C) or a name such as failed_logins", t.Value)
	}
	t.Code = c
	return nil
}

var triggerNames = map[string]byte{
	"connections_per_minute": 'I', "failed_logins": 'L', "unknown_recipients": 'P', "relay_denials": 'Y',
	"rset_count": 'R', "spam_score": 'S', "dnsbl": 'D', "message_size": 'M', "tarpit_accounts": 'A', "content_rules": 'C',
}

// TriggerCode maps a trigger's config name or one-letter code to its code.
func TriggerCode(s string) (byte, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 1 {
		c := strings.ToUpper(s)[0]
		for _, v := range triggerNames {
			if v == c {
				return c, true
			}
		}
		return 0, false
	}
	c, ok := triggerNames[strings.ToLower(s)]
	return c, ok
}
