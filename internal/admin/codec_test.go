package admin_test

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/store"
)

func TestParseTarget(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7/32",
		" 203.0.113.7 ":        "203.0.113.7/32",
		"2001:db8::1":          "2001:db8::1/128",
		"2001:db8::/64":        "2001:db8::/64",
		"198.51.100.0/24":      "198.51.100.0/24",
		"::ffff:192.0.2.1":     "192.0.2.1/32",
		"::ffff:192.0.2.0/120": "192.0.2.0/24",
		"0.0.0.0/0":            "0.0.0.0/0",
	} {
		p, err := admin.ParseTarget(in)
		if err != nil || p.String() != want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, in := range []string{"", "x", "1.2.3", "1.2.3.4/33", "1.2.3.4/24", "fe80::1%eth0", "1.2.3.4/", "/24", "1.2.3.4-1.2.3.9"} {
		if p, err := admin.ParseTarget(in); err == nil {
			t.Errorf("ParseTarget(%q) = %v, want an error", in, p)
		}
	}
	if got := admin.FormatTarget(pfx("2001:db8::1/128")); got != "2001:db8::1" {
		t.Errorf("FormatTarget /128 = %s", got)
	}
	if got := admin.FormatTarget(pfx("2001:db8::/64")); got != "2001:db8::/64" {
		t.Errorf("FormatTarget /64 = %s", got)
	}
}

func TestParseBlockDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "0": 0, "4h": 4 * time.Hour, "90m": 90 * time.Minute, "7d": 7 * 24 * time.Hour, "1.5d": 36 * time.Hour} {
		if d, err := admin.ParseBlockDuration(in); err != nil || d != want {
			t.Errorf("ParseBlockDuration(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"4", "-1h", "4 hours", "NaNd", "Infd", "1e30d", "36501d"} {
		if d, err := admin.ParseBlockDuration(in); err == nil {
			t.Errorf("ParseBlockDuration(%q) = %v, want an error", in, d)
		}
	}
}

func TestParseCSV(t *testing.T) {
	// Any column order, a BOM, CRLF, quoted fields spanning lines.
	in := "\uFEFFreason,target,detail,hits,expires\r\n" +
		"L,203.0.113.7,\"two\nlines\",3,2026-05-01T15:00:00.5+08:00\r\n" +
		"u,2001:db8::/48,,,\r\n"
	bs, err := admin.ParseCSV([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Block{
		{Prefix: pfx("203.0.113.7/32"), Reason: reason.Login, Detail: "two\nlines", Hits: 3, Expires: time.Date(2026, 5, 1, 7, 0, 0, 5e8, time.UTC)},
		{Prefix: pfx("2001:db8::/48"), Reason: reason.Manual},
	}
	if len(bs) != len(want) {
		t.Fatalf("got %d blocks: %+v", len(bs), bs)
	}
	for i := range want {
		if !sameBlock(bs[i], want[i]) {
			t.Errorf("row %d\n got %+v\nwant %+v", i, bs[i], want[i])
		}
	}
	if bs, err := admin.ParseCSV([]byte(admin.CSVHeader + "\n")); err != nil || len(bs) != 0 {
		t.Errorf("header only: %v, %v", bs, err)
	}
	row := func(fields ...string) string { return admin.CSVHeader + "\n" + strings.Join(fields, ",") + "\n" }
	ok := []string{"10.0.0.1", "L", "imap", "x", "2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z", "3", "", "gw1", "engine", "", "0"}
	with := func(i int, v string) string {
		f := append([]string(nil), ok...)
		f[i] = v
		return row(f...)
	}
	for name, tc := range map[string]struct{ in, want string }{
		"empty":            {"", "empty file"},
		"unknown column":   {"target,reason,colour\n", `line 1: unknown column "colour"`},
		"twice":            {"target,reason,target\n", `line 1: column "target" appears twice`},
		"no reason column": {"target,hits\n", `line 1: no "reason" column`},
		"bad target":       {with(0, "10.0.0.300"), `line 2: target: bad target "10.0.0.300"`},
		"empty target":     {with(0, ""), "line 2: target: empty target"},
		"bad reason":       {with(1, "Z"), `line 2: reason: unknown reason "Z"`},
		"no reason":        {with(1, ""), "line 2: reason: missing"},
		"bad first_seen":   {with(4, "2026-05-01"), `line 2: first_seen: bad time "2026-05-01"`},
		"bad last_seen":    {with(5, "now"), `line 2: last_seen: bad time "now"`},
		"bad hits":         {with(6, "3.5"), `line 2: hits: bad number "3.5"`},
		"negative hits":    {with(6, "-1"), "line 2: hits: -1 is negative"},
		"bad expires":      {with(7, "never"), `line 2: expires: bad time "never"`},
		"bad level":        {with(11, "99999999999"), `line 2: level: bad number`},
		"field count":      {admin.CSVHeader + "\n10.0.0.1,L\n", "record on line 2: wrong number of fields"},
		"bare quote":       {admin.CSVHeader + "\n10.0.0.1,L,\"x,y,z,,,0,,,,,0\n", "csv: "},
		"duplicate":        {admin.CSVHeader + "\n" + strings.Join(ok, ",") + "\n10.0.0.1/32,U,,,,,0,,,,,0\n", "line 3: target: 10.0.0.1 is already in line 2"},
	} {
		if _, err := admin.ParseCSV([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

func TestParseJSON(t *testing.T) {
	bare := `[{"target":"203.0.113.7","reason":"L","expires":null},{"prefix":"2001:db8::/48","reason":"manual","expires":"2026-05-01T15:00:00Z"}]`
	bs, err := admin.ParseJSON([]byte(bare))
	if err != nil || len(bs) != 2 || bs[0].Prefix != pfx("203.0.113.7/32") || !bs[0].Expires.IsZero() ||
		bs[1].Reason != reason.Manual || !bs[1].Expires.Equal(t0.Add(3*time.Hour)) {
		t.Fatalf("bare array: %+v, %v", bs, err)
	}
	for _, in := range []string{`{"blocks":[]}`, `{"blocks":null}`, `{}`, ` [ ] `} {
		if bs, err := admin.ParseJSON([]byte(in)); err != nil || len(bs) != 0 {
			t.Errorf("%s: %v, %v", in, bs, err)
		}
	}
	for name, tc := range map[string]struct{ in, want string }{
		"empty":          {"", "unexpected end of JSON"},
		"not an array":   {`"blocks"`, "want {\"blocks\": […]} or an array"},
		"other key":      {`{"blocks":[],"more":1}`, `unexpected key "more"`},
		"blocks object":  {`{"blocks":{}}`, `"blocks" must be an array`},
		"syntax":         {"{\"blocks\": [\n {\"target\": \"1.2.3.4\",,}\n]}", "line 2: "},
		"unknown field":  {"[\n{\"target\":\"1.2.3.4\",\"reason\":\"L\",\"colour\":1}]", `blocks[0] (line 2): unknown field "colour"`},
		"hits string":    {`[{"target":"1.2.3.4","reason":"L","hits":"5"}]`, "blocks[0] (line 1): hits: want a whole number, got a JSON string"},
		"hits fraction":  {`[{"target":"1.2.3.4","reason":"L","hits":1.5}]`, "hits: want a whole number"},
		"bad time":       {`[{"target":"1.2.3.4","reason":"L","first_seen":"yesterday"}]`, `first_seen: bad time "yesterday"`},
		"prefix differs": {`[{"target":"1.2.3.4","prefix":"1.2.3.5/32","reason":"L"}]`, "prefix: 1.2.3.5/32 does not match target 1.2.3.4"},
		"no target":      {`[{"reason":"L"}]`, "target: empty target"},
		"trailing":       {`[] []`, "unexpected data after the end"},
		"duplicate":      {"[{\"target\":\"1.2.3.4\",\"reason\":\"L\"},\n{\"target\":\"1.2.3.4/32\",\"reason\":\"U\"}]", "blocks[1] (line 2): target: 1.2.3.4 is already in blocks[0] (line 1)"},
		"truncated":      {`[{"target":"1.2.3.4","reason":"L"}`, "unexpected end"},
	} {
		if _, err := admin.ParseJSON([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

func FuzzParseImport(f *testing.F) {
	f.Add([]byte(admin.CSVHeader + "\n203.0.113.7,L,imap,x,2026-05-01T10:00:00Z,,3,,gw1,engine,,0\n"))
	f.Add([]byte(`{"blocks":[{"target":"203.0.113.7","reason":"L","hits":3}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte) ([]store.Block, error){admin.ParseCSV, admin.ParseJSON} {
			bs, err := parse(data)
			if err != nil {
				continue
			}
			for _, b := range bs {
				if !b.Prefix.IsValid() || !b.Reason.Valid() || b.Hits < 0 || b.Level < 0 || store.CheckBlock(&b) != nil {
					t.Fatalf("accepted an invalid block %+v", b)
				}
			}
		}
	})
}

// Imported times must make sense: no expiry more than ten years ahead (a
// permanent block leaves expires empty), none before first_seen, no
// first or last sighting in the future or before 1970. Each refusal names
// the row and the field.
func TestImportTimes(t *testing.T) {
	now := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	row := func(first, last, expires string) string {
		return admin.CSVHeader + "\n10.0.0.1,L,imap,,2026-05-01T10:00:00Z,2026-05-01T11:00:00Z,3,2026-12-04T00:00:00Z,gw1,engine,,0\n" +
			"10.0.0.2,L,imap,," + first + "," + last + ",3," + expires + ",gw1,engine,,0\n"
	}
	for name, tc := range map[string]struct{ in, want string }{
		"year 9999":            {row("", "", "9999-12-31T23:59:59Z"), "line 3: expires: 9999-12-31T23:59:59Z is more than 10 years ahead (latest 2036-11-30T09:00:00Z); leave expires empty for a block that never expires"},
		"just over ten years":  {row("", "", "2036-12-01T00:00:00Z"), "line 3: expires: 2036-12-01T00:00:00Z is more than 10 years ahead"},
		"before first_seen":    {row("2026-05-01T10:00:00Z", "", "2026-04-30T00:00:00Z"), "line 3: expires: 2026-04-30T00:00:00Z is before first_seen 2026-05-01T10:00:00Z"},
		"first_seen in future": {row("2027-01-01T00:00:00Z", "", ""), "line 3: first_seen: 2027-01-01T00:00:00Z is in the future"},
		"last_seen in future":  {row("", "2027-01-01T00:00:00Z", ""), "line 3: last_seen: 2027-01-01T00:00:00Z is in the future"},
		"last before first":    {row("2026-05-01T10:00:00Z", "2026-05-01T09:00:00Z", ""), "line 3: last_seen: 2026-05-01T09:00:00Z is before first_seen"},
		"the epoch":            {row("1970-01-01T00:00:00Z", "", ""), "line 3: first_seen: 1970-01-01T00:00:00Z is before 1970-01-01T00:00:01Z"},
		"year 1":               {row("", "", "0001-01-01T00:00:01Z"), "line 3: expires: 0001-01-01T00:00:01Z is before 1970-01-01T00:00:01Z"},
	} {
		if _, err := admin.DecodeCSV(strings.NewReader(tc.in), now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
	// At the limits, and a permanent block.
	for _, in := range []string{row("", "", "2036-11-30T09:00:00Z"), row("2026-12-03T10:00:00Z", "2026-12-03T10:00:00Z", ""), row("", "", "")} {
		if bs, err := admin.DecodeCSV(strings.NewReader(in), now); err != nil || len(bs) != 2 {
			t.Errorf("%q: %v", in, err)
		}
	}
	js := `[{"target":"10.0.0.1","reason":"L"},
{"target":"10.0.0.2","reason":"L","first_seen":"2026-05-01T10:00:00Z","expires":"9999-01-01T00:00:00Z"}]`
	if _, err := admin.DecodeJSON(strings.NewReader(js), now); err == nil || !strings.Contains(err.Error(), "blocks[1] (line 2): expires: 9999-01-01T00:00:00Z is more than 10 years ahead") {
		t.Errorf("JSON year 9999: %v", err)
	}
}

// Streamed JSON names the right line for an element far into the body,
// however the body arrives (here one byte a read).
func TestDecodeJSONStreamLines(t *testing.T) {
	var b strings.Builder
	b.WriteString("{\n  \"blocks\": [\n")
	for i := range 3000 {
		fmt.Fprintf(&b, "    {\n      \"target\": \"10.0.%d.%d\",\n      \"reason\": \"L\"\n    },\n", i/256, i%256)
	}
	b.WriteString("    {\n      \"target\": \"10.0.0.7\",\n      \"reason\": \"U\"\n    }\n  ]\n}\n")
	_, err := admin.DecodeJSON(iotest.OneByteReader(strings.NewReader(b.String())), time.Now())
	want := "blocks[3000] (line 12003): target: 10.0.0.7 is already in blocks[7] (line 31)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("duplicate far in: %v, want %q", err, want)
	}
	bad := strings.Replace(b.String(), `"reason": "U"`, `"reason": "U",,`, 1)
	if _, err := admin.DecodeJSON(iotest.OneByteReader(strings.NewReader(bad)), time.Now()); err == nil || !strings.HasPrefix(err.Error(), "line 12005: ") {
		t.Fatalf("syntax error far in: %v", err)
	}
}

// A huge CSV line is refused as soon as it passes the row limit.
func TestDecodeCSVLongLine(t *testing.T) {
	in := io.MultiReader(strings.NewReader(admin.CSVHeader+"\n10.0.0.1,L,imap,"), strings.NewReader(strings.Repeat("x", 2<<20)))
	if _, err := admin.DecodeCSV(in, time.Now()); err == nil || !strings.Contains(err.Error(), "line 2: longer than 1048576 bytes") {
		t.Fatalf("long line: %v", err)
	}
}
