package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/tlsconf"
)

// load writes cfg (with its own directory as the config's) and loads it.
func load(t *testing.T, dir, cfg string) *snapshot.Snapshot {
	t.Helper()
	path := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatalf("load:\n%v", err)
	}
	return s
}

// pair writes a self-signed certificate into a new directory under dir.
func pair(t *testing.T, dir, name string, validFor time.Duration) (cert, key string) {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key, err := tlsconf.SelfSigned(d, []string{"mail.example.com"}, validFor)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func noUser(name string) (*user.User, error) { return nil, user.UnknownUserError(name) }

// run checks with the defaults of a test: no bind probes, no run_as lookup.
func run(s *snapshot.Snapshot, o Options) []Diag {
	if o.LookupUser == nil {
		o.LookupUser = noUser
	}
	return Check(context.Background(), s, o)
}

// find returns the findings whose text contains sub.
func find(ds []Diag, sub string) []Diag {
	var out []Diag
	for _, d := range ds {
		if strings.Contains(d.Error(), sub) {
			out = append(out, d)
		}
	}
	return out
}

func dump(ds []Diag) string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.Severity.String() + ": " + d.Error() + "\n")
	}
	return b.String()
}

// One finding containing sub, with severity sev.
func want1(t *testing.T, ds []Diag, sev Severity, sub string) Diag {
	t.Helper()
	got := find(ds, sub)
	if len(got) != 1 || got[0].Severity != sev {
		t.Fatalf("want one %s with %q, got:\n%s", sev, sub, dump(ds))
	}
	return got[0]
}

func TestNoLoginPossible(t *testing.T) {
	dir := t.TempDir()
	cert, key := pair(t, dir, "tls", 365*24*time.Hour)
	s := load(t, dir, `services:
  imap:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10143" }
  pop3:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10110", plaintext_login: "10.0.0.0/8" }
  pop3s:      { listen: "127.0.0.1:0", backend: "127.0.0.1:10110", tls: { cert: `+cert+`, key: `+key+` } }
  imaps:      { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", tls: { cert: `+cert+`, key: `+key+` } }
  submission: { listen: "127.0.0.1:0", backend: "127.0.0.1:10587" }
  smtp:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
`)
	ds := run(s, Options{})
	imap := want1(t, ds, Error, "service imap: no client can ever log in")
	if imap.Pos.Line != 2 || !strings.Contains(imap.Msg, "LOGINDISABLED") {
		t.Errorf("imap: %v", imap)
	}
	sub := want1(t, ds, Error, "service submission: no client can ever send mail")
	if sub.Pos.Line != 6 || !strings.Contains(sub.Msg, "530") {
		t.Errorf("submission: %v", sub)
	}
	if len(find(ds, "service pop3")) != 0 || len(find(ds, "imaps")) != 0 || len(find(ds, "service smtp")) != 0 {
		t.Errorf("pop3 (plaintext_login), imaps (TLS) and smtp (no AUTH needed) take logins or mail:\n%s", dump(ds))
	}
	// serve runs what it can: the same findings are warnings there.
	ds = run(s, Options{Mode: ModeServe})
	want1(t, ds, Warning, "service imap: no client can ever log in")
	if Err(ds) != nil {
		t.Errorf("serve: %v", Err(ds))
	}
	s = load(t, dir, "services:\n  pop3: { listen: \"127.0.0.1:0\", backend: \"127.0.0.1:10110\" }\n")
	want1(t, run(s, Options{}), Error, "service pop3: no client can ever log in: it has no tls: (so no STARTTLS) and no plaintext_login, so it offers neither USER nor SASL")
	// With TLS (or allow_insecure_auth) every service takes logins.
	s = load(t, dir, `services:
  imap:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", tls: { cert: `+cert+`, key: `+key+` } }
  submission: { listen: "127.0.0.1:0", backend: "127.0.0.1:10587", allow_insecure_auth: true }
`)
	if ds := run(s, Options{}); len(ds) != 0 {
		t.Errorf("unexpected:\n%s", dump(ds))
	}
}

