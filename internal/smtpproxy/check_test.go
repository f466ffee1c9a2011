package smtpproxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/internal/gate"
	"github.com/postern/postern/internal/testserver"
	"github.com/postern/postern/internal/tlsconf"
)

// checkWith runs CheckLogin against a scripted backend that answers the
// greeting, EHLO and AUTH with the given replies, and returns the outcome,
// the lines the backend read and the error.
func checkWith(t *testing.T, xclient netip.Addr, answers ...string) (gate.Outcome, []string, error) {
	t.Helper()
	c, be := net.Pipe()
	lines := make(chan []string, 1)
	go func() {
		defer be.Close()
		be.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(be)
		var got []string
		defer func() { lines <- got }()
		for _, answer := range append(answers, "") {
			if answer != "" {
				if _, err := be.Write([]byte(answer)); err != nil {
					return
				}
			}
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			got = append(got, l)
		}
	}()
	o, err := CheckLogin(c, CheckOptions{Timeout: 2 * time.Second, Helo: "gw.example", XClient: xclient}, "bob@example.com", "pw")
	c.Close()
	return o, <-lines, err
}

func TestCheckLogin(t *testing.T) {
	const ehlo = "250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"
	blob := base64.StdEncoding.EncodeToString([]byte("\x00bob@example.com\x00pw"))
	for _, tc := range []struct {
		name              string
		greet, ehlo, auth string
		want              gate.Outcome
		wantErr           bool
		sent              int // lines the backend read
	}{
		{"accepted", "220 mx\r\n", ehlo, "235 2.7.0 ok\r\n", gate.Accepted, false, 3},
		{"rejected", "220 mx\r\n", ehlo, "535 5.7.8 failed\r\n", gate.Rejected, false, 3},
		{"temporary", "220 mx\r\n", ehlo, "454 4.7.0 try later\r\n", gate.Answered, false, 3},
		{"garbage after the password", "220 mx\r\n", ehlo, "HTTP/1.1 200\r\n", gate.Unexpected, true, 2},
		{"no AUTH offered", "220 mx\r\n", "250-mx\r\n250 8BITMIME\r\n", "", gate.Answered, true, 1},
		{"greeting refused", "554 no\r\n", "", "", gate.Answered, true, 0},
	} {
		o, lines, err := checkWith(t, netip.Addr{}, tc.greet, tc.ehlo, tc.auth)
		if o != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: %v %v, want %v (error %v)", tc.name, o, err, tc.want, tc.wantErr)
		}
		if len(lines) < tc.sent {
			t.Errorf("%s: the backend read %q", tc.name, lines)
			continue
		}
		if tc.sent >= 1 && lines[0] != "EHLO gw.example\r\n" {
			t.Errorf("%s: first line %q", tc.name, lines[0])
		}
		if tc.sent >= 2 && lines[1] != "AUTH PLAIN "+blob+"\r\n" {
			t.Errorf("%s: AUTH line %q", tc.name, lines[1])
		}
		if tc.sent >= 3 && lines[2] != "QUIT\r\n" {
			t.Errorf("%s: after AUTH %q, want QUIT", tc.name, lines[2])
		}
		if tc.sent < 2 {
			for _, l := range lines {
				if strings.HasPrefix(l, "AUTH") {
					t.Errorf("%s: the password was sent", tc.name)
				}
			}
		}
	}
	// XCLIENT names the client before the login; the backend greets anew.
	o, lines, err := checkWith(t, netip.MustParseAddr("192.0.2.7"), "220 mx\r\n", "250-mx\r\n250 XCLIENT ADDR PORT NAME\r\n", "220 mx again\r\n", ehlo, "235 2.7.0 ok\r\n")
	want := []string{"EHLO gw.example\r\n", "XCLIENT ADDR=192.0.2.7 PORT=0 NAME=[UNAVAILABLE]\r\n", "EHLO gw.example\r\n", "AUTH PLAIN " + blob + "\r\n", "QUIT\r\n"}
	if o != gate.Accepted || err != nil || strings.Join(lines, "") != strings.Join(want, "") {
		t.Errorf("xclient: %v %v, backend read %q", o, err, lines)
	}
	// A backend that does not offer XCLIENT is not sent the password.
	o, lines, err = checkWith(t, netip.MustParseAddr("192.0.2.7"), "220 mx\r\n", ehlo)
	if o != gate.Answered || err == nil || len(lines) != 1 {
		t.Errorf("no XCLIENT: %v %v, backend read %q", o, err, lines)
	}
	if Replayable("bob@example.com", "a\rb") || Replayable("bob\x01", "p") || Replayable("bob@example.com", strings.Repeat("p", 1500)) || !Replayable("bob@example.com", "p w") {
		t.Error("Replayable")
	}
}

