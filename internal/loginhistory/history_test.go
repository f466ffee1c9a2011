package loginhistory

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/postern/postern/internal/geoip"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)} }
func cfg() Config {
	return Config{Window: 90 * 24 * time.Hour, MaxAccounts: 100, MaxCountries: 16, MaxSpeedKmh: 1000}
}
func countries(ss []Seen) (out []string) {
	for _, s := range ss {
		out = append(out, s.Country)
	}
	return out
}

func TestFirstLoginOnlyRecords(t *testing.T) {
	c := newClock()
	h := New(cfg(), c.now)
	if v := h.Record("Alice@Example.com", "DE", 3320); v.HasHistory || v.NewCountry || v.Travel != nil {
		t.Fatalf("first login: %+v", v)
	}
	c.add(time.Hour)
	if v := h.Record("alice@example.com", "de", 0); !v.HasHistory || v.NewCountry {
		t.Fatalf("same country: %+v", v)
	}
	c.add(48 * time.Hour)
	v := h.Record("alice@example.com", "TH", 0)
	if !v.NewCountry || !slices.Equal(v.Previous, []string{"DE"}) || v.Travel != nil {
		t.Fatalf("new country after two days: %+v", v)
	}
	if got := countries(h.Countries("ALICE@example.com")); !slices.Equal(got, []string{"DE", "TH"}) {
		t.Fatalf("countries %v", got)
	}
	if v := h.Record("bob", "", 0); v.HasHistory || h.Len() != 1 {
		t.Fatalf("a login without a country is recorded: %+v, %d accounts", v, h.Len())
	}
}

func TestWindowForgets(t *testing.T) {
	c := newClock()
	h := New(cfg(), c.now)
	h.Record("a", "DE", 0)
	c.add(91 * 24 * time.Hour)
	if v := h.Check("a", "FR"); v.HasHistory {
		t.Fatalf("a country older than the window is remembered: %+v", v)
	}
}

func TestBoundedEviction(t *testing.T) {
	c := newClock()
	conf := cfg()
	conf.MaxAccounts, conf.MaxCountries = 3, 2
	h := New(conf, c.now)
	for _, a := range []string{"a", "b", "c"} {
		h.Record(a, "DE", 0)
		c.add(time.Minute)
	}
	h.Record("a", "DE", 0) // a is now the most recently seen; b the least
	c.add(time.Minute)
	h.Record("d", "DE", 0)
	if h.Len() != 3 || h.Countries("b") != nil || h.Countries("a") == nil {
		t.Fatalf("eviction: len %d, b %v, a %v", h.Len(), h.Countries("b"), h.Countries("a"))
	}
	for _, cc := range []string{"FR", "DE", "IT"} {
		c.add(24 * time.Hour)
		h.Record("a", cc, 0)
	}
	if got := countries(h.Countries("a")); !slices.Equal(got, []string{"DE", "IT"}) {
		t.Fatalf("countries of a: %v, want DE IT (FR least recently seen evicted)", got)
	}
}

func TestImpossibleTravel(t *testing.T) {
	c := newClock()
	h := New(cfg(), c.now)
	h.Record("a", "DE", 0)
	c.add(2 * time.Hour)
	v := h.Record("a", "AU", 0) // ~ 14 000 km in 2 h
	if v.Travel == nil || v.Travel.From != "DE" || v.Travel.SpeedKmh < 5000 {
		t.Fatalf("DE then AU 2h later: %+v", v.Travel)
	}
	c.add(30 * 24 * time.Hour)
	if v := h.Record("a", "DE", 0); v.Travel != nil {
		t.Fatalf("AU then DE a month later: %+v", v.Travel)
	}
	c.add(0)
	if v := h.Record("a", "US", 0); v.Travel == nil {
		t.Fatal("DE then US at the same instant is not impossible")
	}
	conf := cfg()
	conf.MaxSpeedKmh = 0
	h = New(conf, c.now)
	h.Record("a", "DE", 0)
	if v := h.Record("a", "AU", 0); v.Travel != nil {
		t.Fatal("max speed 0 still alerts")
	}
}

func TestHaversineKnownDistances(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		lat1, lon1, lat2, lon2 float64
		want                   float64
	}{
		{"Paris-London", 48.8566, 2.3522, 51.5074, -0.1278, 343.6},
		{"New York-Los Angeles", 40.7128, -74.0060, 34.0522, -118.2437, 3935.7},
		{"quarter meridian", 0, 0, 90, 0, math.Pi / 2 * EarthRadiusKm},
		{"antipodes", 0, 0, 0, 180, math.Pi * EarthRadiusKm},
		{"same", 10, 10, 10, 10, 0},
	} {
		if got := HaversineKm(tc.lat1, tc.lon1, tc.lat2, tc.lon2); math.Abs(got-tc.want) > tc.want*0.005+0.01 {
			t.Errorf("%s: %.1f km, want %.1f", tc.name, got, tc.want)
		}
	}
	if _, ok := CountryDistanceKm("DE", "QQ"); ok {
		t.Error("distance to an unknown country")
	}
}

func TestCentroidsValid(t *testing.T) {
	if len(centroids) < 240 {
		t.Errorf("%d centroids", len(centroids))
	}
	for cc, c := range centroids {
		if !geoip.ValidCountryCode(cc) || c[0] < -90 || c[0] > 90 || c[1] < -180 || c[1] > 180 {
			t.Errorf("centroid %s %v", cc, c)
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	c := newClock()
	h := New(cfg(), c.now)
	h.Record("a", "DE", 3320)
	c.add(time.Hour)
	h.Record("a", "FR", 0)
	h.Record("b", "US", 7922)
	path := filepath.Join(t.TempDir(), "history.json")
	if !h.Dirty() {
		t.Fatal("not dirty after records")
	}
	if err := h.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved file: %v %v", fi, err)
	}
	h2 := New(cfg(), c.now)
	if err := h2.Load(path); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.Countries("a"), h2.Countries("a")) || !slices.Equal(h.Countries("b"), h2.Countries("b")) || h2.Dirty() {
		t.Fatalf("round trip: %v %v / %v %v", h.Countries("a"), h.Countries("b"), h2.Countries("a"), h2.Countries("b"))
	}
	if v := h2.Record("a", "JP", 0); !v.NewCountry || !slices.Equal(v.Previous, []string{"DE", "FR"}) {
		t.Fatalf("after load: %+v", v)
	}
	if err := New(cfg(), c.now).Load(filepath.Join(t.TempDir(), "missing")); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("{"), 0o600)
	if err := New(cfg(), c.now).Load(bad); err == nil {
		t.Fatal("a corrupt file loads")
	}
}
