package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/internal/reason"
)

// openTest opens a new store in a temporary directory and closes it when
// the test ends.
func openTest(t testing.TB) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "blocks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	return db
}

// addr returns a distinct IPv4 /32 for i < 2^24, or an IPv6 /128 above.
func addr(i int) netip.Prefix {
	if i < 1<<24 {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	var a [16]byte
	a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
	a[12], a[13], a[14], a[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return netip.PrefixFrom(netip.AddrFrom16(a), 128)
}

// block returns a plausible engine block for p.
func block(p netip.Prefix, seq int) Block {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(seq) * time.Millisecond)
	return Block{
		Prefix: p, Reason: reason.Login, Service: "imap", Detail: "alice@example.com",
		FirstSeen: t0, LastSeen: t0.Add(time.Minute), Hits: int64(seq + 1),
		Expires: t0.Add(time.Hour), Node: "mx1", By: "engine", Level: seq % 3,
	}
}

func fileHash(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
