package config

import (
	"strings"
	"testing"
	"time"
)

func TestIntrusionPreventionConfig(t *testing.T) {
	f, err := Parse("/etc/postern/p.yaml", []byte(`
intrusion_prevention:
  block_minutes: 30
  refuse_blocked: false
  close_all: true
  bypass_file: bypass.txt
  tarpit_delay: 2s
  escalation: { factor: 2, max_minutes: 1440, memory: 7d }
  block_prefix: { ipv4: 32, ipv6: 64 }
  subnets: { ipv4: 24, ipv6: [64, 48], factor: 4 }
  account_protection: { failures: 20, delay: 1500ms }
  purge_expired_after: 0
  smtp: { connections_per_minute: 86, failed_logins: 5, unknown_recipients: 5, relay_denials: 5,
          rset_count: 20, spam_score: 8.5, dnsbl: [zen.example.org], message_size: 100MB,
          tarpit_accounts: "[SpamTraps]", content_rules: true, log_only: [P, relay_denials] }
  imap_pop3: { connections_per_minute: 86, failed_logins: 5 }
store: { path: state/postern.db }
admin: { listen: "unix:run/admin.sock", token_file: admin.token }
node: gw1
local_domains: "example.com; example.net"
`))
	if err != nil {
		t.Fatal(err)
	}
	ips := f.IntrusionPrevention
	if *ips.BlockMinutes != 30 || *ips.RefuseBlocked || !ips.CloseAll || ips.TarpitDelay.D != 2*time.Second {
		t.Errorf("basics: %+v", ips)
	}
	if ips.BypassFile.Value != "/etc/postern/bypass.txt" || ips.Escalation.Memory.D != 7*24*time.Hour || ips.AccountProtection.Delay.D != 1500*time.Millisecond {
		t.Errorf("paths/durations: %+v", ips)
	}
	if !ips.PurgeAfter.Set || ips.PurgeAfter.D != 0 {
		t.Errorf("purge_expired_after 0 must be kept as set: %+v", ips.PurgeAfter)
	}
	if ips.SMTP.MessageSize.Bytes != 100<<20 || ips.SMTP.SpamScore != 8.5 || ips.SMTP.DNSBL[0].Value != "zen.example.org" || len(ips.SMTP.LogOnly) != 2 {
		t.Errorf("smtp: %+v", ips.SMTP)
	}
	if ips.SMTP.Pos().Line != 13 || ips.IMAPPOP3.FailedLogins != 5 || ips.Web != nil {
		t.Errorf("groups: %v %+v", ips.SMTP.Pos(), ips.IMAPPOP3)
	}
	if f.Store.Path.Value != "/etc/postern/state/postern.db" || f.Admin.Listen.Value != "unix:/etc/postern/run/admin.sock" || f.Admin.TokenFile.Value != "/etc/postern/admin.token" {
		t.Errorf("store/admin: %+v %+v", f.Store, f.Admin)
	}
	if f.Node != "gw1" || f.LocalDomains.Value != "example.com; example.net" {
		t.Errorf("node/local domains")
	}
}

func TestIntrusionPreventionErrors(t *testing.T) {
	for text, want := range map[string]string{
		"intrusion_prevention: { block_minutes: 0 }":                    "block_minutes must be at least 1",
		"intrusion_prevention: { tarpit_delay: soon }":                  `bad duration "soon"`,
		"intrusion_prevention: { tarpit_delay: -1s }":                   `bad duration "-1s"`,
		"intrusion_prevention: { smtp: { message_size: 12XB } }":        `bad size "12XB"`,
		"intrusion_prevention: { smtp: { failed_logins: -1 } }":         "cannot be negative",
		"intrusion_prevention: { smtp: { failed_logins: five } }":       `want a whole number, got "five"`,
		"intrusion_prevention: { imap_pop3: { rset_count: 3 } }":        `p.yaml:1:38: unknown key "rset_count" (applies to intrusion_prevention.smtp only)`,
		"intrusion_prevention: { web: { dnsbl: [x.example] } }":         `p.yaml:1:32: unknown key "dnsbl" (applies to intrusion_prevention.smtp only)`,
		"intrusion_prevention: { web: { failed_login: 3 } }":            `p.yaml:1:32: unknown key "failed_login" (did you mean "failed_logins"?)`,
		"intrusion_prevention: { smtp: { log_only: [Q] } }":             `unknown trigger "Q"`,
		"intrusion_prevention: { smtp: { failed_login: 5 } }":           `unknown key "failed_login" (did you mean "failed_logins"?)`,
		"intrusion_prevention: { escalation: { factor: 0.5 } }":         "factor must be between 1 and 100",
		"intrusion_prevention: { block_prefix: { ipv6: 8 } }":           "ipv6 16-128",
		"intrusion_prevention: { subnets: { ipv6: [200] } }":            "lengths must be 16-127",
		"admin: { listen: \"http://x\" }":                               "bad admin.listen",
		"admin: { listen: \"tcp:localhost\" }":                          "admin.listen: bad listen address",
		"admin: { listen: \"unix:/run/a.sock\", grant: \"127.0.0.1\" }": "admin.grant applies to a tcp: listener only",
	} {
		_, err := Parse("p.yaml", []byte(text+"\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", text, err, want)
		}
	}
}

