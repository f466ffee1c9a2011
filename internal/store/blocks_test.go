package store

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
)

// normalized is b as LoadBlocks returns it: prefix masked, times in UTC.
func normalized(b Block) Block {
	b.Prefix = b.Prefix.Masked()
	utc := func(t time.Time) time.Time {
		if t.IsZero() {
			return time.Time{}
		}
		return t.UTC()
	}
	b.FirstSeen, b.LastSeen, b.Expires = utc(b.FirstSeen), utc(b.LastSeen), utc(b.Expires)
	return b
}

func TestBlocksRoundTrip(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	kathmandu := time.FixedZone("NPT", 5*3600+45*60)
	pacific := time.FixedZone("PDT", -7*3600)
	in := []Block{
		{ // IPv6 /64, every field, non-UTC times with nanoseconds
			Prefix: netip.MustParsePrefix("2001:db8:1:2::/64"), Reason: reason.UnknownRecipients,
			Service: "smtp", Detail: "harvest: 40 unknown users — ünïcode",
			FirstSeen: time.Date(2026, 1, 2, 3, 4, 5, 123456789, kathmandu),
			LastSeen:  time.Date(2026, 1, 2, 3, 9, 5, 987654321, pacific),
			Hits:      1<<40 + 7, Expires: time.Date(2026, 1, 9, 0, 0, 0, 1, kathmandu),
			Node: "mx2.example.net", By: "engine", Comment: "escalated", Level: 4,
		},
		{ // IPv4 /32, zero Expires (never), manual
			Prefix: netip.MustParsePrefix("203.0.113.9/32"), Reason: reason.Manual,
			FirstSeen: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), LastSeen: time.Now(),
			By: "admin:alice", Comment: "abuse report #4711",
		},
		{ // IPv6 /128
			Prefix: netip.MustParsePrefix("2001:db8::dead:beef/128"), Reason: reason.Spam,
			Service: "smtp", Detail: "score 17.3", FirstSeen: time.Now(), LastSeen: time.Now(),
			Hits: 1, Expires: time.Now().Add(time.Hour), Node: "mx1", By: "engine",
		},
		{ // IPv4 /24 given with host bits: stored masked
			Prefix: netip.MustParsePrefix("198.51.100.77/24"), Reason: reason.DNSBL,
			Service: "smtp", Detail: "zen.spamhaus.org", Hits: 3, Level: 1,
			FirstSeen: time.Unix(1, 0), LastSeen: time.Unix(2, 0), Expires: time.Unix(1e9, 5),
		},
		{ // all zero but the key and reason
			Prefix: netip.MustParsePrefix("::ffff:192.0.2.1/128"), Reason: reason.Relay,
		},
	}
	for _, r := range reason.All {
		in = append(in, Block{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(r)}), 32), Reason: r})
	}
	if err := db.PutBlocks(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := db.LoadBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]Block{}
	for _, b := range in {
		want[b.Prefix.Masked()] = normalized(b)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks, want %d", len(got), len(want))
	}
	for _, g := range got {
		w := want[g.Prefix]
		if !reflect.DeepEqual(g, w) {
			t.Errorf("round trip of %v:\n got %+v\nwant %+v", g.Prefix, g, w)
		}
		for _, tm := range []time.Time{g.FirstSeen, g.LastSeen, g.Expires} {
			if !tm.IsZero() && tm.Location() != time.UTC {
				t.Errorf("%v: time %v not in UTC", g.Prefix, tm)
			}
		}
	}
	// IPv4 stays IPv4, 4in6 stays 4in6, and the stored text is canonical.
	var keys []string
	if err := func() error {
		rows, err := db.r.QueryContext(ctx, "SELECT prefix FROM blocks ORDER BY prefix")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				return err
			}
			keys = append(keys, s)
		}
		return rows.Err()
	}(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"198.51.100.0/24", "203.0.113.9/32", "2001:db8:1:2::/64", "::ffff:192.0.2.1/128"} {
		found := false
		for _, s := range keys {
			found = found || s == k
		}
		if !found {
			t.Errorf("stored keys %q lack %q", keys, k)
		}
	}
}

func TestBlocksSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/b.db"
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !db.Created() {
		t.Error("Created() = false for a new store")
	}
	in := []Block{block(addr(1), 1), block(netip.MustParsePrefix("2001:db8::/64"), 2)}
	in[1].Expires = time.Time{}
	if err := db.PutBlocks(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Created() {
		t.Error("Created() = true for an existing store")
	}
	got, err := db.LoadBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, in)
	}
}

