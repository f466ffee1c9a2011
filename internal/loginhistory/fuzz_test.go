package loginhistory

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postern/postern/internal/geoip"
)

// FuzzLoad: any file content loads or fails with an error, never panics,
// and what loads respects the bounds, the window and valid country codes.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(`{"version":1,"accounts":[{"account":"a","seen":[{"country":"DE","first":"2026-01-01T00:00:00Z","last":"2026-01-01T10:00:00Z"}]}]}`))
	f.Add([]byte(`{"version":1,"accounts":[{"account":"A","seen":[{"country":"de","last":"2026-01-01T10:00:00Z"},{"country":"QQ","last":"2026-01-01T11:00:00Z"},{"country":"FR","last":"2025-01-01T11:00:00Z"}]},{"account":"a","seen":[]}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "h.json")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c := &clock{t: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
		conf := Config{Window: 90 * 24 * time.Hour, MaxAccounts: 2, MaxCountries: 2, MaxSpeedKmh: 1000}
		h := New(conf, c.now)
		if err := h.Load(path); err != nil {
			return
		}
		if h.Len() > conf.MaxAccounts {
			t.Fatalf("%d accounts", h.Len())
		}
		for e := h.lru.Front(); e != nil; e = e.Next() {
			a := e.Value.(*account)
			if len(a.seen) == 0 || len(a.seen) > conf.MaxCountries {
				t.Fatalf("account %q: %d countries", a.name, len(a.seen))
			}
			for _, s := range a.seen {
				if !geoip.ValidCountryCode(s.Country) || s.Last.Before(c.t.Add(-conf.Window)) {
					t.Fatalf("account %q: %+v", a.name, s)
				}
			}
		}
		h.Record("a", "DE", 0)
	})
}