func TestHostBits(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "office.txt"), []byte("# office\n203.0.113.9/24\n2001:db8:10::1/48\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := load(t, dir, `patterns:
  Admins: "198.51.100.7/24"
  Office: "{office.txt}; 192.0.2.0/24"
  Staff: "[Admins]; [Office]"
services:
  web:
    listen: "127.0.0.1:0"
    backend: "http://127.0.0.1:8080"
    grant: "[Staff]; 10.1.2.3/8"
    paths:
      - { prefix: /admin, grant: "[Admins]" }
      - { prefix: /installer, grant: "[Admins]" }
login_restrictions:
  - "ceo@example.com=[Admins]; 172.16.5.5/12"
`)
	ds := run(s, Options{})
	if n := len(find(ds, "host bits")); n != 5 {
		t.Fatalf("want 5 host-bit errors (one per item, however often referenced), got %d:\n%s", n, dump(ds))
	}
	d := want1(t, ds, Error, "198.51.100.7/24 has host bits set")
	if d.Pos.Line != 2 || d.Pos.Col != 12 || !strings.Contains(d.Msg, "the whole network 198.51.100.0/24, not the address 198.51.100.7; write 198.51.100.0/24 for the network or 198.51.100.7 for the one address") {
		t.Errorf("Admins: %s", d.Error())
	}
	d = want1(t, ds, Error, "203.0.113.9/24 has host bits")
	if d.Pos.File != filepath.Join(dir, "office.txt") || d.Pos.Line != 2 {
		t.Errorf("include item at %s", d.Pos)
	}
	want1(t, ds, Error, "2001:db8:10::1/48 has host bits set: it means the whole network 2001:db8:10::/48")
	d = want1(t, ds, Error, "10.1.2.3/8 has host bits")
	if d.Pos.Line != 9 || d.Pos.Col != 22 {
		t.Errorf("inline grant item at %s", d.Pos)
	}
	d = want1(t, ds, Error, "172.16.5.5/12 has host bits")
	if d.Pos.Line != 14 || d.Pos.Col != 32 {
		t.Errorf("login restriction item at %s", d.Pos)
	}
	if len(find(ds, "192.0.2.0/24")) != 0 {
		t.Errorf("a clean network reported:\n%s", dump(ds))
	}
}

func TestTrustedUpstreams(t *testing.T) {
	dir := t.TempDir()
	base := `patterns:
  Internal: "10.0.0.0/8; 192.168.0.0/16"
  Admins: "198.51.100.7"
services:
  web:
    listen: "127.0.0.1:0"
    backend: "http://127.0.0.1:8080"
    grant: "[Internal]; [Admins]"
trusted_upstreams: `
	for _, c := range []struct {
		trusted string
		want    []string // substrings, one finding each
	}{
		{`"127.0.0.1"`, []string{"trusted_upstreams includes 127.0.0.1 (loopback)"}},
		{`"127.0.0.0/8; ::1"`, []string{"includes 127.0.0.1 and ::1 (loopback)"}},
		{`"10.0.0.5"`, nil}, // a load balancer inside a granted network
		{`"10.20.0.0/16"`, []string{"trusted_upstreams item 10.20.0.0/16 overlaps the addresses service web grants"}},
		{`"0.0.0.0/0"`, []string{"includes 127.0.0.1 (loopback)", "item 0.0.0.0/0 overlaps the addresses service web grants (10.0.0.0/8"}},
		{`"198.51.100.7"`, []string{"item 198.51.100.7 overlaps the addresses service web grants (198.51.100.7 at "}},
		{`"203.0.113.5"`, nil},
	} {
		s := load(t, dir, base+c.trusted+"\n")
		ds := run(s, Options{})
		for _, w := range c.want {
			want1(t, ds, Warning, w)
		}
		if len(ds) != len(c.want) {
			t.Errorf("trusted %s: want %d findings, got:\n%s", c.trusted, len(c.want), dump(ds))
		}
	}
}

func TestListenClash(t *testing.T) {
	dir := t.TempDir()
	cert, key := pair(t, dir, "tls", 365*24*time.Hour)
	tls := `, tls: { cert: ` + cert + `, key: ` + key + ` }`
	s := load(t, dir, `services:
  imap:  { listen: ":11143", backend: "127.0.0.1:10143"`+tls+` }
  pop3:  { listen: "127.0.0.1:11143", backend: "127.0.0.1:10110"`+tls+` }
  imaps: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143"`+tls+` }
  pop3s: { listen: "127.0.0.1:0", backend: "127.0.0.1:10110"`+tls+` }
  smtp:  { listen: "127.0.0.1:12525", backend: "127.0.0.1:10025" }
admin: { listen: "tcp:[::1]:12525" }
`)
	ds := run(s, Options{})
	d := want1(t, ds, Error, "listen on the same port 11143")
	if !strings.HasPrefix(d.Msg, "imap (:11143 at ") || !strings.Contains(d.Msg, " and pop3 (127.0.0.1:11143 at ") || d.Pos.Line != 3 {
		t.Errorf("%s", d.Error())
	}
	if len(ds) != 1 {
		t.Errorf("port 0 twice, or IPv4 and IPv6 hosts on one port, are no clash:\n%s", dump(ds))
	}
}

func TestBindProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().String()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	_, port, _ := net.SplitHostPort(freeAddr)
	dir := t.TempDir()
	s := load(t, dir, `services:
  smtp:       { listen: "`+busy+`", backend: "127.0.0.1:10025" }
  submission: { listen: "`+freeAddr+`", backend: "127.0.0.1:10587", allow_insecure_auth: true }
  web:        { listen: "192.0.2.1:`+port+`", backend: "http://127.0.0.1:8080" }
`)
	if ds := run(s, Options{}); len(ds) != 0 {
		t.Fatalf("without Bind nothing is probed:\n%s", dump(ds))
	}
	ds := run(s, Options{Bind: true})
	want1(t, ds, Warning, "service smtp: "+busy+" is in use by another program now")
	want1(t, ds, Error, "service web: 192.0.2.1:"+port+": 192.0.2.1 is not an address of this machine")
	if len(ds) != 2 {
		t.Errorf("the free address is bindable:\n%s", dump(ds))
	}
	// The probe never listens: the listener it found is still the only one.
	if c, err := net.Dial("tcp", busy); err != nil {
		t.Errorf("busy listener: %v", err)
	} else {
		c.Close()
	}
	ds = run(s, Options{Bind: true, Mode: ModeServe})
	want1(t, ds, Error, "service smtp: "+busy+" is in use")
	// Two probes of one address at once do not collide (SO_REUSEADDR
	// without listen): the free address stays free after a probe.
	if err := probeBind(mustAddrPort(t, freeAddr)); err != nil {
		t.Errorf("probe of a free address: %v", err)
	}
	if l, err := net.Listen("tcp", freeAddr); err != nil {
		t.Errorf("after probing, the address cannot be listened on: %v", err)
	} else {
		l.Close()
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func TestCertificates(t *testing.T) {
	dir := t.TempDir()
	certA, keyA := pair(t, dir, "a", 24*time.Hour)
	_, keyB := pair(t, dir, "b", 24*time.Hour)
	s := load(t, dir, `services:
  imaps: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", tls: { cert: `+certA+`, key: `+keyA+` } }
  pop3s: { listen: "127.0.0.1:0", backend: "127.0.0.1:10110", tls: { cert: `+certA+`, key: `+keyB+` } }
  imap:  { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", tls: { cert: `+certA+`, key: `+keyA+` } }
`)
	ds := run(s, Options{})
	d := want1(t, ds, Error, "service pop3s: the certificate and key do not load")
	if d.Pos.Line != 3 {
		t.Errorf("at %s", d.Pos)
	}
	// In less than a day; once for the pair imap and imaps share.
	want1(t, ds, Warning, "service imap: the certificate "+certA+" expires on")
	want1(t, ds, Warning, "in less than a day: renew it")
	ds = run(s, Options{Now: time.Now().Add(48 * time.Hour)})
	want1(t, ds, Error, "service imap: the certificate "+certA+" expired on")
	ds = run(s, Options{Now: time.Now().Add(48 * time.Hour), Mode: ModeServe})
	want1(t, ds, Warning, "service imap: the certificate "+certA+" expired on")
	if ds := run(s, Options{CertWarn: time.Hour}); len(ds) != 1 {
		t.Errorf("a day left with a one-hour warning time is fine:\n%s", dump(ds))
	}
}

func TestGeoIPAge(t *testing.T) {
	dir := t.TempDir()
	built := time.Date(2026, 6, 17, 0, 0, 0, 0, time.UTC)
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "country ipvAll", RecordSize: 24, BuildEpoch: built.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	_, n, _ := net.ParseCIDR("175.136.0.0/15")
	if err := tree.Insert(n, mmdbtype.Map{"country_code": mmdbtype.String("MY")}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "country.mmdb"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(dir, "sg.zone"), []byte("165.21.0.0/16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := load(t, dir, "geoip:\n  databases:\n    - path: country.mmdb\n    - path: sg.zone\npatterns:\n  MY: \"country:MY\"\n")
	if ds := run(s, Options{Now: built.Add(29 * 24 * time.Hour)}); len(ds) != 0 {
		t.Errorf("29 days old:\n%s", dump(ds))
	}
	ds := run(s, Options{Now: built.Add(45 * 24 * time.Hour)})
	d := want1(t, ds, Warning, "country.mmdb was built on 2026-06-17, 45 days ago")
	if d.Pos.Line != 3 || len(ds) != 1 {
		t.Errorf("want the MMDB only (a zone file has no build date), at its line:\n%s", dump(ds))
	}
}

// nobody is an unprivileged user for the file checks, whatever the
// machine's user database holds.
func nobody(uid int) func(string) (*user.User, error) {
	return func(name string) (*user.User, error) {
		return &user.User{Username: name, Uid: strconv.Itoa(uid), Gid: strconv.Itoa(uid)}, nil
	}
}

func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make files another user cannot read")
	}
	const uid = 64999
	root := t.TempDir()
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "etc")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cert, key := pair(t, dir, "tls", 365*24*time.Hour)
	if err := os.WriteFile(filepath.Join(dir, "office.txt"), []byte("203.0.113.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bypass.txt"), []byte("f:more.txt\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "more.txt"), []byte("192.0.2.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(root, "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, uid, uid); err != nil {
		t.Fatal(err)
	}
	cfg := `patterns:
  Office: "{office.txt}"
services:
  imaps: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", grant: "[Office]", tls: { cert: ` + cert + `, key: ` + key + ` } }
intrusion_prevention: { bypass_file: bypass.txt }
store: { path: ` + state + `/postern.db }
admin: { listen: "unix:` + state + `/admin.sock", token_file: ` + state + `/admin.token }
run_as: postern
`
	s := load(t, dir, cfg)

	// A missing user.
	ds := run(s, Options{})
	want1(t, ds, Error, "run_as postern: no such user on this machine")

	// The configuration's directory is closed to the user: one finding
	// for it, naming everything under it.
	ds = run(s, Options{LookupUser: nobody(uid)})
	d := want1(t, ds, Error, "run_as postern cannot enter "+dir+" (drwx------, owner root:root)")
	for _, what := range []string{"the configuration " + s.Config.Path, "the include " + filepath.Join(dir, "office.txt"),
		"the bypass file " + filepath.Join(dir, "bypass.txt"), "the bypass file " + filepath.Join(dir, "more.txt"), "the certificate " + cert, "the key " + key} {
		if !strings.Contains(d.Msg, what) {
			t.Errorf("lacks %q: %s", what, d.Msg)
		}
	}
	if len(ds) != 1 {
		t.Errorf("one cause, one finding:\n%s", dump(ds))
	}

	// The directory open: the 0600 files are each their own cause; a
	// 0640 root file is unreadable too.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Config.Path, 0o640); err != nil {
		t.Fatal(err)
	}
	ds = run(s, Options{LookupUser: nobody(uid)})
	want1(t, ds, Error, "run_as postern cannot read "+s.Config.Path+" (-rw-r-----, owner root:root), so after dropping privileges serve cannot use the configuration")
	want1(t, ds, Error, "cannot read "+key+" (-rw-------")
	want1(t, ds, Error, "cannot read "+filepath.Join(dir, "more.txt"))
	if len(ds) != 3 {
		t.Errorf("want 3 findings:\n%s", dump(ds))
	}
	// Readable by the user's group, and the key and list the user's own:
	// nothing to say. The store directory is the user's.
	if err := os.Chown(s.Config.Path, 0, uid); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{key, filepath.Join(dir, "more.txt")} {
		if err := os.Chown(p, uid, 0); err != nil {
			t.Fatal(err)
		}
	}
	if ds := run(s, Options{LookupUser: nobody(uid)}); len(ds) != 0 {
		t.Errorf("all readable:\n%s", dump(ds))
	}
	// A store directory the user cannot create files in.
	if err := os.Chown(state, 0, 0); err != nil {
		t.Fatal(err)
	}
	ds = run(s, Options{LookupUser: nobody(uid)})
	d = want1(t, ds, Error, "cannot create files in "+state)
	if !strings.Contains(d.Msg, "the store directory") || !strings.Contains(d.Msg, "the token directory") || !strings.Contains(d.Msg, "the admin socket directory") || len(ds) != 1 {
		t.Errorf("one cause, one finding:\n%s", dump(ds))
	}
}

func TestErrAndWarnings(t *testing.T) {
	ds := []Diag{{Severity: Warning, Msg: "w"}, {Severity: Error, Msg: "e"}}
	err := Err(ds)
	var d Diag
	if err == nil || !errors.As(err, &d) || d.Msg != "e" || len(Warnings(ds)) != 1 {
		t.Errorf("Err %v, Warnings %v", err, Warnings(ds))
	}
	if Err(Warnings(ds)) != nil {
		t.Error("warnings are no error")
	}
}

// envProbeChild makes the test binary a child that checks the
// configuration at this path with bind probes and prints its findings
// (TestPrivilegedPortsAsUser runs it as an unprivileged user).
const envProbeChild = "POSTERN_PREFLIGHT_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(envProbeChild); path != "" {
		s, err := snapshot.Load(context.Background(), path, time.Now())
		if err != nil {
			fmt.Println("load:", err)
			os.Exit(1)
		}
		fmt.Print("check\n", dump(Check(context.Background(), s, Options{Bind: true})))
		fmt.Print("serve\n", dump(Check(context.Background(), s, Options{Bind: true, Mode: ModeServe})))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPrivilegedPortsAsUser: run by a user that may not bind ports below
// 1024, check says so as a warning (serve may run as root) naming every
// such port, and serve's preflight refuses.
func TestPrivilegedPortsAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the check as another user")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	child := filepath.Join(dir, "preflight.test")
	if err := os.WriteFile(child, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	if err := os.WriteFile(cfg, []byte(`services:
  smtp: { listen: "127.0.0.1:25", backend: "127.0.0.1:10025" }
  web:  { listen: "127.0.0.1:81", backend: "http://127.0.0.1:8080" }
  imap: { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", plaintext_login: "127.0.0.1" }
store: { path: /tmp/postern-preflight-unused/postern.db }
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, child, "-test.run=^$")
	cmd.Env = append(os.Environ(), envProbeChild+"="+cfg)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	checkPart, servePart, ok := strings.Cut(string(out), "serve\n")
	want := "smtp 127.0.0.1:25 and web 127.0.0.1:81: ports below 1024 are privileged and this process (uid 65534) may not bind them; start serve as root"
	if !ok || !strings.Contains(checkPart, "warning: "+cfg+":2:19: "+want) || !strings.Contains(servePart, "error: "+cfg+":2:19: "+want) ||
		strings.Count(string(out), "privileged") != 2 {
		t.Errorf("child's findings:\n%s", out)
	}
}

// metrics.grant gets the checks of every address list.
func TestMetricsGrantHostBits(t *testing.T) {
	s := load(t, t.TempDir(), `metrics: { listen: "127.0.0.1:0", grant: "10.9.8.7/16" }
`)
	d := want1(t, run(s, Options{}), Error, "10.9.8.7/16 has host bits set")
	if d.Pos.Line != 1 || d.Pos.Col != 43 {
		t.Errorf("at %s", d.Pos)
	}
}

// The nftables export where there is no nftables: check warns (it may run
// on another machine than the server), serve refuses; on Linux nothing.
func TestNftablesOtherSystem(t *testing.T) {
	s := load(t, t.TempDir(), `nftables: { enabled: true, create: true }
services:
  smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:2525" }
`)
	const msg = "nftables.enabled: the nftables export needs Linux's nftables, and this system is darwin: turn it off here"
	want1(t, run(s, Options{GOOS: "darwin"}), Warning, msg)
	want1(t, run(s, Options{GOOS: "darwin", Mode: ModeServe}), Error, msg)
	if ds := find(run(s, Options{GOOS: "linux"}), "nftables"); len(ds) != 0 {
		t.Fatalf("on Linux:\n%s", dump(ds))
	}
}
