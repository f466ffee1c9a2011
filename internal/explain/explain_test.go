package explain_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/admin/admintest"
	"github.com/postern/postern/internal/explain"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/reason"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// conf is the configuration the tests explain from: imap for Malaysia
// (a country pattern) and the office, the CEO's logins from the office
// only, and a bypass list naming one office address.
const conf = `geoip:
  databases:
    - path: geo.csv
patterns:
  GeoIP_MY: "country:MY"
  Office: "203.0.113.0/24"
services:
  imap: { listen: ":143", backend: "127.0.0.1:10143", grant: "[GeoIP_MY]; [Office]" }
login_restrictions:
  - "ceo@example.com=[Office]"
intrusion_prevention:
  bypass_file: bypass.txt
`

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// load builds the snapshot of conf, with extra appended to it.
func load(t *testing.T, extra string) (*snapshot.Snapshot, string) {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "geo.csv"), "175.136.0.0,175.137.255.255,MY\n8.8.8.0,8.8.8.255,US\n")
	write(t, filepath.Join(dir, "bypass.txt"), "# the monitoring host\n203.0.113.7\n")
	cfg := filepath.Join(dir, "postern.yaml")
	write(t, cfg, conf+extra)
	snap, err := snapshot.Load(context.Background(), cfg, now)
	if err != nil {
		t.Fatal(err)
	}
	return snap, dir
}

// live is a block table with one block and a fixed clock.
type live struct {
	block store.Block
}

func (l *live) BlockOf(addr netip.Addr) (store.Block, bool) {
	if l.block.Prefix.IsValid() && l.block.Prefix.Contains(addr) {
		return l.block, true
	}
	return store.Block{}, false
}

func (l *live) Now() time.Time { return now }

var (
	_ explain.Live = (*live)(nil)
	_ explain.Live = (*guard.Engine)(nil) // the running engine is what the API explains with
)

func q(addr, service, account string) explain.Query {
	return explain.Query{Addr: netip.MustParseAddr(addr), Service: service, Account: account}
}

