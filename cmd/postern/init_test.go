package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/tlsconf"
)

// mode returns a file's permission bits.
func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestInitWritesAConfigThatTakesLogins: the starter passes check without a
// warning, and takes logins as written: every service has TLS (a
// self-signed ECDSA certificate for --hostname, key 0600, certificate and
// configuration 0644), no trusted upstream catches local clients, and each
// value to change is marked.
func TestInitWritesAConfigThatTakesLogins(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	code, out, errs := postern(t, "init", "-o", cfg, "--hostname", "mx.example.org")
	if code != 0 || !strings.Contains(out, "wrote "+cfg+", "+filepath.Join(dir, "cert.pem")+" (0644), "+filepath.Join(dir, "key.pem")+" (0600)") {
		t.Fatalf("init: %d %s %s", code, out, errs)
	}
	for f, want := range map[string]os.FileMode{"postern.yaml": 0o644, "cert.pem": 0o644, "key.pem": 0o600} {
		if got := mode(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s: mode %o, want %o", f, got, want)
		}
	}
	// The certificate: ECDSA, valid for the host name (and loopback, for
	// trying it on this machine), about a year.
	pemBytes, err := os.ReadFile(filepath.Join(dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatal("cert.pem: no PEM block")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || leaf.VerifyHostname("mx.example.org") != nil || leaf.VerifyHostname("127.0.0.1") != nil ||
		time.Until(leaf.NotAfter) < 360*24*time.Hour {
		t.Errorf("certificate: key %T, names %v %v, until %s", leaf.PublicKey, leaf.DNSNames, leaf.IPAddresses, leaf.NotAfter)
	}

	// check: no error and no warning (the bind probes are the preflight
	// tests' business: the standard ports may be taken on a test machine).
	code, out, errs = postern(t, "check", "-c", cfg, "--bind=false")
	if code != 0 || errs != "" {
		t.Fatalf("check of init output: exit %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"ips       smtp       triggers ILPYRM;", "ips       imap_pop3  triggers IL;", "ips       web        triggers IL;"} {
		if !strings.Contains(out, want) {
			t.Errorf("starter: summary lacks %q (a trigger that never fires?):\n%s", want, out)
		}
	}
	snap, err := snapshot.Load(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f := snap.Config
	for _, name := range service.All {
		svc := f.Services[name]
		if svc == nil {
			t.Errorf("starter: no %s service", name)
			continue
		}
		if svc.TLS == nil || svc.TLS.Cert.Value != filepath.Join(dir, "cert.pem") || svc.TLS.Key.Value != filepath.Join(dir, "key.pem") {
			t.Errorf("starter: %s has no TLS with the written pair: %+v", name, svc.TLS)
		}
		if svc.SMTP != nil && string(svc.SMTP.Hostname) != "mx.example.org" {
			t.Errorf("starter: %s hostname %q", name, svc.SMTP.Hostname)
		}
	}
	if f.TrustedUpstreams.IsSet() || f.RunAs != "" {
		t.Errorf("starter: trusted_upstreams %q, run_as %q: want both commented out", f.TrustedUpstreams.Value, f.RunAs)
	}
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Every value to make one's own is marked.
	for _, l := range strings.Split(string(text), "\n") {
		for _, key := range []string{"backend:", "Office:", "Admins:", "tls: &tls", "#trusted_upstreams:", "#run_as:", "default_domain:", `- "*=`} {
			if strings.Contains(l, key) && !strings.Contains(l, "# CHANGE") {
				t.Errorf("starter: a value to change without a CHANGE comment: %s", l)
			}
		}
	}

	// A fixed block time, as IceWarp's: no escalation unless uncommented.
	if g := snap.Guard; g.EscalationFactor > 1 || g.BlockTime != 240*time.Minute {
		t.Errorf("starter: block time %s, escalation factor %g; want a fixed 4h", g.BlockTime, g.EscalationFactor)
	}
	on := strings.Replace(string(text), "  # escalation: {", "  escalation: {", 1)
	if on == string(text) {
		t.Fatal("starter: no commented escalation line to turn on")
	}
	withEsc := filepath.Join(dir, "escalation.yaml")
	writeFile(t, withEsc, on)
	if snap, err := snapshot.Load(context.Background(), withEsc, time.Now()); err != nil {
		t.Errorf("starter with escalation uncommented: %v", err)
	} else if g := snap.Guard; g.EscalationFactor != 2 || g.EscalationCap != 7*24*time.Hour || g.Memory != 30*24*time.Hour {
		t.Errorf("starter with escalation uncommented: factor %g, cap %s, memory %s", g.EscalationFactor, g.EscalationCap, g.Memory)
	}

	// The access rules mean what the comments say.
	code, out, _ = postern(t, "explain", "-c", cfg, "--ip", "198.51.100.7", "--service", "web", "--path", "/%61dmin/")
	if code != 1 || !strings.Contains(out, "does not grant") {
		t.Errorf("starter web: the admin address is not in the web grant list: %d\n%s", code, out)
	}
	code, out, _ = postern(t, "explain", "-c", cfg, "--ip", "10.1.2.3", "--service", "web", "--path", "//admin")
	if code != 1 || !strings.Contains(out, "web path /admin grant") {
		t.Errorf("starter /admin from an internal address: %d\n%s", code, out)
	}
	code, out, _ = postern(t, "explain", "-c", cfg, "--ip", "127.0.0.1", "--service", "imaps", "--account", "alice@example.test")
	if code != 0 {
		t.Errorf("starter: a login from this machine is refused: %d\n%s", code, out)
	}

	// Existing files are kept unless --force: the configuration, and the
	// certificate pair.
	if code, _, errs := postern(t, "init", "-o", cfg); code != 2 || !strings.Contains(errs, "exists; use --force") {
		t.Fatalf("init over an existing file: %d %s", code, errs)
	}
	other := filepath.Join(dir, "other.yaml")
	if code, _, errs := postern(t, "init", "-o", other); code != 2 || !strings.Contains(errs, "cert.pem exists; use --force to overwrite it, or --tls-cert/--tls-key to use it") {
		t.Fatalf("init over an existing certificate: %d %s", code, errs)
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("init wrote the configuration although it refused the certificate")
	}
	if code, _, errs := postern(t, "init", "-o", cfg, "--force"); code != 0 {
		t.Fatalf("init --force: %s", errs)
	}
}

// TestInitFlags: --tls-cert/--tls-key use a pair instead of writing one,
// --backend-host moves every backend (IPv6 in brackets), -o - writes to
// standard output.
func TestInitFlags(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key, err := tlsconf.SelfSigned(tlsDir, []string{"mail.example.net"}, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := postern(t, "init", "-o", "-", "--tls-cert", cert, "--tls-key", key, "--backend-host", "::1", "--hostname", "mail.example.net")
	if code != 0 || !strings.HasPrefix(out, "# postern configuration") {
		t.Fatalf("init -o -: %d %s", code, errs)
	}
	for _, want := range []string{`tls: &tls { cert: "` + cert + `", key: "` + key + `" }`, `backend: "[::1]:10025"`, `backend: "http://[::1]:8080"`, "hostname: mail.example.net, tls"} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q", want)
		}
	}
	if entries, _ := os.ReadDir(tlsDir); len(entries) != 2 {
		t.Errorf("init wrote into the pair's directory: %v", entries)
	}
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, out)
	if code, out, errs := postern(t, "check", "-c", cfg, "--bind=false"); code != 0 || errs != "" {
		t.Errorf("check: %d\n%s%s", code, out, errs)
	}
	for _, args := range [][]string{
		{"init", "-o", "-", "--tls-cert", cert},
		{"init", "-o", "-", "--hostname", "bad host"},
		{"init", "-o", "-", "--backend-host", ""},
	} {
		if code, _, _ := postern(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestCheckCatchesWhatWouldBite is the regression test of the findings
// against the old starter: each of these passed check, and bit later.
func TestCheckCatchesWhatWouldBite(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	// The old starter's services, as written: no TLS anywhere, loopback
	// trusted, an administrator's address with a mask, two services on
	// one port, a run_as user that does not exist.
	old := `patterns:
  Admins: "198.51.100.7/24"
  Internal: "10.*.*.*; 172.16.0.0/12; 192.168.*.*; 127.0.0.1; ::1"
services:
  smtp:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" }
  submission: { listen: "127.0.0.1:0", backend: "127.0.0.1:10587" }
  imap:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10143", grant: "[Internal]" }
  pop3:       { listen: "127.0.0.1:0", backend: "127.0.0.1:10110", grant: "[Internal]" }
  web:
    listen: "127.0.0.1:0"
    backend: "http://127.0.0.1:8080"
    paths:
      - { prefix: /admin, grant: "[Admins]" }
      - { prefix: /installer, grant: "[Admins]" }
trusted_upstreams: "127.0.0.1"
run_as: postern-no-such-user
`
	writeFile(t, cfg, old)
	code, out, errs := postern(t, "check", "-c", cfg)
	if code != exitError || out != "" {
		t.Fatalf("check: exit %d, want %d\n%s%s", code, exitError, out, errs)
	}
	for _, want := range []string{
		cfg + ":6:3: service submission: no client can ever send mail",
		cfg + ":7:3: service imap: no client can ever log in",
		cfg + ":8:3: service pop3: no client can ever log in",
		cfg + ":2:12: 198.51.100.7/24 has host bits set: it means the whole network 198.51.100.0/24, not the address 198.51.100.7; write 198.51.100.0/24 for the network or 198.51.100.7 for the one address",
		cfg + ": run_as postern-no-such-user: no such user on this machine",
		"warning: " + cfg + ":15:20: trusted_upstreams includes 127.0.0.1 (loopback)",
		cfg + ": 5 errors",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("check lacks %q:\n%s", want, errs)
		}
	}
	if n := strings.Count(errs, "host bits"); n != 1 {
		t.Errorf("the /24 is referenced twice but is one cause: %d findings", n)
	}

	// message_size: 100 is refused, with the unit to write.
	writeFile(t, cfg, "services:\n  smtp: { listen: \"127.0.0.1:0\", backend: \"127.0.0.1:10025\" }\nintrusion_prevention:\n  smtp: { message_size: 100 }\n")
	if code, _, errs := postern(t, "check", "-c", cfg); code != exitError || !strings.Contains(errs, cfg+":4:25: size 100 has no unit, so it means 100 bytes: write the unit (100KB, 100MB, or 100B if bytes are meant)") {
		t.Errorf("message_size 100: exit %d\n%s", code, errs)
	}

	// Two services on one port.
	writeFile(t, cfg, "services:\n  smtp: { listen: \"127.0.0.1:2525\", backend: \"127.0.0.1:10025\" }\n  web: { listen: \":2525\", backend: \"http://127.0.0.1:8080\" }\n")
	if code, _, errs := postern(t, "check", "-c", cfg, "--bind=false"); code != exitError ||
		!strings.Contains(errs, cfg+":3:18: smtp (127.0.0.1:2525 at "+cfg+":2:19) and web (:2525 at "+cfg+":3:18) listen on the same port 2525") {
		t.Errorf("one port twice: exit %d\n%s", code, errs)
	}
}

// TestCheckRunAsCannotRead: the 0640 root configuration the old init wrote
// is unreadable to run_as, so every reload after the privilege drop would
// fail: check says so, once for the cause.
func TestCheckRunAsCannotRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to write files another user cannot read")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody on this machine")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "postern.yaml")
	if code, _, errs := postern(t, "init", "-o", cfg); code != 0 {
		t.Fatal(errs)
	}
	text, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, strings.Replace(string(text), "#run_as: postern", "run_as: "+nobody.Username, 1))
	if err := os.Chmod(cfg, 0o640); err != nil {
		t.Fatal(err)
	}
	code, _, errs := postern(t, "check", "-c", cfg, "--bind=false")
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(errs), "\n") {
		if !strings.HasPrefix(l, "warning:") {
			lines = append(lines, l)
		}
	}
	want := []string{
		"run_as nobody cannot read " + cfg + " (-rw-r-----, owner root:root), so after dropping privileges serve cannot use the configuration " + cfg,
		"run_as nobody cannot read " + filepath.Join(dir, "key.pem") + " (-rw-------, owner root:root), so after dropping privileges serve cannot use the key " + filepath.Join(dir, "key.pem"),
		"run_as nobody cannot create files in " + dir + " (drwxr-xr-x, owner root:root), so after dropping privileges serve cannot use the store directory " + filepath.Join(dir, "state") +
			", the token directory " + filepath.Join(dir, "state") + " and the admin socket directory " + filepath.Join(dir, "state"),
	}
	if code != exitError || len(lines) != 4 {
		t.Fatalf("check: exit %d, want 3 errors and the count:\n%s", code, errs)
	}
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, w) }) {
			t.Errorf("check lacks %q:\n%s", w, errs)
		}
	}
}
