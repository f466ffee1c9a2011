package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExportKeys(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte(`dnsbl_zone: { listen: "127.0.0.1:5353", zone: bl.example.com, grant: "[Internal]", ttl: 5m }
decision_stream: { listen: "127.0.0.1:8081", keys_file: /etc/postern/bouncers.keys }
`))
	if err != nil {
		t.Fatal(err)
	}
	if z := f.DNSBLZone; !z.On() || z.Zone.Value != "bl.example.com" || z.TTL.D != 5*time.Minute || z.Grant.Value != "[Internal]" {
		t.Errorf("dnsbl_zone: %+v", z)
	}
	if s := f.DecisionStream; !s.On() || s.KeysFile.Value != "/etc/postern/bouncers.keys" {
		t.Errorf("decision_stream: %+v", s)
	}
	off, err := Parse("/etc/postern/postern.yaml", []byte("log: { level: info }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if off.DNSBLZone.On() || off.DecisionStream.On() {
		t.Error("exports on without the keys")
	}

	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"dnsbl_zone: { listen: \"5353\", zone: bl.example }\n", `c.yaml:1:23: dnsbl_zone.listen: bad listen address "5353"`},
		{"dnsbl_zone: { listen: \"127.0.0.1:53\" }\n", "dnsbl_zone needs a zone name"},
		{"dnsbl_zone: { listen: \"127.0.0.1:53\", zone: \"bad zone\" }\n", `dnsbl_zone.zone: bad domain name "bad zone"`},
		{"dnsbl_zone: { listen: \"127.0.0.1:53\", zone: localhost }\n", `bad domain name "localhost"`},
		{"dnsbl_zone: { listen: \"127.0.0.1:53\", zone: bl.example, ttl: 0s }\n", "dnsbl_zone.ttl: 0s is out of range"},
		{"dnsbl_zone: { listen: \"127.0.0.1:53\", zone: bl.example, ns: \"*.x\" }\n", "dnsbl_zone.ns: bad domain name"},
		{"dnsbl_zone: { zone: bl.example }\n", "c.yaml:1:21: dnsbl_zone needs dnsbl_zone.listen"},
		{"dnsbl_zone: { listen: \"127.0.0.1:53\", zone: bl.example, zon: x }\n", `unknown key "zon"`},
		{"decision_stream: { listen: \"127.0.0.1:8081\" }\n", "decision_stream needs an API keys file"},
		{"decision_stream: { keys_file: /k }\n", "decision_stream needs decision_stream.listen"},
		{"decision_stream: { listen: \"example.com:8081\", keys_file: /k }\n", "host must be an IP address"},
		{"decision_stream: true\n", "want a mapping of keys"},
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
