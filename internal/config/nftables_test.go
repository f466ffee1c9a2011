package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNftablesKeys(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte("nftables: { enabled: true, create: true, drop_chain: input }\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := f.Nftables
	if !n.Enabled || n.Family.Value != "inet" || n.Table.Value != "postern" || n.SetV4.Value != "blocked4" || n.SetV6.Value != "blocked6" ||
		!n.Create || n.DropChain.Value != "input" || n.Poll.D != 3*time.Second || n.Resync.D != time.Minute {
		t.Errorf("nftables defaults: %+v", n)
	}
	off, err := Parse("/etc/postern/postern.yaml", []byte("log: { level: info }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if off.Nftables.Enabled {
		t.Error("nftables export on without the key")
	}

	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"nftables: { enabled: true, family: arp }\n", `c.yaml:1:36: nftables.family: "arp" is not inet, ip or ip6`},
		{"nftables: { enabled: true, table: \"my table\" }\n", `nftables.table: "my table" is not an nftables name`},
		{"nftables: { enabled: true, set_v4: x, set_v6: x }\n", "nftables.set_v6: the same set as set_v4"},
		{"nftables: { enabled: true, drop_chain: input }\n", "nftables.drop_chain needs nftables.create: true"},
		{"nftables: { enabled: true, poll: 100ms }\n", "nftables.poll: 100ms is below 1s"},
		{"nftables: { enabled: true, resync: 2s }\n", "nftables.resync: 2s is below 10s"},
		{"nftables: { enabled: true, sets: x }\n", `unknown key "sets"`},
	} {
		_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(c.yaml))
		if err == nil {
			t.Errorf("%q: no error, want %q", c.yaml, c.want)
			continue
		}
		if msg := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""); !strings.Contains(msg, c.want) {
			t.Errorf("%q:\n%s\nwant %q", c.yaml, msg, c.want)
		}
	}
}
