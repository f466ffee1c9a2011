package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// plaintextOK is the gateways' PlainOK pattern: the IMAP and POP3 services'
// plaintext_login. Everyone else must use STARTTLS/STLS or implicit TLS.
const plaintextOK = "127.0.0.16/28; 192.0.2.0/25; 203.0.113.0/25"

// mailSuite is what the subtests of TestIMAPPOP3 share: the backends, one
// postern in front of Dovecot (imap, imaps, pop3, pop3s; close_all on) and
// one message in bob's mailbox that the reading tests fetch.
type mailSuite struct {
	env   *testenv.Env
	gw    *gateway
	token string // the Subject of bob's test message
	file  []byte // that message as Dovecot stored it (LF line ends)
}

// TestIMAPPOP3 runs postern's IMAP and POP3 gateways in front of the real
// Dovecot and drives them with real clients (imaplib, poplib, curl,
// mbsync, fetchmail) and, for input no client sends, raw sockets. Client
// addresses (PROXY header sources, or curl's own loopback source) are
// listed in README.md; each subtest has its own.
func TestIMAPPOP3(t *testing.T) {
	env := testenv.Backends(t)
	posternBinary(t)
	for bin, pkg := range map[string]string{"mbsync": "isync", "fetchmail": "fetchmail", "curl": "curl", "python3": "python3"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is missing: apt-get install %s (README.md, Debian packages)", bin, pkg)
		}
	}
	s := &mailSuite{env: env}
	s.gw = startGateway(t, gwConfig{Backend: env.SMTPProxy,
		IMAP: env.IMAPProxy, IMAPS: env.IMAPSProxy, POP3: env.POP3Proxy, POP3S: env.POP3SProxy, CloseAll: true})
	s.token = uniq("read")
	lmtpDeliver(t, env, "bob@example.test", readMessage(s.token))
	p := waitMessages(t, env, "bob@example.test", s.token, 1)[0]
	var err error
	if s.file, err = os.ReadFile(p); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		f    func(*testing.T, *mailSuite)
	}{
		{"IMAP_Read", testIMAPRead},
		{"POP3_Read", testPOP3Read},
		{"Curl", testCurl},
		{"PlaintextRefused", testPlaintextRefused},
		{"GrantRefused", testGrantRefused},
		{"LoginRestriction_IMAP", testIMAPLoginRestriction},
		{"LoginRestriction_POP3", testPOP3LoginRestriction},
		{"Trigger_L_CloseAll", testMailCloseAll},
		{"Sync_mbsync_fetchmail", testSync},
		{"Bad_Input", testMailBadInput},
		{"Backend_Faults", testMailBackendFaults},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, s)
		})
	}
}

// readMessage is the message the reading tests fetch: the SMTP suite's
// transparency message (dot lines, a 3000-byte line, folded fields,
// trailing white space) plus 8-bit header and body bytes.
func readMessage(token string) []byte {
	m := richMessage(token, "X-8bit: caf\xc3\xa9 \xe9t\xe9")
	return append(m, crlf("8-bit body: gr\xc3\xbc\xc3\x9fe \xff\xfe\x80\n")...)
}

// ---- delivery ---------------------------------------------------------

// lmtpDeliver delivers msg (CRLF line ends) to rcpt through Dovecot's LMTP
// port, the way Postfix does.
func lmtpDeliver(t testing.TB, env *testenv.Env, rcpt string, msg []byte) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", env.LMTP, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := textproto.NewConn(nc)
	step := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("LMTP %q: %v %s", format, err, msg)
		}
	}
	step(220, "")
	step(250, "LHLO e2e.test")
	step(250, "MAIL FROM:<sender@example.test>")
	step(250, "RCPT TO:<%s>", rcpt)
	step(354, "DATA")
	w := c.DotWriter()
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	step(250, "")
	step(221, "QUIT")
}

// ---- Python imaplib / poplib (testdata/mailc.py) -----------------------

// mstep is one step of a mailc.py script.
type mstep map[string]any

