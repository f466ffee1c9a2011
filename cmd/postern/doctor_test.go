package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/postern/postern/internal/doctor"
	"github.com/postern/postern/internal/testserver"
)

// doctorPOP3 is Dovecot's POP3 behind a PROXY header, on 127.0.0.1.
func doctorPOP3(t *testing.T) string {
	t.Helper()
	addr := testserver.TCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		if _, err := proxyproto.Read(r); err == nil {
			fmt.Fprint(c, "+OK Dovecot ready.\r\n")
			if l, _ := r.ReadString('\n'); strings.TrimSpace(l) == "CAPA" {
				fmt.Fprint(c, "+OK\r\nCAPA\r\nTOP\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n")
			}
			r.ReadString('\n')
		}
	})
	return addr
}

// doctorConfig writes a configuration with pop3 in front of backend and an
// admin API socket that accepts connections (no token to read).
func doctorConfig(t *testing.T, backend string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pdc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	testserver.Unix(t, sock, nil) // reachable, says nothing
	path := filepath.Join(dir, "postern.yaml")
	text := fmt.Sprintf("services:\n  pop3: { listen: \":1110\", backend: %q }\nadmin:\n  listen: unix:%s\n  token_file: %s\n",
		backend, sock, filepath.Join(dir, "no-token"))
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDoctorCommand(t *testing.T) {
	good := doctorConfig(t, doctorPOP3(t))
	var out, errb bytes.Buffer
	if code := run([]string{"doctor", "-c", good}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"ok   pop3       Dovecot at 127.0.0.1:", "(PROXY v2)\n", "     greeting: +OK Dovecot ready.\n",
		"     AUTH offered: PLAIN LOGIN\n", "     STARTTLS offered: yes\n", "all 2 checks passed\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output without %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if code := run([]string{"doctor", "-c", good, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("--json: exit %d\n%s", code, out.String())
	}
	var rep doctor.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	if !rep.OK || len(rep.Results) != 2 || rep.Results[0].Check != "pop3" || strings.Join(rep.Results[0].Auth, " ") != "PLAIN LOGIN" {
		t.Errorf("--json: %+v", rep)
	}

	// A backend that closes after the header: exit 1 with the advice.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			proxyproto.Read(bufio.NewReader(c))
			c.Close()
		}
	}()
	defer ln.Close()
	bad := doctorConfig(t, ln.Addr().String())
	out.Reset()
	if code := run([]string{"doctor", "-c", bad}, &out, &errb); code != 1 {
		t.Fatalf("closing backend: exit %d\n%s", code, out.String())
	}
	if want := "problem: Dovecot at " + ln.Addr().String() + " closed the connection after postern's PROXY v2 header: set `haproxy_trusted_networks` to include 127.0.0.1"; !strings.Contains(out.String(), want) {
		t.Errorf("output without %q:\n%s", want, out.String())
	}
	if !strings.Contains(out.String(), "1 of 2 checks failed\n") {
		t.Errorf("no summary:\n%s", out.String())
	}

	// Usage errors and an unreadable configuration: exit 2.
	for _, args := range [][]string{
		{"doctor", "-c", good, "--no-such-flag"},
		{"doctor", "-c", good, "extra"},
		{"doctor", "-c", good, "--client", "not-an-address"},
		{"doctor", "-c", filepath.Join(t.TempDir(), "missing.yaml")},
	} {
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}
