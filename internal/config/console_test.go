package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConsoleSection(t *testing.T) {
	dir := t.TempDir()
	f, err := Parse(filepath.Join(dir, "c.yaml"), []byte("console:\n  listen: \"127.0.0.1:8444\"\n  grant: \"[Admins]\"\n  users_file: console-users\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := f.Console
	if !c.Enabled() || c.Listen.Value != "127.0.0.1:8444" || c.Grant.Value != "[Admins]" ||
		c.UsersFile.Value != filepath.Join(dir, "console-users") || c.IdleTimeout.D != 30*time.Minute || c.TLS != nil {
		t.Fatalf("console: %+v", c)
	}
	if f, err := Parse(filepath.Join(dir, "c.yaml"), []byte("log: { level: info }\n")); err != nil || f.Console.Enabled() {
		t.Fatalf("absent console: %v %+v", err, f.Console)
	}
	for _, c := range []struct{ yaml, want string }{
		{"console: { listen: \"127.0.0.1:8444\", usres_file: x }\n", `c.yaml:1:38: unknown key "usres_file" (did you mean "users_file"?)`},
		{"console: { listen: \"8444\" }\n", `c.yaml:1:20: console.listen: bad listen address "8444"`},
		{"console: { grant: \"[Admins]\" }\n", "c.yaml:1:19: console: needs listen"},
		{"console: { listen: \":8444\", tls: { cert: nope.pem, key: nope.key } }\n", "nope.pem: no such file"},
		{"console: { listen: \":8444\", tls: { cert: nope.pem } }\n", "tls needs both cert and key"},
		{"console: { listen: \":8444\", idle_timeout: 0 }\n", "console.idle_timeout: want a positive duration"},
	} {
		_, err := Parse(filepath.Join(dir, "c.yaml"), []byte(c.yaml))
		if err == nil {
			t.Errorf("%q: no error, want %q", c.yaml, c.want)
			continue
		}
		if msg := strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), ""); !strings.Contains(msg, c.want) {
			t.Errorf("%q: error\n%s\nwant it to contain\n%s", c.yaml, msg, c.want)
		}
	}
}
