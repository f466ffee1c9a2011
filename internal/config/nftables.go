package config

import (
	"regexp"
	"time"

	"github.com/postern/postern/internal/diag"
)

// Nftables is the nftables export: two named sets (one of IPv4, one of
// IPv6 addresses, "flags interval, timeout") that postern keeps equal to
// its block table through netlink, so that other services on the host
// can refuse blocked addresses in the kernel. Off unless Enabled.
type Nftables struct {
	Enabled bool `yaml:"enabled"`
	// Family is the table's family: inet, ip or ip6.
	Family Text `yaml:"family" default:"inet"`
	Table  Text `yaml:"table" default:"postern"`
	SetV4  Text `yaml:"set_v4" default:"blocked4"`
	SetV6  Text `yaml:"set_v6" default:"blocked6"`
	// Create makes the table and sets when they are missing; without it
	// they must exist and fit (type, flags interval and timeout).
	Create bool `yaml:"create"`
	// DropChain, with Create, is a chain of the table that postern owns,
	// hooked on input (priority -10), holding the rules that drop the
	// sets' source addresses. Not set: no rule, the sets are only there to
	// be used by the administrator's own rules.
	DropChain Text `yaml:"drop_chain"`
	// Poll is how often the block table is compared with the sets;
	// Resync how often the sets are read back and corrected.
	Poll   Duration `yaml:"poll" default:"3s"`
	Resync Duration `yaml:"resync" default:"1m"`
}

// nftName is what nft accepts as a table, set or chain name without quotes.
var nftName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,127}$`)

func (f *File) validateNftables(d *decoder) {
	n := f.Nftables
	if !n.Enabled {
		return
	}
	switch n.Family.Value {
	case "inet", "ip", "ip6":
	default:
		d.errs.Add(diag.Errorf(n.Family.Pos, "nftables.family: %q is not inet, ip or ip6", n.Family.Value))
	}
	for _, c := range []struct {
		key string
		t   Text
	}{{"table", n.Table}, {"set_v4", n.SetV4}, {"set_v6", n.SetV6}, {"drop_chain", n.DropChain}} {
		if c.key == "drop_chain" && !c.t.IsSet() {
			continue
		}
		if !nftName.MatchString(c.t.Value) {
			d.errs.Add(diag.Errorf(c.t.Pos, "nftables.%s: %q is not an nftables name (a letter or _, then letters, digits, _ . -; at most 128)", c.key, c.t.Value))
		}
	}
	if n.SetV4.Value == n.SetV6.Value {
		d.errs.Add(diag.Errorf(n.SetV6.Pos, "nftables.set_v6: the same set as set_v4 (%q): IPv4 and IPv6 addresses need a set each", n.SetV6.Value))
	}
	if n.DropChain.IsSet() && !n.Create {
		d.errs.Add(diag.Errorf(n.DropChain.Pos, "nftables.drop_chain needs nftables.create: true (postern owns that chain); without create, use the sets from your own rules"))
	}
	if n.Poll.D < time.Second {
		d.errs.Add(diag.Errorf(n.Poll.Pos, "nftables.poll: %s is below 1s", n.Poll.D))
	}
	if n.Resync.D < 10*time.Second {
		d.errs.Add(diag.Errorf(n.Resync.Pos, "nftables.resync: %s is below 10s", n.Resync.D))
	}
}
