package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// ---- Python smtplib (testdata/smtpc.py) --------------------------------

// step is one step of a smtpc.py script.
type step map[string]any

func ehlo() step     { return step{"op": "ehlo"} }
func starttls() step { return step{"op": "starttls"} }
func rset() step     { return step{"op": "rset"} }
func noop() step     { return step{"op": "noop"} }
func quit() step     { return step{"op": "quit"} }
func auth(mech, user, pass string) step {
	return step{"op": "auth", "mech": mech, "user": user, "pass": pass}
}
func mail(from string, opts ...string) step { return step{"op": "mail", "from": from, "opts": opts} }
func rcpt(to string, opts ...string) step   { return step{"op": "rcpt", "to": to, "opts": opts} }
func data(file string) step                 { return step{"op": "data", "file": file} }
func bdat(file string, chunks ...int) step  { return step{"op": "bdat", "file": file, "chunks": chunks} }

// pyReply is what smtpc.py reports for one step.
type pyReply struct {
	Op    string `json:"op"`
	Code  int    `json:"code"`
	Msg   string `json:"msg"`
	Error string `json:"error"`
}

func (r pyReply) String() string {
	if r.Error != "" {
		return r.Op + ": " + r.Error
	}
	return fmt.Sprintf("%s: %d %s", r.Op, r.Code, strings.ReplaceAll(r.Msg, "\n", " | "))
}

// session is a smtpc.py run: the replies in order.
type session []pyReply

func (s session) String() string {
	var b strings.Builder
	for _, r := range s {
		b.WriteString("\n  " + r.String())
	}
	return b.String()
}

// reply returns the i-th reply; op "error" if the client stopped before.
func (s session) reply(i int) pyReply {
	if i < len(s) {
		return s[i]
	}
	if len(s) > 0 && s[len(s)-1].Op == "error" {
		return s[len(s)-1]
	}
	return pyReply{Op: "error", Error: "no reply"}
}

// python runs smtpc.py against addr as the client src (implicit TLS when
// implicit) and returns its replies: the greeting first, then one per step.
func python(t testing.TB, addr string, src netip.AddrPort, implicit bool, steps ...step) session {
	t.Helper()
	spec := map[string]any{"addr": addr, "src": src.Addr().String(), "sport": src.Port(), "steps": steps}
	if implicit {
		spec["tls"] = "implicit"
	}
	in, _ := json.Marshal(spec)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", filepath.Join(testdataDir(t), "smtpc.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("smtpc.py: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	var out session
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("smtpc.py output: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	return out
}

func testdataDir(t testing.TB) string {
	t.Helper()
	if moduleRoot == "" {
		t.Fatal("module root unknown")
	}
	return filepath.Join(moduleRoot, "test", "e2e", "testdata")
}

// ---- swaks ---------------------------------------------------------------

// swaksRun is one swaks run: its exit status and transcript.
type swaksRun struct {
	code int
	out  string
}

// replies returns the server lines of the transcript ("<-  250 ...",
// "<~  ..." over TLS, "<** ..."/"<~* ..." for failures), without the
// markers.
func (r swaksRun) replies() []string {
	var out []string
	for _, l := range strings.Split(r.out, "\n") {
		for _, p := range []string{"<-  ", "<~  ", "<** ", "<~* "} {
			if rest, ok := strings.CutPrefix(l, p); ok {
				out = append(out, strings.TrimRight(rest, "\r"))
			}
		}
	}
	return out
}

// has reports whether a server line starts with prefix.
func (r swaksRun) has(prefix string) bool {
	for _, l := range r.replies() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// swaks runs swaks against addr with a PROXY v2 header claiming src, plus
// args (--tls, --tlsc, --auth ..., --pipeline, --data @file ...).
func swaks(t testing.TB, addr string, src netip.AddrPort, args ...string) swaksRun {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	family, dst := "AF_INET", "127.0.0.1"
	if src.Addr().Is6() {
		family, dst = "AF_INET6", "::1"
	}
	all := []string{"--server", host, "--port", port, "--timeout", "20",
		"--proxy-version", "2", "--proxy-family", family,
		"--proxy-source", src.Addr().String(), "--proxy-source-port", strconv.Itoa(int(src.Port())),
		"--proxy-dest", dst, "--proxy-dest-port", port,
		"--ehlo", "client.e2e.test"}
	all = append(all, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "swaks", all...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		code = ee.ExitCode()
	}
	return swaksRun{code: code, out: string(out)}
}

// ---- raw SMTP over a socket, for input no real client sends --------------

// rawConn is a client connection that has sent its PROXY v2 header.
type rawConn struct {
	t testing.TB
	net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string, src netip.AddrPort) *rawConn {
	t.Helper()
	return dialRawSaying(t, addr, src, "")
}

// dialRawSaying is dialRaw that sends first in the same write as the PROXY
// header: bytes a client sends before the greeting, there however busy the
// machine running the test is.
func dialRawSaying(t testing.TB, addr string, src netip.AddrPort, first string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(append(testenv.ProxyV2Header(src, c.RemoteAddr().(*net.TCPAddr).AddrPort()), first...)); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// reply reads one reply, all its lines joined by "\n"; "" and the error on
// a closed connection.
func (c *rawConn) reply() (string, error) {
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// mustReply reads a reply and checks that it starts with prefix.
func (c *rawConn) mustReply(prefix string) string {
	c.t.Helper()
	r, err := c.reply()
	if err != nil || !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("reply %q (err %v), want %q…", r, err, prefix)
	}
	return r
}

// send writes raw bytes.
func (c *rawConn) send(b string) {
	c.t.Helper()
	if _, err := c.Write([]byte(b)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// cmd sends a command line and checks the reply's prefix.
func (c *rawConn) cmd(line, want string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.mustReply(want)
}

// closed reports whether the server closed the connection (within 10s).
func (c *rawConn) closed() bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, err := c.r.ReadByte()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return false
			}
			return true
		}
	}
}

// ---- messages and files ---------------------------------------------------

// writeFile writes a message into the test's temporary folder.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// crlf turns "\n" line ends into "\r\n".
func crlf(s string) []byte {
	return []byte(strings.ReplaceAll(s, "\n", "\r\n"))
}

// addr returns src:40000-style client addresses.
func ap(s string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(s), port)
}
