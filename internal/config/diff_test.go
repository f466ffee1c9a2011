package config

import (
	"slices"
	"testing"
)

func TestChanged(t *testing.T) {
	parse := func(src string) *File {
		t.Helper()
		f, err := Parse("/etc/postern/postern.yaml", []byte(src))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		return f
	}
	base := `
patterns:
  Admins: "192.0.2.7"
  Office: "198.51.100.0/24"
services:
  imap:
    listen: ":143"
    backend: "127.0.0.1:10143"
  smtp:
    listen: ":25"
    backend: "127.0.0.1:10025"
content_rules:
  - name: viagra
    body: "(?i)viagra"
log:
  level: info
`
	old := parse(base)
	if got := Changed(old, parse(base)); len(got) != 0 {
		t.Errorf("same file: changed %q", got)
	}
	// The same values written elsewhere, quoted differently: no change.
	moved := parse("\n\n" + `
log:
  level: 'info'
content_rules:
  - name: viagra
    body: '(?i)viagra'
services:
  smtp:
    backend: 127.0.0.1:10025
    listen: ":25"
  imap:
    listen: ":143"
    backend: "127.0.0.1:10143"
patterns:
  Office: "198.51.100.0/24"
  Admins: "192.0.2.7"
`)
	if got := Changed(old, moved); len(got) != 0 {
		t.Errorf("moved lines: changed %q", got)
	}
	cur := parse(`
patterns:
  Admins: "192.0.2.8"
  Staff: "203.0.113.0/24"
services:
  imap:
    listen: ":143"
    backend: "127.0.0.1:10144"
    timeouts:
      command: 30s
  pop3:
    listen: ":110"
    backend: "127.0.0.1:10110"
  smtp:
    listen: ":2525"
    backend: "127.0.0.1:10025"
content_rules:
  - name: viagra
    body: "(?i)cialis"
log:
  level: debug
`)
	want := []string{
		"patterns.Admins", "patterns.Staff", "patterns.Office",
		"services.imap.backend", "services.imap.timeouts.command",
		"services.pop3", "services.smtp.listen",
		"content_rules", "log.level",
	}
	got := Changed(old, cur)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Changed =\n%q\nwant\n%q", got, want)
	}
}
