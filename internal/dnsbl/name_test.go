package dnsbl

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestQueryName(t *testing.T) {
	for _, tc := range []struct{ addr, zone, want string }{
		{"203.0.113.7", "zen.example.org", "7.113.0.203.zen.example.org."},
		{"203.0.113.7", "ZEN.Example.org.", "7.113.0.203.zen.example.org."},
		{"::ffff:203.0.113.7", "zen.example.org", "7.113.0.203.zen.example.org."},
		{"127.0.0.2", "bl_1.test", "2.0.0.127.bl_1.test."},
		{"2001:db8::1", "zen.example.org",
			"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example.org."},
		{"fe80::abcd%eth0", "z.test",
			"d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.z.test."},
	} {
		got, err := queryName(netip.MustParseAddr(tc.addr), tc.zone)
		if err != nil || got != tc.want {
			t.Errorf("queryName(%s, %q) = %q, %v; want %q", tc.addr, tc.zone, got, err, tc.want)
		}
	}
	if got := v6Name("2001:db8::1", "z.test"); got != must(queryName(netip.MustParseAddr("2001:db8::1"), "z.test")) {
		t.Errorf("queryName disagrees with miekg/dns: %q", got)
	}
	for _, zone := range []string{"", ".", "a..b", "a b", "a/b", strings.Repeat("x", 64) + ".test", "é.test"} {
		if got, err := queryName(netip.MustParseAddr("192.0.2.1"), zone); err == nil {
			t.Errorf("queryName(zone %q) = %q, want an error", zone, got)
		}
	}
	if _, err := queryName(netip.Addr{}, "z.test"); err == nil {
		t.Error("zero address accepted")
	}
}

func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

func TestCleanReason(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"  plain  ", "plain"},
		{"a\r\nb\x00c\td", "a b c d"},
		{"bad \xff utf8", "bad utf8"},
		{"ünïcode ok", "ünïcode ok"},
		{strings.Repeat("é", 200), strings.Repeat("é", maxReasonLen/2)},
	} {
		if got := cleanReason(tc.in); got != tc.want {
			t.Errorf("cleanReason(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCacheEviction(t *testing.T) {
	now := time.Unix(0, 0)
	c := newCache(time.Minute, 3, func() time.Time { return now })
	for _, k := range []string{"a", "b", "c", "d"} {
		c.put(k, answer{listed: true})
	}
	if _, ok := c.get("a"); ok {
		t.Error("oldest entry not evicted")
	}
	for _, k := range []string{"b", "c", "d"} {
		if _, ok := c.get(k); !ok {
			t.Errorf("%s evicted", k)
		}
	}
	// Re-putting refreshes an entry: b is now the newest.
	c.put("b", answer{})
	c.put("e", answer{})
	if _, ok := c.get("c"); ok {
		t.Error("c should have been evicted before the refreshed b")
	}
	if a, ok := c.get("b"); !ok || a.listed {
		t.Errorf("b = %+v, %v; want the new answer", a, ok)
	}
	// Expired entries are swept on put.
	now = now.Add(time.Minute)
	c.put("f", answer{})
	if n := c.len(); n != 1 {
		t.Errorf("%d entries after expiry, want 1", n)
	}
}
