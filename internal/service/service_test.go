package service

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	want := []string{"smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s", "web"}
	if len(All) != len(want) || len(All) != Count-2 { // all but Console
		t.Fatalf("All has %d services, want %d", len(All), len(want))
	}
	for i, s := range All {
		if s.String() != want[i] {
			t.Errorf("All[%d] = %s, want %s (configuration order)", i, s, want[i])
		}
		got, ok := Parse(want[i])
		if !ok || got != s {
			t.Errorf("Parse(%q) = %v, %v; want %v", want[i], got, ok, s)
		}
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	if Names != "smtp, submission, smtps, imap, imaps, pop3, pop3s, web" {
		t.Errorf("Names = %q", Names)
	}
	for _, bad := range []string{"", "SMTP", "Web", " smtp", "smtp ", "imap_pop3", "http", "service(1)"} {
		if s, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) = %v, want no service", bad, s)
		}
	}
	var zero Service
	if zero.Valid() || Service(Count).Valid() {
		t.Error("zero or Count is valid")
	}
	if zero.String() != "service(0)" || zero.Protocol() != 0 || zero.ImplicitTLS() || zero.DefaultPort() != 0 {
		t.Errorf("zero service: %s %v %v %d", zero, zero.Protocol(), zero.ImplicitTLS(), zero.DefaultPort())
	}
}

func TestProperties(t *testing.T) {
	for _, c := range []struct {
		s        Service
		proto    Protocol
		implicit bool
		port     int
	}{
		{SMTP, ProtocolSMTP, false, 25},
		{Submission, ProtocolSMTP, false, 587},
		{SMTPS, ProtocolSMTP, true, 465},
		{IMAP, ProtocolMail, false, 143},
		{IMAPS, ProtocolMail, true, 993},
		{POP3, ProtocolMail, false, 110},
		{POP3S, ProtocolMail, true, 995},
		{Web, ProtocolWeb, false, 443},
	} {
		if c.s.Protocol() != c.proto || c.s.ImplicitTLS() != c.implicit || c.s.DefaultPort() != c.port {
			t.Errorf("%s: protocol %s, implicit TLS %v, port %d; want %s, %v, %d",
				c.s, c.s.Protocol(), c.s.ImplicitTLS(), c.s.DefaultPort(), c.proto, c.implicit, c.port)
		}
	}
	if ProtocolSMTP.String() != "smtp" || ProtocolMail.String() != "mail" || ProtocolWeb.String() != "web" {
		t.Error("protocol names")
	}
}

func TestText(t *testing.T) {
	b, err := json.Marshal(map[Service]int{IMAPS: 1, Web: 2})
	if err != nil || string(b) != `{"imaps":1,"web":2}` {
		t.Fatalf("marshal map: %s, %v", b, err)
	}
	var m map[Service]int
	if err := json.Unmarshal(b, &m); err != nil || m[IMAPS] != 1 || m[Web] != 2 {
		t.Fatalf("unmarshal map: %v, %v", m, err)
	}
	var s Service
	if err := json.Unmarshal([]byte(`"pop3"`), &s); err != nil || s != POP3 {
		t.Fatalf("unmarshal: %v, %v", s, err)
	}
	err = json.Unmarshal([]byte(`"gopher"`), &s)
	if err == nil || err.Error() != `unknown service "gopher": want one of smtp, submission, smtps, imap, imaps, pop3, pop3s, web` {
		t.Errorf("unmarshal gopher: %v", err)
	}
	if _, err := Service(0).MarshalText(); err == nil {
		t.Error("the zero service marshals")
	}
}

func TestNoAllocs(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		for _, s := range All {
			_ = s.String()
			_ = s.Protocol()
			_ = s.ImplicitTLS()
		}
		_, _ = Parse("pop3s")
	})
	if n != 0 {
		t.Errorf("%v allocations", n)
	}
}

// Console is a service of the engine but not of the configuration: it
// is valid, speaks web and has a name, yet Parse and All do not know it.
func TestConsole(t *testing.T) {
	if !Console.Valid() || Console.String() != "console" || Console.Protocol() != ProtocolWeb || Console.DefaultPort() != 0 || Console.ImplicitTLS() {
		t.Fatalf("console: valid %v, %q, %v, port %d", Console.Valid(), Console, Console.Protocol(), Console.DefaultPort())
	}
	if _, ok := Parse("console"); ok {
		t.Error("Parse knows console: the configuration would take a services.console key")
	}
	for _, s := range All {
		if s == Console {
			t.Error("All holds console")
		}
	}
	if strings.Contains(Names, "console") {
		t.Errorf("Names: %q", Names)
	}
	var s Service
	if b, err := Console.MarshalText(); err != nil || json.Unmarshal([]byte(`"`+string(b)+`"`), &s) != nil || s != Console {
		t.Fatalf("console round trip: %q, %v, %v", b, err, s)
	}
	if Service(Count).Valid() {
		t.Error("one past console is valid")
	}
}
