package smtpproxy

import (
	"bufio"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// readAll reads every reply in in through c, as a backend's answers to one
// session's commands are read; it stops at the first error.
func readAll(in string, c *replyCache) ([]reply, error) {
	br := bufio.NewReader(strings.NewReader(in))
	var out []reply
	for {
		if _, err := br.Peek(1); err != nil {
			return out, nil
		}
		r, err := readReply(br, c)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

// A reply read again through the cache is the kept one: the same lines,
// no allocation. Replies that differ, even only in where their lines
// break, are not taken for one another.
func TestReplyCacheReadAgain(t *testing.T) {
	in := "220 mx.example.test ESMTP Postfix\r\n" +
		"250-mx.example.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n" +
		"250 2.1.0 Ok\r\n" +
		"250-ab\r\n250 c\r\n" +
		"250-a\r\n250 bc\r\n" +
		"250 abc\r\n" +
		"250 2.1.0 Ok\r\n"
	c := cacheApart(t, in)
	first, err := readAll(in, c)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := readAll(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 7 || len(plain) != 7 {
		t.Fatalf("read %d and %d replies, want 7", len(first), len(plain))
	}
	for i := range first {
		if first[i].code != plain[i].code || !slices.Equal(first[i].lines, plain[i].lines) {
			t.Errorf("reply %d: cached %d %q, plain %d %q", i, first[i].code, first[i].lines, plain[i].code, plain[i].lines)
		}
	}
	if !slices.Equal(first[3].lines, []string{"250-ab", "250 c"}) || !slices.Equal(first[4].lines, []string{"250-a", "250 bc"}) {
		t.Errorf("replies broken elsewhere taken for one another: %q, %q", first[3].lines, first[4].lines)
	}
	if unsafe.SliceData(first[6].lines) != unsafe.SliceData(first[2].lines) {
		t.Error("the second 250 2.1.0 Ok is a new copy, not the kept reply")
	}
	again, err := readAll(in, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		if unsafe.SliceData(again[i].lines) != unsafe.SliceData(first[i].lines) {
			t.Errorf("reply %d read again is a new copy", i)
		}
	}
	br := bufio.NewReader(nil)
	sr := strings.NewReader("")
	n := testing.AllocsPerRun(100, func() {
		sr.Reset(in)
		br.Reset(sr)
		for range 7 {
			if _, err := readReply(br, c); err != nil {
				t.Fatal(err)
			}
		}
	})
	if n != 0 {
		t.Errorf("replies read again: %v allocations, want 0", n)
	}
}

// cacheApart returns a cache whose seed puts the replies in in (distinct
// keys) in slots of their own, so that none takes another's slot: the
// slots are chosen by a hash with a random seed.
func cacheApart(t *testing.T, in string) *replyCache {
	t.Helper()
	rs, err := readAll(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range rs {
		if k := strings.Join(r.lines, "\n") + "\n"; !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	for range 1000 {
		c := newReplyCache()
		seen := map[uint64]bool{}
		for _, k := range keys {
			seen[maphash.String(c.seed, k)&(replyCacheSlots-1)] = true
		}
		if len(seen) == len(keys) {
			return c
		}
	}
	t.Fatal("cacheApart: no seed found")
	return nil
}

// Replies that differ every time (a queue ID) do not push out the ones
// that come again between them, and every reply read is the one sent.
func TestReplyCacheKeepsWhatRepeats(t *testing.T) {
	c := newReplyCache()
	ok, err := readAll("250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n", c) // kept, then read again
	if err != nil {
		t.Fatal(err)
	}
	kept := unsafe.SliceData(ok[0].lines)
	if unsafe.SliceData(ok[1].lines) != kept {
		t.Fatal("a reply read again is a new copy")
	}
	for i := range 5000 {
		queued := fmt.Sprintf("250 2.0.0 Ok: queued as %X\r\n", i)
		got, err := readAll(queued+"250 2.1.5 Ok\r\n", c)
		if err != nil {
			t.Fatal(err)
		}
		if got[0].lines[0] != strings.TrimSuffix(queued, "\r\n") {
			t.Fatalf("read %q, sent %q", got[0].lines[0], queued)
		}
		if unsafe.SliceData(got[1].lines) != kept {
			t.Fatalf("after %d queue IDs the repeated reply was pushed out", i+1)
		}
	}
}

// Replies longer than the cache keeps are read alike, and not kept.
func TestReplyCacheLong(t *testing.T) {
	c := newReplyCache()
	long := "250-" + strings.Repeat("x", 2000) + "\r\n250 " + strings.Repeat("y", 1000) + "\r\n"
	a, err := readAll(long+long, c)
	if err != nil || len(a) != 2 {
		t.Fatalf("%v, %d replies", err, len(a))
	}
	if len(a[1].lines) != 2 || len(a[1].lines[0]) != 2004 || len(a[1].lines[1]) != 1004 {
		t.Fatalf("long reply: %d lines", len(a[1].lines))
	}
	if unsafe.SliceData(a[0].lines) == unsafe.SliceData(a[1].lines) {
		t.Error("a reply longer than replyCacheMax was kept")
	}
}

// The sessions of one proxy read through one cache at once (run with the
// race detector in CI).
func TestReplyCacheShared(t *testing.T) {
	c := newReplyCache()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				in := fmt.Sprintf("250 2.1.0 Ok\r\n250 2.0.0 Ok: queued as %d-%d\r\n221 2.0.0 Bye\r\n", g, i)
				got, err := readAll(in, c)
				if err != nil {
					errs <- err
					return
				}
				want := []string{"250 2.1.0 Ok", fmt.Sprintf("250 2.0.0 Ok: queued as %d-%d", g, i), "221 2.0.0 Bye"}
				for k := range want {
					if len(got) != 3 || len(got[k].lines) != 1 || got[k].lines[0] != want[k] {
						errs <- fmt.Errorf("read %v, want %q", got, want)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// FuzzReadReply holds reading through the cache to reading without it:
// the same replies and the same errors, for any backend's bytes read
// twice over (the second time from the cache).
func FuzzReadReply(f *testing.F) {
	f.Add("220 mx ESMTP\r\n250-a\r\n250 b\r\n250 2.1.0 Ok\r\n")
	f.Add("250-ab\r\n250 c\r\n250-a\r\n250 bc\r\n")
	f.Add("250-x\r\n251 y\r\n")
	f.Add("2500 x\r\n199 y\r\n")
	f.Add("250 a\rb\r\n250 a\n250 a\r\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		c := newReplyCache()
		plain, perr := readAll(in+in, nil)
		cached, cerr := readAll(in+in, c)
		if (perr == nil) != (cerr == nil) || (perr != nil && perr.Error() != cerr.Error()) {
			t.Fatalf("errors differ: %v and %v", perr, cerr)
		}
		if len(plain) != len(cached) {
			t.Fatalf("%d replies without the cache, %d with it", len(plain), len(cached))
		}
		for i := range plain {
			if plain[i].code != cached[i].code || !slices.Equal(plain[i].lines, cached[i].lines) {
				t.Fatalf("reply %d: %d %q without the cache, %d %q with it", i, plain[i].code, plain[i].lines, cached[i].code, cached[i].lines)
			}
			r := cached[i]
			if got, want := r.text(), joinedText(r); got != want {
				t.Fatalf("text() of %q = %q, want %q", r.lines, got, want)
			}
			if got, want := r.enhanced(), enhancedByFields(r); got != want {
				t.Fatalf("enhanced() of %q = %q, want %q", r.lines, got, want)
			}
		}
	})
}

// joinedText is text() as it was first written: every line's text after
// its code, joined by spaces.
func joinedText(r reply) string {
	var parts []string
	for _, l := range r.lines {
		if len(l) > 4 {
			parts = append(parts, l[4:])
		} else {
			parts = append(parts, "")
		}
	}
	return strings.Join(parts, " ")
}

// enhancedByFields is enhanced() as it was first written, with
// strings.Fields.
func enhancedByFields(r reply) string {
	if len(r.lines) == 0 || len(r.lines[0]) < 5 {
		return ""
	}
	f := strings.Fields(r.lines[0][4:])
	if len(f) == 0 {
		return ""
	}
	c := f[0]
	if len(c) >= 5 && (c[0] == '2' || c[0] == '4' || c[0] == '5') && c[1] == '.' && strings.Count(c, ".") == 2 {
		return c
	}
	return ""
}

// The text and enhanced code of the replies a message line logs.
func TestReplyTextAndEnhanced(t *testing.T) {
	for _, tc := range []struct{ in, text, enhanced string }{
		{"250 2.0.0 Ok: queued as 4XyZ\r\n", "2.0.0 Ok: queued as 4XyZ", "2.0.0"},
		{"250 Ok\r\n", "Ok", ""},
		{"250\r\n", "", ""},
		{"550-5.1.1 <a@b>: Recipient address rejected:\r\n550 5.1.1 User unknown\r\n", "5.1.1 <a@b>: Recipient address rejected: 5.1.1 User unknown", "5.1.1"},
		{"451 \u00a04.3.0\u00a0Error\r\n", "\u00a04.3.0\u00a0Error", "4.3.0"},
		{"554 5.7.1\r\n", "5.7.1", "5.7.1"},
		{"554 5.7\r\n", "5.7", ""},
	} {
		rs, err := readAll(tc.in, nil)
		if err != nil || len(rs) != 1 {
			t.Fatalf("%q: %v", tc.in, err)
		}
		if got := rs[0].text(); got != tc.text {
			t.Errorf("%q: text() = %q, want %q", tc.in, got, tc.text)
		}
		if got := rs[0].enhanced(); got != tc.enhanced {
			t.Errorf("%q: enhanced() = %q, want %q", tc.in, got, tc.enhanced)
		}
	}
	r := reply{code: 250, lines: []string{"250 2.0.0 Ok: queued as 4XyZ"}}
	if n := testing.AllocsPerRun(100, func() { _, _ = r.text(), r.enhanced() }); n != 0 {
		t.Errorf("text and enhanced code of a one-line reply: %v allocations, want 0", n)
	}
}
