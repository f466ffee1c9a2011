package config

import (
	"strings"
	"testing"
)

func TestProcessorsSetting(t *testing.T) {
	for _, c := range []struct {
		yaml     string
		adaptive bool
		fixed    int
	}{
		{"", true, 0},
		{"processors: adaptive\n", true, 0},
		{"processors: Adaptive\n", true, 0},
		{"processors: all\n", false, 0},
		{"processors: 1\n", false, 1},
		{"processors: \"4\"\n", false, 4},
		{"processors: 1024\n", false, 1024},
	} {
		f, err := Parse("c.yaml", []byte(c.yaml))
		if err != nil {
			t.Fatalf("%q: %v", c.yaml, err)
		}
		adaptive, fixed, err := f.ProcessorsSetting()
		if err != nil || adaptive != c.adaptive || fixed != c.fixed {
			t.Errorf("%q: adaptive %v, fixed %d, %v; want %v, %d", c.yaml, adaptive, fixed, err, c.adaptive, c.fixed)
		}
	}
	for _, bad := range []string{"0", "-1", "1025", "two", "1.5", "auto", "[1]"} {
		_, err := Parse("c.yaml", []byte("log: { level: info }\nprocessors: "+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "c.yaml:2:") || (bad != "[1]" && !strings.Contains(err.Error(), "bad processors")) {
			t.Errorf("processors: %s: %v; want an error at c.yaml:2", bad, err)
		}
	}
}
