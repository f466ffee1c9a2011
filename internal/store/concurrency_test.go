package store

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// TestConcurrentUse runs writers, deleters, readers and auditors at once.
// Writer g puts batches tagged "g/i"; every second batch is deleted again,
// whole, in one call. Readers check that they only ever see whole batches.
// At the end the store holds exactly the batches not deleted, and every
// audit entry.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	writers, batches, batchLen, readers, auditors, auditN := 8, 12, 10, 3, 3, 20
	if testing.Short() {
		writers, batches, auditN = 4, 6, 10
	}

	prefixOf := func(g, i, j int) netip.Prefix {
		n := (g*batches+i)*batchLen + j
		if n%2 == 0 {
			return addr(n)
		}
		return addr(1<<24 + n) // IPv6
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers+auditors)
	stop := make(chan struct{})

	var writersWG sync.WaitGroup
	for g := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			for i := range batches {
				tag := fmt.Sprintf("%d/%d", g, i)
				batch := make([]Block, batchLen)
				ps := make([]netip.Prefix, batchLen)
				for j := range batch {
					ps[j] = prefixOf(g, i, j)
					batch[j] = block(ps[j], j)
					batch[j].Comment = tag
				}
				if err := db.PutBlocks(ctx, batch); err != nil {
					errs <- err
					return
				}
				if i%2 == 1 {
					n, err := db.DeleteBlocks(ctx, ps)
					if err != nil {
						errs <- err
						return
					}
					if n != batchLen {
						errs <- fmt.Errorf("delete of batch %s removed %d", tag, n)
						return
					}
				}
			}
		}()
	}
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := db.LoadBlocks(ctx)
				if err != nil {
					errs <- err
					return
				}
				count := map[string]int{}
				for _, b := range got {
					count[b.Comment]++
				}
				for tag, n := range count {
					if n != batchLen {
						errs <- fmt.Errorf("reader saw %d blocks of batch %s", n, tag)
						return
					}
				}
				if _, err := db.Audit(ctx, time.Time{}, 50); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for a := range auditors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range auditN {
				e := AuditEntry{Time: time.Now(), Actor: fmt.Sprintf("api:%d", a), Action: "block", Target: fmt.Sprint(i)}
				if err := db.AppendAudit(ctx, e, e); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	got, err := db.LoadBlocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[netip.Prefix]bool{}
	for g := range writers {
		for i := 0; i < batches; i += 2 {
			for j := range batchLen {
				want[prefixOf(g, i, j)] = true
			}
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d blocks stored, want %d", len(got), len(want))
	}
	for _, b := range got {
		if !want[b.Prefix] {
			t.Errorf("%v (%s) should have been deleted", b.Prefix, b.Comment)
		}
	}
	entries, err := db.Audit(ctx, time.Time{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != auditors*auditN*2 {
		t.Errorf("%d audit entries, want %d", len(entries), auditors*auditN*2)
	}
}