// With TLS, CheckLogin starts TLS with STARTTLS first and sends the
// password only over it.
func TestCheckLoginSTARTTLS(t *testing.T) {
	certFile, keyFile, err := tlsconf.SelfSigned(t.TempDir(), []string{"mx.example.test"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsconf.Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(pem)
	c, be := net.Pipe()
	got := make(chan []string, 1)
	go func() {
		defer be.Close()
		be.SetDeadline(time.Now().Add(5 * time.Second))
		var lines []string
		defer func() { got <- lines }()
		var conn net.Conn = be
		r := bufio.NewReader(conn)
		step := func(answer string) bool {
			l, err := r.ReadString('\n')
			if err != nil {
				return false
			}
			lines = append(lines, l)
			if answer != "" {
				_, err = conn.Write([]byte(answer))
			}
			return err == nil
		}
		be.Write([]byte("220 mx\r\n"))
		if !step("250-mx\r\n250 STARTTLS\r\n") || !step("220 2.0.0 Ready to start TLS\r\n") {
			return
		}
		tc := tls.Server(be, certs.ServerConfig())
		if tc.Handshake() != nil {
			return
		}
		conn, r = tc, bufio.NewReader(tc)
		lines = append(lines, "(TLS)\r\n")
		if step("250-mx\r\n250 AUTH PLAIN\r\n") && step("235 2.7.0 ok\r\n") {
			step("")
		}
	}()
	o, err := CheckLogin(c, CheckOptions{Timeout: 2 * time.Second, Helo: "gw.example", TLS: &tls.Config{ServerName: "mx.example.test", RootCAs: pool}}, "bob@example.com", "pw")
	c.Close()
	lines := <-got
	blob := base64.StdEncoding.EncodeToString([]byte("\x00bob@example.com\x00pw"))
	want := "EHLO gw.example\r\nSTARTTLS\r\n(TLS)\r\nEHLO gw.example\r\nAUTH PLAIN " + blob + "\r\nQUIT\r\n"
	if o != gate.Accepted || err != nil || strings.Join(lines, "") != want {
		t.Errorf("STARTTLS: %v %v, backend read %q", o, err, lines)
	}

	// A certificate the configuration does not trust: the password is not
	// sent. Over TCP: on a synchronous pipe the client's alert and the
	// server's unread flight would wait for each other.
	addr := testserver.TCP(t, func(be net.Conn) {
		be.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(be)
		be.Write([]byte("220 mx\r\n"))
		r.ReadString('\n')
		be.Write([]byte("250-mx\r\n250 STARTTLS\r\n"))
		r.ReadString('\n')
		be.Write([]byte("220 2.0.0 Ready to start TLS\r\n"))
		tc := tls.Server(be, certs.ServerConfig())
		tc.Handshake()
		if l, _ := bufio.NewReader(tc).ReadString('\n'); l != "" {
			t.Errorf("the backend read %q over an untrusted TLS session", l)
		}
	})
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	o, err = CheckLogin(c, CheckOptions{Timeout: 2 * time.Second, Helo: "gw.example", TLS: &tls.Config{ServerName: "mx.example.test"}}, "bob@example.com", "pw")
	c.Close()
	if o != gate.Answered || err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v %v", o, err)
	}
}