func mop(op string) mstep { return mstep{"op": op} }
func mlogin(op, user, pass string) mstep {
	return mstep{"op": op, "user": user, "pass": pass}
}
func mfetch(op, token string) mstep { return mstep{"op": op, "token": token} }

// mreply is what mailc.py reports for one step.
type mreply struct {
	Op    string   `json:"op"`
	OK    bool     `json:"ok"`
	Text  string   `json:"text"`
	Data  string   `json:"data"`
	Caps  []string `json:"caps"`
	UID   int      `json:"uid"`
	N     int      `json:"n"`
	Error string   `json:"error"`
}

func (r mreply) String() string {
	if r.Error != "" {
		return r.Op + ": error " + r.Error
	}
	s := fmt.Sprintf("%s: ok=%v %q", r.Op, r.OK, r.Text)
	if r.Data != "" {
		s += fmt.Sprintf(" (%d bytes of base64)", len(r.Data))
	}
	if len(r.Caps) > 0 {
		s += " caps " + strings.Join(r.Caps, " ")
	}
	return s
}

// bytes is the fetched message.
func (r mreply) bytes(t testing.TB) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil || len(b) == 0 {
		t.Fatalf("%v: no message data (%v)", r, err)
	}
	return b
}

// mrun is a mailc.py run: the greeting, then one reply per step.
type mrun []mreply

func (m mrun) String() string {
	var b strings.Builder
	for _, r := range m {
		b.WriteString("\n  " + r.String())
	}
	return b.String()
}

func (m mrun) at(i int) mreply {
	if i < len(m) {
		return m[i]
	}
	if len(m) > 0 && m[len(m)-1].Error != "" {
		return m[len(m)-1]
	}
	return mreply{Op: "missing", Error: "no reply"}
}

