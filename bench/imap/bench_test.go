package main

import (
	"bufio"
	"bytes"
	"context"
	"hash/crc32"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/bench/internal/benchkit"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestBigMessage(t *testing.T) {
	m := newBigMessage(100_000)
	if len(m.file) < 100_000 || len(m.file) > 100_080 {
		t.Fatalf("size %d, want about 100000", len(m.file))
	}
	if bytes.Contains(m.file, []byte("\r")) || bytes.Contains(m.file, []byte("\n.")) {
		t.Fatal("the stored message must have LF line ends and no line starting with a dot")
	}
	crlf := bytes.ReplaceAll(m.file, []byte("\n"), []byte("\r\n"))
	if int64(len(crlf)) != m.vsize || crc32.ChecksumIEEE(crlf) != m.crc {
		t.Fatalf("vsize %d / crc %08x do not describe the CRLF form (%d bytes)", m.vsize, m.crc, len(crlf))
	}
}

// popReader reads text through a small bufio buffer, so a terminator can
// straddle two chunks.
func popReader(text string, bufSize int) *bufio.Reader {
	return bufio.NewReaderSize(strings.NewReader(text), bufSize)
}

func TestPOPMultiline(t *testing.T) {
	body := strings.Repeat("ABCDEFGHIJ\r\n..stuffed\r\n", 50)
	for _, size := range []int{16, 17, 19, 23, 64, 4096} {
		c := popReader(body+".\r\n+OK next\r\n", size)
		counted := 0
		n, err := popMultiline(c, func(k int) { counted += k })
		if err != nil {
			t.Fatalf("buffer %d: %v", size, err)
		}
		if want := int64(len(body) + 3); n != want || int64(counted) != want {
			t.Fatalf("buffer %d: read %d (counted %d), want %d", size, n, counted, want)
		}
		if l, _ := c.ReadString('\n'); l != "+OK next\r\n" {
			t.Fatalf("buffer %d: the next line is %q: the terminator was not found where it is", size, l)
		}
	}
	// An empty answer is only the terminator.
	c := popReader(".\r\n", 16)
	if n, err := popMultiline(c, func(int) {}); err != nil || n != 3 {
		t.Fatalf("empty answer: %d, %v", n, err)
	}
	// A connection that ends before the terminator is an error.
	c = popReader("line\r\n", 16)
	if _, err := popMultiline(c, func(int) {}); err == nil {
		t.Fatal("no error for a truncated answer")
	}
}

func TestParseEnv(t *testing.T) {
	e := benchkit.ParseEnv("# comment\nPOSTERN_BACKENDS_DIR=/tmp/x\nPOSTERN_BACKENDS_USERS=\"a:b c:d\"\nPOSTERN_BACKENDS_IMAP_PROXY_PORT=24143\n\n")
	if e["POSTERN_BACKENDS_DIR"] != "/tmp/x" || e["POSTERN_BACKENDS_USERS"] != "a:b c:d" || e.Int("POSTERN_BACKENDS_IMAP_PROXY_PORT") != 24143 {
		t.Fatalf("parsed %v", e)
	}
	if e.Addr("POSTERN_BACKENDS_IMAP_PROXY_PORT") != "127.0.0.1:24143" {
		t.Fatal(e.Addr("POSTERN_BACKENDS_IMAP_PROXY_PORT"))
	}
}

func TestFitConnections(t *testing.T) {
	// 20000 descriptors, 21 in use, 6 per connection: 3319 fit.
	if got := fitConnections(20000, 21, 6, 0, 0, 0); got != 3319 {
		t.Fatalf("got %d, want 3319", got)
	}
	// This program's own limit can be the tighter one.
	if got := fitConnections(1_000_000, 21, 6, 2064, 0, 2); got != 1000 {
		t.Fatalf("got %d, want 1000", got)
	}
	if got := fitConnections(0, 0, 0, 0, 0, 0); got < 1_000_000 {
		t.Fatalf("unknown limit: got %d, want no limit", got)
	}
}

func TestVerdictAndMedian(t *testing.T) {
	if r, v := verdict(100, 96, 0.95); r != 0.96 || !strings.HasSuffix(v, "ok") {
		t.Fatalf("%v %q", r, v)
	}
	if _, v := verdict(100, 94, 0.95); !strings.Contains(v, "TARGET MISSED") {
		t.Fatalf("%q", v)
	}
	if _, v := verdict(0, 94, 0.95); v != "no data" {
		t.Fatalf("%q", v)
	}
	if m := benchkit.Median([]float64{3, 1, 2}); m != 2 {
		t.Fatal(m)
	}
	if m := benchkit.Median([]float64{4, 1}); m != 2.5 {
		t.Fatal(m)
	}
}