// ex explains qq, failing the test on an error.
func ex(t *testing.T, snap *snapshot.Snapshot, l explain.Live, qq explain.Query) explain.Answer {
	t.Helper()
	a, err := explain.Explain(snap, l, qq)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func stepsOf(a explain.Answer, k explain.Kind) []explain.Step {
	var out []explain.Step
	for _, s := range a.Steps {
		if s.Kind == k {
			out = append(out, s)
		}
	}
	return out
}

func TestAddressInACountryPattern(t *testing.T) {
	snap, dir := load(t, "")
	a := ex(t, snap, nil, q("175.136.1.1", "imap", ""))
	if a.Verdict != explain.Allow || a.Source != explain.SourceConfiguration || len(a.Because) != 0 {
		t.Fatalf("answer %+v", a)
	}
	if a.GeoIP == nil || a.GeoIP.Country != "MY" || a.GeoIP.Database != filepath.Join(dir, "geo.csv") {
		t.Errorf("geoip %+v", a.GeoIP)
	}
	svc := stepsOf(a, explain.KindService)
	if len(svc) != 1 || svc[0].Rule != "imap grant" || svc[0].Effect != "grants" || svc[0].Denies {
		t.Fatalf("service steps %+v", svc)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	want := []explain.Item{
		{Text: "[GeoIP_MY]", Pos: explain.Pos{File: cfg, Line: 8, Col: 63}},
		{Pattern: "[GeoIP_MY]", Text: "country:MY", Pos: explain.Pos{File: cfg, Line: 5, Col: 14}},
	}
	if !reflect.DeepEqual(svc[0].Items, want) {
		t.Errorf("items %+v, want %+v", svc[0].Items, want)
	}
	if svc[0].Pos == nil || svc[0].Pos.Line != 8 || svc[0].Text != "[GeoIP_MY]; [Office]" {
		t.Errorf("rule position %+v text %q", svc[0].Pos, svc[0].Text)
	}

	a = ex(t, snap, nil, q("8.8.8.8", "imap", ""))
	svc = stepsOf(a, explain.KindService)
	if a.Verdict != explain.Deny || a.GeoIP.Country != "US" || len(svc) != 1 || svc[0].Effect != "does not grant" || !svc[0].Denies ||
		len(a.Because) != 1 || !strings.Contains(a.Because[0], "imap grant/deny") {
		t.Errorf("outside the country: %+v", a)
	}
}

func TestLoginRestriction(t *testing.T) {
	snap, _ := load(t, "")
	a := ex(t, snap, nil, q("175.136.1.1", "imap", "ceo@example.com"))
	login := stepsOf(a, explain.KindLogin)
	if a.Verdict != explain.Deny || len(login) != 1 || login[0].Rule != "login ceo@example.com" || login[0].Effect != "refuses" || !login[0].Denies {
		t.Fatalf("the CEO from Malaysia: %+v", a)
	}
	a = ex(t, snap, nil, q("203.0.113.5", "imap", "ceo@example.com"))
	login = stepsOf(a, explain.KindLogin)
	if a.Verdict != explain.Allow || len(login) != 1 || login[0].Effect != "allows" || len(login[0].Items) != 2 {
		t.Fatalf("the CEO from the office: %+v", a)
	}
	a = ex(t, snap, nil, q("175.136.1.1", "imap", "staff@example.com"))
	if a.Verdict != explain.Allow || len(stepsOf(a, explain.KindLogin)) != 0 {
		t.Errorf("an account without a restriction: %+v", a)
	}
}

func TestLiveBlock(t *testing.T) {
	snap, _ := load(t, "")
	l := &live{block: store.Block{Prefix: netip.MustParsePrefix("175.136.1.0/24"), Reason: reason.Login,
		Detail: "imap: 10 failed logins", Expires: now.Add(4 * time.Hour), By: "engine"}}
	a := ex(t, snap, l, q("175.136.1.1", "imap", ""))
	blk := stepsOf(a, explain.KindBlock)
	want := &explain.Block{Target: "175.136.1.0/24", Reason: "L", ReasonName: "failed logins", Detail: "imap: 10 failed logins",
		Expires: now.Add(4 * time.Hour), By: "engine", Refused: true}
	if a.Verdict != explain.Deny || a.Source != explain.SourceGateway || !a.At.Equal(now) || len(blk) != 1 ||
		!reflect.DeepEqual(blk[0].Block, want) || !blk[0].Denies || blk[0].Effect != "refuses new connections" {
		t.Fatalf("blocked address: %+v", a)
	}
	if len(a.Because) != 1 || !strings.Contains(a.Because[0], "until 2026-05-01T16:00:00Z") {
		t.Errorf("because %q", a.Because)
	}
	// The policy alone would let it in: the block is the only reason.
	if svc := stepsOf(a, explain.KindService); len(svc) != 1 || svc[0].Denies {
		t.Errorf("service steps %+v", svc)
	}
	// Another address of the same country is not blocked.
	if a := ex(t, snap, l, q("175.136.2.1", "imap", "")); a.Verdict != explain.Allow || len(stepsOf(a, explain.KindBlock)) != 0 {
		t.Errorf("outside the block: %+v", a)
	}
	// Without the live table, the block is unknown.
	if a := ex(t, snap, nil, q("175.136.1.1", "imap", "")); a.Verdict != explain.Allow || a.Source != explain.SourceConfiguration {
		t.Errorf("from the configuration alone: %+v", a)
	}
}

// A manual block where refuse_blocked is off: new connections are let in,
// logins are refused, so the verdict depends on whether one logs in.
func TestLiveBlockNotRefusedAtConnect(t *testing.T) {
	snap, _ := load(t, "  refuse_blocked: false\n")
	l := &live{block: store.Block{Prefix: netip.MustParsePrefix("175.136.1.1/32"), Reason: reason.Manual, By: "admin:root"}}
	a := ex(t, snap, l, q("175.136.1.1", "imap", ""))
	blk := stepsOf(a, explain.KindBlock)
	if a.Verdict != explain.Allow || len(blk) != 1 || blk[0].Block.Refused || blk[0].Denies || !blk[0].Block.Expires.IsZero() ||
		blk[0].Block.Target != "175.136.1.1" || blk[0].Rule != "block 175.136.1.1" {
		t.Fatalf("connect only: %+v", a)
	}
	a = ex(t, snap, l, q("175.136.1.1", "imap", "staff@example.com"))
	blk = stepsOf(a, explain.KindBlock)
	if a.Verdict != explain.Deny || len(blk) != 1 || !blk[0].Denies || !strings.Contains(blk[0].Effect, "refuses every login") {
		t.Fatalf("with a login: %+v", a)
	}
}

func TestBypassEntry(t *testing.T) {
	snap, dir := load(t, "")
	a := ex(t, snap, nil, q("203.0.113.7", "imap", ""))
	byp := stepsOf(a, explain.KindBypass)
	wantItems := []explain.Item{{Text: "203.0.113.7", Pos: explain.Pos{File: filepath.Join(dir, "bypass.txt"), Line: 2, Col: 1}}}
	if a.Verdict != explain.Allow || len(byp) != 1 || byp[0].Denies || !reflect.DeepEqual(byp[0].Items, wantItems) {
		t.Fatalf("bypass: %+v", a)
	}
	if len(byp[0].Items) == 1 && byp[0].Items[0].Pattern != "" {
		t.Errorf("the bypass list is not a named pattern: %+v", byp[0].Items)
	}
	if a := ex(t, snap, nil, q("203.0.113.8", "imap", "")); len(stepsOf(a, explain.KindBypass)) != 0 {
		t.Errorf("not on the bypass list: %+v", a)
	}
}

func TestQueryErrors(t *testing.T) {
	snap, _ := load(t, "")
	for _, qq := range []explain.Query{
		{Addr: netip.MustParseAddr("192.0.2.1"), Service: "imap5"},
		{Addr: netip.MustParseAddr("192.0.2.1"), Service: "pop3"}, // not configured
		{Addr: netip.MustParseAddr("192.0.2.1"), Service: "imap", Path: "/admin"},
		{Service: "imap"},
		{Addr: netip.MustParseAddr("fe80::1%eth0"), Service: "imap"},
	} {
		if _, err := explain.Explain(snap, nil, qq); !errors.Is(err, explain.ErrQuery) {
			t.Errorf("%+v: %v, want ErrQuery", qq, err)
		}
	}
}

// The admin API serves the same typed answer the package composes, and
// the client decodes it into the same type.
func TestAdminRoundTrip(t *testing.T) {
	snap, _ := load(t, "")
	l := &live{block: store.Block{Prefix: netip.MustParsePrefix("175.136.1.0/24"), Reason: reason.Login, Expires: now.Add(time.Hour), By: "engine"}}
	const token = "0123456789abcdef0123456789abcdef"
	srv := admin.NewServer(admintest.New(now), explain.Func(func() *snapshot.Snapshot { return snap }, l), token, nil, nil)
	sock := filepath.Join(t.TempDir(), "a.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := srv.Listen(ctx, "unix:"+sock)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.ServeListener(ctx, ln); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	defer wg.Wait()
	defer cancel()
	c := admin.NewClient("unix:"+sock, token)
	defer c.CloseIdleConnections()
	for _, qq := range []explain.Query{
		q("175.136.1.1", "imap", "ceo@example.com"),
		q("203.0.113.7", "imap", ""),
		q("8.8.8.8", "imap", ""),
	} {
		got, err := c.Explain(ctx, qq)
		if err != nil {
			t.Fatal(err)
		}
		want := ex(t, snap, l, qq)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v: over the API\n%+v\nwant\n%+v", qq.Addr, got, want)
		}
	}
	_, err = c.Explain(ctx, explain.Query{Addr: netip.MustParseAddr("192.0.2.1"), Service: "pop3"})
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(ae.Message, `service "pop3" is not configured`) {
		t.Errorf("an unconfigured service: %v, want 400", err)
	}
}

// The JSON names are the API's contract (docs/openapi.yaml).
func TestAnswerJSON(t *testing.T) {
	snap, _ := load(t, "")
	l := &live{block: store.Block{Prefix: netip.MustParsePrefix("175.136.1.0/24"), Reason: reason.Login, Expires: now.Add(time.Hour)}}
	a := ex(t, snap, l, q("175.136.1.1", "imap", ""))
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"address":"175.136.1.1"`, `"verdict":"deny"`, `"source":"gateway"`, `"geoip":{"country":"MY"`,
		`"kind":"service","rule":"imap grant"`, `"pos":{"file":`, `"items":[{"text":"[GeoIP_MY]"`, `"pattern":"[GeoIP_MY]","text":"country:MY"`,
		`"kind":"block"`, `"block":{"target":"175.136.1.0/24","reason":"L","reason_name":"failed logins","expires":"2026-05-01T13:00:00Z","refused":true}`,
		`"at":"2026-05-01T12:00:00Z"`} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("JSON lacks %s:\n%s", want, raw)
		}
	}
}

// A client at a trusted upstream's address is dropped without a PROXY
// header: explain says so instead of "allow".
func TestTrustedUpstreamAddress(t *testing.T) {
	snap, _ := load(t, "trusted_upstreams: \"192.0.2.10\"\n")
	a := ex(t, snap, nil, q("192.0.2.10", "imap", ""))
	up := stepsOf(a, explain.KindUpstream)
	if a.Verdict != explain.Deny || len(up) != 1 || !up[0].Denies || up[0].Pos == nil || up[0].Pos.Line == 0 ||
		!strings.Contains(up[0].Effect, "must begin with a PROXY header") {
		t.Fatalf("a trusted upstream's address: %+v", a)
	}
	if a = ex(t, snap, nil, q("192.0.2.11", "imap", "")); len(stepsOf(a, explain.KindUpstream)) != 0 {
		t.Errorf("another address is taken for the upstream: %+v", a)
	}
}