// TestPerGroupKeys: failed_logins_across_groups and a group's
// refuse_blocked are read with their positions; bad values are errors at
// their file:line:column.
func TestPerGroupKeys(t *testing.T) {
	f, err := Parse("/etc/postern/p.yaml", []byte(`intrusion_prevention:
  failed_logins_across_groups: 6
  smtp: { failed_logins: 5 }
  web: { failed_logins: 10, refuse_blocked: false }
`))
	if err != nil {
		t.Fatal(err)
	}
	ips := f.IntrusionPrevention
	if a := ips.FailedLoginsAcrossGroups; !a.Set || a.N != 6 || a.Pos.Line != 2 || a.Pos.Col != 32 {
		t.Errorf("failed_logins_across_groups: %+v", a)
	}
	if ips.Web.RefuseBlocked == nil || *ips.Web.RefuseBlocked || ips.SMTP.RefuseBlocked != nil {
		t.Errorf("refuse_blocked per group: web %v smtp %v", ips.Web.RefuseBlocked, ips.SMTP.RefuseBlocked)
	}
	for text, want := range map[string]string{
		"intrusion_prevention:\n  failed_logins_across_groups: -2\n":                        "p.yaml:2:32: intrusion_prevention.failed_logins_across_groups cannot be negative",
		"intrusion_prevention:\n  failed_logins_across_groups: many\n":                      `p.yaml:2:32: want a whole number, got "many"`,
		"intrusion_prevention:\n  failed_logins_across_groups: [1]\n":                       "p.yaml:2:32: want a whole number, got a list",
		"intrusion_prevention:\n  cross_session: false\n  failed_logins_across_groups: 6\n": "p.yaml:3:32: intrusion_prevention.failed_logins_across_groups counts across connections; it needs cross_session: true",
		"intrusion_prevention:\n  web: { refuse_blocked: maybe }\n":                         `p.yaml:2:26: want a true or false, got "maybe"`,
	} {
		_, err := Parse("p.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
}

func TestParseSizeAndDuration(t *testing.T) {
	for in, want := range map[string]int64{"100MB": 100 << 20, "512k": 512 << 10, "1G": 1 << 30, "42": 42, "7 MiB": 7 << 20, "3b": 3} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for in, want := range map[string]time.Duration{"0": 0, "90s": 90 * time.Second, "1.5d": 36 * time.Hour, "4h": 4 * time.Hour} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
}

// A size written without a unit below 1 KB is refused: message_size: 100
// would otherwise mean 100 bytes and refuse (and block) every sender.
func TestSizeWithoutUnitBelowFloor(t *testing.T) {
	for text, want := range map[string]string{
		"intrusion_prevention: { smtp: { message_size: 100 } }":  "p.yaml:1:47: size 100 has no unit, so it means 100 bytes: write the unit (100KB, 100MB, or 100B if bytes are meant)",
		"intrusion_prevention: { smtp: { message_size: 1023 } }": "size 1023 has no unit",
		"spam: { max_size: 20 }":                                 "p.yaml:1:19: size 20 has no unit",
	} {
		_, err := Parse("p.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", text, err, want)
		}
	}
	for text, bytes := range map[string]int64{
		"intrusion_prevention: { smtp: { message_size: 100B } }":  100,
		"intrusion_prevention: { smtp: { message_size: 1024 } }":  1024,
		"intrusion_prevention: { smtp: { message_size: 0 } }":     0,
		"intrusion_prevention: { smtp: { message_size: 100KB } }": 100 << 10,
	} {
		f, err := Parse("p.yaml", []byte(text))
		if err != nil {
			t.Errorf("%s: %v", text, err)
			continue
		}
		if got := f.IntrusionPrevention.SMTP.MessageSize.Bytes; got != bytes {
			t.Errorf("%s: %d bytes, want %d", text, got, bytes)
		}
	}
}