func TestPutBlocksUpsert(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	p := netip.MustParsePrefix("192.0.2.7/32")
	a := block(p, 1)
	if err := db.PutBlocks(ctx, []Block{a}); err != nil {
		t.Fatal(err)
	}
	b := block(p, 9)
	b.Reason, b.Service, b.Detail, b.Comment, b.Expires = reason.RSET, "smtp", "12 RSET", "again", time.Time{}
	if err := db.PutBlocks(ctx, []Block{b}); err != nil {
		t.Fatal(err)
	}
	got, err := db.LoadBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], b) {
		t.Fatalf("after upsert: %+v, want only %+v", got, b)
	}

	// Within one batch the later block wins; host bits do not make a new key.
	c, d := block(netip.MustParsePrefix("198.51.100.1/24"), 1), block(netip.MustParsePrefix("198.51.100.200/24"), 2)
	if err := db.PutBlocks(ctx, []Block{c, d}); err != nil {
		t.Fatal(err)
	}
	got, _ = db.LoadBlocks(ctx)
	if len(got) != 2 || !reflect.DeepEqual(got[1], normalized(d)) {
		t.Fatalf("duplicate in batch: %+v", got)
	}
}

func TestPutBlocksRejectsInvalid(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	good := block(addr(1), 1)
	cases := map[string]Block{
		"invalid prefix": {Reason: reason.Login},
		"unknown reason": {Prefix: addr(2), Reason: 'Q'},
		"out of range":   {Prefix: addr(3), Reason: reason.Login, Expires: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)},
		"epoch":          {Prefix: addr(4), Reason: reason.Login, FirstSeen: time.Unix(0, 0)},
	}
	for name, bad := range cases {
		err := db.PutBlocks(ctx, []Block{good, bad})
		if err == nil {
			t.Errorf("%s: PutBlocks accepted %+v", name, bad)
			continue
		}
		if !strings.Contains(err.Error(), db.Path()) || !strings.Contains(err.Error(), "block 1") {
			t.Errorf("%s: error %q lacks the path or the index", name, err)
		}
	}
	// Nothing of a rejected batch is written.
	if got, _ := db.LoadBlocks(ctx); len(got) != 0 {
		t.Fatalf("rejected batches wrote %d blocks", len(got))
	}
	if err := db.PutBlocks(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteBlocks(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	var in []Block
	for i := range 10 {
		in = append(in, block(addr(i), i))
	}
	in = append(in, block(netip.MustParsePrefix("2001:db8:5::/64"), 10))
	if err := db.PutBlocks(ctx, in); err != nil {
		t.Fatal(err)
	}
	n, err := db.DeleteBlocks(ctx, []netip.Prefix{
		addr(1), addr(3), addr(3), // duplicate counts once
		addr(99), // never stored
		netip.MustParsePrefix("2001:db8:5:0:1::/64"), // host bits: same key
		netip.MustParsePrefix("10.0.0.0/24"),         // not a stored key
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("DeleteBlocks = %d, want 3", n)
	}
	got, _ := db.LoadBlocks(ctx)
	if len(got) != 8 {
		t.Fatalf("%d blocks left, want 8", len(got))
	}
	for _, b := range got {
		if b.Prefix == addr(1) || b.Prefix == addr(3) || b.Prefix.Addr().Is6() {
			t.Errorf("%v still stored", b.Prefix)
		}
	}
	if _, err := db.DeleteBlocks(ctx, []netip.Prefix{{}}); err == nil {
		t.Error("DeleteBlocks accepted an invalid prefix")
	}
	if n, err := db.DeleteBlocks(ctx, nil); n != 0 || err != nil {
		t.Errorf("DeleteBlocks(nil) = %d, %v", n, err)
	}

	n, err = db.DeleteAllBlocks(ctx)
	if err != nil || n != 8 {
		t.Fatalf("DeleteAllBlocks = %d, %v; want 8", n, err)
	}
	if got, _ := db.LoadBlocks(ctx); len(got) != 0 {
		t.Fatalf("%d blocks after DeleteAllBlocks", len(got))
	}
	if n, err := db.DeleteAllBlocks(ctx); n != 0 || err != nil {
		t.Errorf("DeleteAllBlocks on empty = %d, %v", n, err)
	}
}

func TestPurgeExpired(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	now := time.Date(2026, 6, 1, 12, 0, 0, 500, time.UTC)
	mk := func(s string, exp time.Time) Block {
		b := block(netip.MustParsePrefix(s), 0)
		b.Expires = exp
		return b
	}
	in := []Block{
		mk("192.0.2.1/32", now.Add(-time.Hour)),                            // expired
		mk("192.0.2.2/32", now),                                            // boundary: purged
		mk("192.0.2.3/32", now.Add(time.Nanosecond)),                       // one ns left
		mk("192.0.2.4/32", time.Time{}),                                    // never
		mk("2001:db8::/64", now.In(time.FixedZone("X", 3600))),             // boundary, other zone
		mk("2001:db8::1/128", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)), // long ago
	}
	if err := db.PutBlocks(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := db.PurgeExpired(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32"),
		netip.MustParsePrefix("2001:db8::/64"), netip.MustParsePrefix("2001:db8::1/128"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PurgeExpired = %v, want %v", got, want)
	}
	left, _ := db.LoadBlocks(ctx)
	if len(left) != 2 || left[0].Prefix.String() != "192.0.2.3/32" || left[1].Prefix.String() != "192.0.2.4/32" {
		t.Fatalf("left after purge: %+v", left)
	}
	again, err := db.PurgeExpired(ctx, now)
	if err != nil || len(again) != 0 {
		t.Fatalf("second purge = %v, %v", again, err)
	}
	// Far future: everything with an expiry goes, never-expiring stays.
	got, err = db.PurgeExpired(ctx, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || len(got) != 1 || got[0].String() != "192.0.2.3/32" {
		t.Fatalf("far-future purge = %v, %v", got, err)
	}
	if got, err := db.PurgeExpired(ctx, time.Time{}); err != nil || len(got) != 0 {
		t.Fatalf("zero-time purge = %v, %v", got, err)
	}
}

func TestLoadOrder(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	order := []string{ // the order LoadBlocks must return
		"9.9.9.9/32", "10.0.0.0/8", "10.0.0.0/24", "10.0.0.1/32", "10.0.0.10/32", "10.0.0.200/32",
		"100.64.0.0/10", "192.0.2.0/24", "::ffff:1.2.3.4/128", "2001:db8::/32", "2001:db8::/64",
		"2001:db8::1/128", "2001:db8::a/128", "fe80::/10",
	}
	var in []Block
	for i := len(order) - 1; i >= 0; i-- {
		in = append(in, block(netip.MustParsePrefix(order[i]), i))
	}
	if err := db.PutBlocks(ctx, in); err != nil {
		t.Fatal(err)
	}
	got, err := db.LoadBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, b := range got {
		s = append(s, b.Prefix.String())
	}
	if !reflect.DeepEqual(s, order) {
		t.Fatalf("load order\n got %q\nwant %q", s, order)
	}
}

func TestLoadBlocksBadRows(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]struct{ prefix, reason, want string }{
		"bad prefix":     {"not-a-prefix", "L", "bad prefix"},
		"non-canonical":  {"10.0.0.1/24", "L", "canonical"},
		"bad reason":     {"10.0.0.0/24", "Q", "bad reason"},
		"empty reason":   {"10.0.0.0/24", "", "bad reason"},
		"long reason":    {"10.0.0.0/24", "LL", "bad reason"},
		"zoned address":  {"fe80::1%eth0/128", "L", "bad prefix"},
		"text in number": {"10.0.0.0/24", "L", "first_seen"},
	} {
		t.Run(name, func(t *testing.T) {
			db := openTest(t)
			if err := db.PutBlocks(ctx, []Block{block(addr(5), 5)}); err != nil {
				t.Fatal(err)
			}
			first := any(int64(0))
			if name == "text in number" {
				first = "yesterday"
			}
			if _, err := db.w.ExecContext(ctx, "INSERT INTO blocks (prefix, reason, first_seen) VALUES (?, ?, ?)",
				c.prefix, c.reason, first); err != nil {
				t.Fatal(err)
			}
			got, err := db.LoadBlocks(ctx)
			if err == nil {
				t.Fatalf("LoadBlocks accepted a bad row: %+v", got)
			}
			msg := err.Error()
			if !strings.Contains(msg, db.Path()) || !strings.Contains(msg, c.prefix) || !strings.Contains(msg, c.want) {
				t.Fatalf("error %q should name the path, the row %q and %q", msg, c.prefix, c.want)
			}
		})
	}
}

func TestClosedDB(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, t.TempDir()+"/c.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := db.PutBlocks(ctx, []Block{block(addr(1), 1)}); !errors.Is(err, ErrClosed) {
		t.Errorf("PutBlocks after Close: %v", err)
	}
	if _, err := db.LoadBlocks(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadBlocks after Close: %v", err)
	}
	if _, err := db.Audit(ctx, time.Time{}, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Audit after Close: %v", err)
	}
}

func TestCancelledContext(t *testing.T) {
	db := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := db.PutBlocks(ctx, []Block{block(addr(1), 1)}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutBlocks with a cancelled context: %v", err)
	}
	if _, err := db.LoadBlocks(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("LoadBlocks with a cancelled context: %v", err)
	}
	if got, _ := db.LoadBlocks(context.Background()); len(got) != 0 {
		t.Errorf("cancelled PutBlocks stored %d blocks", len(got))
	}
}
