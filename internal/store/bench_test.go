package store

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkPutBlocks measures group commit: n new blocks per PutBlocks call,
// each call one synchronous=FULL transaction.
func BenchmarkPutBlocks(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			ctx := context.Background()
			db := openTest(b)
			batch := make([]Block, n)
			next := 0
			b.ResetTimer()
			for b.Loop() {
				for j := range batch {
					batch[j] = block(addr(next), next)
					next++
				}
				if err := db.PutBlocks(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "blocks/s")
		})
	}
}

// BenchmarkLoadBlocks100k measures the start-up load of 100,000 blocks.
func BenchmarkLoadBlocks100k(b *testing.B) {
	const total, batchLen = 100_000, 10_000
	ctx := context.Background()
	db := openTest(b)
	batch := make([]Block, batchLen)
	for i := 0; i < total; i += batchLen {
		for j := range batch {
			n := i + j
			if n%4 == 3 {
				n += 1 << 24 // a quarter IPv6
			}
			batch[j] = block(addr(n), i+j)
		}
		if err := db.PutBlocks(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := db.LoadBlocks(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) != total {
			b.Fatalf("loaded %d", len(got))
		}
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "blocks/s")
}