// mailc runs mailc.py: proto "imap" or "pop3", tls "", "starttls" or
// "implicit"; src invalid means no PROXY header.
func mailc(t testing.TB, proto, addr string, src netip.AddrPort, tlsMode string, steps ...mstep) mrun {
	t.Helper()
	spec := map[string]any{"proto": proto, "addr": addr, "tls": tlsMode, "steps": steps}
	if src.IsValid() {
		spec["src"], spec["sport"] = src.Addr().String(), src.Port()
	}
	in, _ := json.Marshal(spec)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", filepath.Join(testdataDir(t), "mailc.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("mailc.py: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var out mrun
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("mailc.py output: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	return out
}

// ---- the Dovecot log ----------------------------------------------------

// dovecotSince returns what Dovecot logged after mark.
func dovecotSince(t testing.TB, env *testenv.Env, mark int64) string {
	t.Helper()
	f, err := os.Open(env.DovecotLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, mark, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitDovecot waits until Dovecot logged, after mark, n lines containing
// every one of subs, and returns them.
func waitDovecot(t testing.TB, env *testenv.Env, mark int64, n int, subs ...string) []string {
	t.Helper()
	var got []string
	if poll(10*time.Second, func() bool { got = linesWith(dovecotSince(t, env, mark), subs...); return len(got) >= n }) {
		return got
	}
	t.Fatalf("Dovecot logged %d line(s) with %q after the mark, want %d:\n%s", len(got), subs, n, lastLines(dovecotSince(t, env, mark), 30))
	return nil
}

// loginLine is the start of Dovecot's successful-login line for proto
// ("imap" or "pop3"), user and the client address it saw.
func loginLine(proto, user, rip string) []string {
	return []string{proto + "-login: Info: Login: user=<" + user + ">", "rip=" + rip + ","}
}

// rip is how Dovecot names a client address in its log.
func rip(a string) string { return "rip=" + a + "," }

// ---- raw IMAP/POP3 over a socket, for input no real client sends --------

// lines reads n lines (without CRLF) or fails.
func (c *rawConn) lines(n int) []string {
	c.t.Helper()
	var out []string
	for range n {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("after %q: %v", out, err)
		}
		out = append(out, strings.TrimRight(l, "\r\n"))
	}
	return out
}

// line reads one line and checks its prefix.
func (c *rawConn) line(prefix string) string {
	c.t.Helper()
	l := c.lines(1)[0]
	if !strings.HasPrefix(l, prefix) {
		c.t.Fatalf("got %q, want %q…", l, prefix)
	}
	return l
}

// untilTagged reads lines until one starts with tag+" " and returns it.
func (c *rawConn) untilTagged(tag string) string {
	c.t.Helper()
	for range 1000 {
		l := c.lines(1)[0]
		if strings.HasPrefix(l, tag+" ") {
			return l
		}
	}
	c.t.Fatalf("no reply tagged %s", tag)
	return ""
}

// ---- a PROXY-adding forwarder (a load balancer) -------------------------

// forwarder listens on 127.0.0.1 and relays every connection to target,
// opening it with a PROXY v2 header that claims src: a trusted load
// balancer in front of postern, for clients that cannot send a header
// themselves (mbsync, fetchmail).
func forwarder(t testing.TB, target string, src netip.Addr) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		port := uint16(41000)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			port++
			track(c)
			wg.Add(1)
			go func(c net.Conn, port uint16) {
				defer wg.Done()
				defer c.Close()
				b, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				track(b)
				defer b.Close()
				dst := b.RemoteAddr().(*net.TCPAddr).AddrPort()
				if _, err := b.Write(testenv.ProxyV2Header(netip.AddrPortFrom(src, port), dst)); err != nil {
					return
				}
				done := make(chan struct{}, 2)
				pipe := func(w, r net.Conn) {
					io.Copy(w, r)
					if tc, ok := w.(*net.TCPConn); ok {
						tc.CloseWrite()
					}
					done <- struct{}{}
				}
				go pipe(b, c)
				go pipe(c, b)
				<-done
				<-done
			}(c, port)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// ---- postern's descriptors ----------------------------------------------

// fdCount is postern's open descriptors: sockets, and the rest (files,
// pipes, epoll).
type fdCount struct{ sockets, other int }

// fds counts postern's open file descriptors.
func (g *gateway) fds(t testing.TB) fdCount {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(g.cmd.Process.Pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("postern's descriptors: %v", err)
	}
	var n fdCount
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n.sockets++
		} else if err == nil {
			n.other++
		}
	}
	return n
}

// fdsAtRest returns postern's descriptor count once it is steady (three
// readings in a row alike, 5 s at most): "postern running" comes before
// the listeners are put in service, and a listener whose sessions run on
// event loops then takes a second descriptor of its socket; a session
// that just ended may still be closing its own.
func (g *gateway) fdsAtRest(t testing.TB) fdCount {
	t.Helper()
	var base fdCount
	steady := 0
	poll(5*time.Second, func() bool {
		n := g.fds(t)
		if n == base {
			steady++
		} else {
			steady = 0
		}
		base = n
		return steady >= 3
	})
	return base
}

// pipeSlack is how many more non-socket descriptors than at rest postern
// may hold: Go's splice(2) path (internal/poll) keeps spliced sessions'
// pipes in a sync.Pool, a cache the runtime empties at garbage collection,
// and a session can take a pair from a processor whose cache is empty.
const pipeSlack = 4

// fdsBackTo waits until postern has no more sockets than base, and not
// more other descriptors than base plus pipeSlack.
func (g *gateway) fdsBackTo(t testing.TB, base fdCount, after string) {
	t.Helper()
	var n fdCount
	if !poll(10*time.Second, func() bool { n = g.fds(t); return n.sockets <= base.sockets && n.other <= base.other+pipeSlack }) {
		pid := strconv.Itoa(g.cmd.Process.Pid)
		ss, _ := exec.Command("ss", "-tanp").CombinedOutput()
		t.Fatalf("descriptor leak after %s: postern has %+v open descriptors, %+v before; its sockets:\n%s",
			after, n, base, strings.Join(linesWith(string(ss), "pid="+pid+","), "\n"))
	}
}