func TestSourceAddr(t *testing.T) {
	if a := sourceAddr(20, 0).String(); a != "127.20.0.1" {
		t.Fatal(a)
	}
	if a := sourceAddr(20, 9999).String(); a != "127.20.39.250" {
		t.Fatal(a)
	}
}

// TestConfigIsValid loads the generated configuration with postern's own
// loader: it must be accepted as postern serve would accept it.
func TestConfigIsValid(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "postern.yaml")
	text := configText(dir, "127.0.0.1:1143", "127.0.0.1:24143", "127.0.0.1:1110", "127.0.0.1:24110")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Load(context.Background(), path, time.Now())
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for _, name := range []service.Service{service.IMAP, service.POP3} {
		svc := snap.Config.Services[name]
		if svc == nil || svc.MaxPerAddress != 1000000 || string(svc.Mail.BackendProxy) != "v2" {
			t.Fatalf("service %s: %+v", name, svc)
		}
	}
}

// TestMemBackendAndRelay logs in to the in-process IMAP backend through
// the minimal relay (which sends the PROXY header the backend requires),
// fetches its message and logs out.
func TestMemBackendAndRelay(t *testing.T) {
	be, err := startMemBackend(loginUser.user, loginUser.pass)
	if err != nil {
		t.Fatal(err)
	}
	defer be.close()
	mr, err := benchkit.StartRelay(be.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer mr.Close()
	ctx := context.Background()
	c, err := dial(ctx, target{addr: mr.Addr()}, sourceAddr(30, 0), time.Now().Add(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.IMAPGreeting(); err != nil {
		t.Fatal(err)
	}
	if err := c.IMAPCmd("LOGIN "+loginUser.user+" wrong-password", nil); err == nil {
		t.Fatal("a wrong password logged in")
	}
	if err := c.IMAPCmd("LOGIN "+loginUser.user+" "+loginUser.pass, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.IMAPCmd("SELECT INBOX", nil); err != nil {
		t.Fatal(err)
	}
	var got []byte
	err = c.IMAPCmd("FETCH 1 BODY.PEEK[]", func(r io.Reader, n int64) error {
		got = make([]byte, n)
		_, err := io.ReadFull(r, got)
		return err
	})
	if err != nil || !bytes.Contains(got, []byte("Subject: idle")) {
		t.Fatalf("FETCH: %v, %q", err, got)
	}
	if !waitFor(5*time.Second, func() bool { return be.live.Load() == 1 }) {
		t.Fatalf("backend sessions: %d, want 1", be.live.Load())
	}
	if err := c.IMAPCmd("LOGOUT", nil); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool { return be.live.Load() == 0 }) {
		t.Fatalf("backend sessions after LOGOUT: %d, want 0", be.live.Load())
	}
	// Without a PROXY header the backend refuses the connection.
	raw, err := net.DialTimeout("tcp", be.addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	raw.Write([]byte("a1 CAPABILITY\r\n"))
	if l, err := bufio.NewReader(raw).ReadString('\n'); err == nil && strings.HasPrefix(l, "* OK") {
		t.Fatalf("the backend greeted a connection without a PROXY header: %q", l)
	}
}

// TestShortRun runs the benchmark's smoke mode, reduced further, against
// the harness's real Dovecot (end-to-end: POSTERN_E2E=1, root) through a
// freshly built postern serve, and checks that every scenario produced a
// figure for both sides and the idle test held its connections.
func TestShortRun(t *testing.T) {
	env := testenv.Backends(t)
	if testing.Short() {
		t.Skip("builds postern and runs load for ~20 s")
	}
	o := defaultOptions()
	o.applyShort(map[string]bool{})
	o.dir, o.reuse = env.Dir, true
	o.warmup, o.duration, o.bigSize, o.idle, o.loginClients = 500*time.Millisecond, time.Second, 2_000_000, 200, 16
	out, err := os.CreateTemp(t.TempDir(), "report")
	if err != nil {
		t.Fatal(err)
	}
	o.stdout = out
	runErr := run(context.Background(), o)
	report, _ := os.ReadFile(out.Name())
	t.Logf("report:\n%s", report)
	if runErr != nil {
		t.Fatal(runErr)
	}
	for _, want := range []string{
		"IMAP FETCH BODY.PEEK[] 2 MB, 4 clients", "POP3 RETR 2 MB, 4 clients",
		"IMAP connect+LOGIN+LOGOUT, 16 clients", "POP3 connect+USER+PASS+QUIT, 16 clients",
		"200 connections (opened in", "KiB per connection",
	} {
		if !bytes.Contains(report, []byte(want)) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if bytes.Contains(report, []byte("no data")) {
		t.Error("a scenario has no figure for one side")
	}
}
