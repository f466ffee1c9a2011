package nftexport

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
)

func TestRangesFromKernelElements(t *testing.T) {
	a := func(s string) []byte { return netip.MustParseAddr(s).AsSlice() }
	// as the kernel lists them: descending, a lone interval end at 0.0.0.0
	// (nft's padding), a range running to the last address without end
	els := []nftables.SetElement{
		{Key: a("255.255.255.0"), Timeout: time.Hour, Expires: time.Minute},
		{Key: a("10.0.0.6"), IntervalEnd: true},
		{Key: a("10.0.0.1")},
		{Key: a("10.0.0.0"), IntervalEnd: true},
		{Key: a("9.0.0.0")},
		{Key: a("0.0.0.0"), IntervalEnd: true},
	}
	var got []string
	for _, e := range ranges(els) {
		got = append(got, fmt.Sprintf("%s=%s", e.Range, e.Timeout))
	}
	want := "9.0.0.0/8=0s 10.0.0.1-10.0.0.5=0s 255.255.255.0/24=1m0s"
	if s := strings.Join(got, " "); s != want {
		t.Fatalf("ranges = %s, want %s", s, want)
	}
	// and back: a range ending at the last address has no end element
	if n := len(elems(RangeOf(netip.MustParsePrefix("ffff::/16")), 0)); n != 1 {
		t.Fatalf("elements of ffff::/16: %d, want 1", n)
	}
}
