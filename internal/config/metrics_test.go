package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestMetricsKeys(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte("metrics: { listen: \"127.0.0.1:9433\", grant: \"[Internal]\" }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Metrics.On() || f.Metrics.Listen.Value != "127.0.0.1:9433" || f.Metrics.Grant.Value != "[Internal]" || f.Metrics.Grant.Pos.Line != 1 {
		t.Errorf("metrics: %+v", f.Metrics)
	}
	off, err := Parse("/etc/postern/postern.yaml", []byte("log: { level: info }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if off.Metrics.On() {
		t.Error("metrics on without the key")
	}

	dir := t.TempDir()
	for _, c := range []struct{ yaml, want string }{
		{"metrics: { listen: \"9433\" }\n", `c.yaml:1:20: metrics.listen: bad listen address "9433"`},
		{"metrics: { listen: \"example.com:9433\" }\n", "host must be an IP address"},
		{"metrics: { grant: \"127.0.0.1\" }\n", "c.yaml:1:19: metrics.grant needs metrics.listen"},
		{"metrics: { listen: \"127.0.0.1:9433\", grnt: x }\n", `unknown key "grnt" (did you mean "grant"?)`},
		{"metrics: true\n", "want a mapping of keys"},
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
