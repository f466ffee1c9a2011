package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestAudit(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	t0 := time.Date(2026, 4, 1, 8, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	var all []AuditEntry
	for i := range 5 {
		all = append(all, AuditEntry{
			Time: t0.Add(time.Duration(i) * time.Minute), Actor: "cli", Action: "block",
			Target: fmt.Sprintf("192.0.2.%d", i), Detail: "1h",
		})
	}
	// Two entries with the same time: newest-first means last appended first.
	all = append(all, AuditEntry{Time: t0.Add(4 * time.Minute), Actor: "api:ops", Action: "unblock-all", Detail: "7 blocks"})
	if err := db.AppendAudit(ctx, all[:3]...); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendAudit(ctx, all[3:]...); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendAudit(ctx); err != nil {
		t.Fatal(err)
	}

	want := func(idx ...int) []AuditEntry {
		var out []AuditEntry
		for _, i := range idx {
			e := all[i]
			e.Time = e.Time.UTC()
			out = append(out, e)
		}
		return out
	}
	for _, c := range []struct {
		since time.Time
		limit int
		want  []AuditEntry
	}{
		{time.Time{}, 0, want(5, 4, 3, 2, 1, 0)},
		{time.Time{}, 2, want(5, 4)},
		{t0.Add(2 * time.Minute), 0, want(5, 4, 3, 2)}, // at or after
		{t0.Add(2*time.Minute + 1), 10, want(5, 4, 3)},
		{t0.Add(time.Hour), 0, nil},
		{t0.Add(-time.Hour), -1, want(5, 4, 3, 2, 1, 0)},
	} {
		got, err := db.Audit(ctx, c.since, c.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Audit(%v, %d):\n got %+v\nwant %+v", c.since, c.limit, got, c.want)
		}
	}

	// A zero Time is stamped with now.
	before := time.Now()
	if err := db.AppendAudit(ctx, AuditEntry{Actor: "console:bob", Action: "purge-expired"}); err != nil {
		t.Fatal(err)
	}
	got, err := db.Audit(ctx, before.Add(-time.Second), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Action != "purge-expired" || got[0].Time.Before(before.Add(-time.Second)) || got[0].Time.After(time.Now()) {
		t.Fatalf("stamped entry: %+v", got)
	}
}

func TestAuditDefaultLimit(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	t0 := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	es := make([]AuditEntry, DefaultAuditLimit+5)
	for i := range es {
		es[i] = AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), Actor: "cli", Action: "block"}
	}
	if err := db.AppendAudit(ctx, es...); err != nil {
		t.Fatal(err)
	}
	got, err := db.Audit(ctx, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != DefaultAuditLimit || !got[0].Time.Equal(es[len(es)-1].Time) {
		t.Fatalf("got %d entries, newest %v", len(got), got[0].Time)
	}
}
