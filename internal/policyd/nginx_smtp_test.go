package policyd

import (
	"bufio"
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"testing"
)

// submission is a fake Postfix submission port with Dovecot SASL behind a
// PROXY v1 header: it offers AUTH PLAIN after EHLO (none when noAuth) and
// records every login it is asked.
func (f *fakeMail) submission(c net.Conn) {
	r := bufio.NewReader(c)
	client, ok := proxyClient(r)
	if !ok {
		return
	}
	c.Write([]byte("220 mail.example.com ESMTP Postfix\r\n"))
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "EHLO ") {
		c.Write([]byte("503 5.5.1 Error: send HELO/EHLO first\r\n"))
		return
	}
	f.mu.Lock()
	noAuth := f.noAuth
	f.mu.Unlock()
	if noAuth {
		c.Write([]byte("250-mail.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n"))
	} else {
		c.Write([]byte("250-mail.example.com\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"))
	}
	l, _ := r.ReadString('\n')
	blob, ok := strings.CutPrefix(strings.TrimRight(l, "\r\n"), "AUTH PLAIN ")
	if !ok {
		c.Write([]byte("502 5.5.2 Error: command not recognized\r\n"))
		return
	}
	b, _ := base64.StdEncoding.DecodeString(blob)
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 || parts[0] != "" || !f.record(client, parts[1], parts[2]) {
		c.Write([]byte("535 5.7.8 Error: authentication failed: authentication failure\r\n"))
	} else {
		c.Write([]byte("235 2.7.0 Authentication successful\r\n"))
	}
	if l, _ := r.ReadString('\n'); l == "QUIT\r\n" {
		c.Write([]byte("221 2.0.0 Bye\r\n"))
	}
}

func TestNginxSMTPOK(t *testing.T) {
	s := newNginxSetup(t)
	code, h := ngxAsk(t, s.url, "smtp", "bob@example.com", "right pw", "127.3.4.5", "1")
	if code != 200 || h.Get("Auth-Status") != "OK" || h.Get("Auth-Server") != "127.0.0.1" || h.Get("Auth-Port") != strconv.Itoa(int(s.smtpAddr.Port())) {
		t.Fatalf("smtp: %d %v", code, h)
	}
	if a := s.smtp.asked(); len(a) != 1 || a[0] != (fakeLogin{"127.3.4.5", "bob@example.com", "right pw"}) {
		t.Errorf("the backend was asked %v, want one login naming the client", a)
	}
	if n := len(s.imap.asked()) + len(s.pop3.asked()); n != 0 {
		t.Errorf("%d logins asked of the IMAP and POP3 backends", n)
	}
}

func TestNginxSMTPWrongPasswordBlocks(t *testing.T) {
	s := newNginxSetup(t)
	// failed_logins: 3 for SMTP; different wrong passwords each count once.
	for i := range 3 {
		code, h := ngxAsk(t, s.url, "smtp", "bob@example.com", "wrong "+string(rune('a'+i)), "127.7.7.7", "1")
		if code != 200 || h.Get("Auth-Status") == "OK" || h.Get("Auth-Server") != "" {
			t.Fatalf("wrong password %d: %d %v", i, code, h)
		}
		if i < 2 && (h.Get("Auth-Status") != ngxInvalid || h.Get("Auth-Wait") == "") {
			t.Errorf("wrong password %d: %v, want %q with Auth-Wait", i, h, ngxInvalid)
		}
		if i == 2 && (!strings.HasPrefix(h.Get("Auth-Status"), "Blocked") || h.Get("Auth-Wait") != "") {
			t.Errorf("the failure at the threshold: %v, want the block's refusal without Auth-Wait", h)
		}
	}
	if !blocked(s.eng, "127.7.7.7") {
		t.Fatal("3 wrong passwords did not block the address")
	}
	code, h := ngxAsk(t, s.url, "smtp", "bob@example.com", "right pw", "127.7.7.7", "1")
	if code != 200 || !strings.HasPrefix(h.Get("Auth-Status"), "Blocked") || h.Get("Auth-Wait") != "" {
		t.Errorf("the right password from a blocked address: %d %v", code, h)
	}
	if n := len(s.smtp.asked()); n != 3 {
		t.Errorf("the backend was asked %d logins, want 3 (none once blocked)", n)
	}
	if _, h := ngxAsk(t, s.url, "smtp", "bob@example.com", "right pw", "127.7.7.8", "1"); h.Get("Auth-Status") != "OK" {
		t.Errorf("another address: %v", h)
	}
}

func TestNginxSMTPRestricted(t *testing.T) {
	s := newNginxSetup(t)
	// alice may log in from 127.0.0.0/16 only.
	if _, h := ngxAsk(t, s.url, "smtp", "alice@example.com", "alice pw", "127.0.9.9", "1"); h.Get("Auth-Status") != "OK" {
		t.Fatalf("alice from her network: %v", h)
	}
	_, h := ngxAsk(t, s.url, "smtp", "alice@example.com", "alice pw", "127.9.9.9", "1")
	if h.Get("Auth-Status") != ngxInvalid || h.Get("Auth-Server") != "" {
		t.Errorf("alice from elsewhere with the right password: %v, want %q", h, ngxInvalid)
	}
	a := s.smtp.asked()
	if len(a) != 2 || a[1].user != "alice@example.com" || a[1].pass == "alice pw" {
		t.Errorf("the restricted login reached the backend as %v, want a decoy password", a)
	}
	// It counted as a failed login (L): two more failures block.
	for i := range 2 {
		ngxAsk(t, s.url, "smtp", "bob@example.com", "wrong "+string(rune('a'+i)), "127.9.9.9", "1")
	}
	if !blocked(s.eng, "127.9.9.9") {
		t.Error("the restricted login did not count as a failed login")
	}
}

// A backend that offers no AUTH to postern (Postfix with
// smtpd_tls_auth_only) is not sent the password: a temporary failure,
// not counted.
func TestNginxSMTPNoAuthOffered(t *testing.T) {
	s := newNginxSetup(t)
	s.smtp.mu.Lock()
	s.smtp.noAuth = true
	s.smtp.mu.Unlock()
	for i := range 4 {
		_, h := ngxAsk(t, s.url, "smtp", "bob@example.com", "wrong "+strconv.Itoa(i), "127.5.5.5", "1")
		if h.Get("Auth-Status") != ngxTemporary || h.Get("Auth-Server") != "" {
			t.Fatalf("try %d: %v, want %q", i, h, ngxTemporary)
		}
	}
	if blocked(s.eng, "127.5.5.5") || len(s.smtp.asked()) != 0 {
		t.Error("logins the backend was never asked counted as failed")
	}
}

// A login CheckLogin cannot send as the gateway would is refused
// uncounted, the backend not asked.
func TestNginxSMTPNotReplayable(t *testing.T) {
	s := newNginxSetup(t)
	for i := range 4 {
		_, h := ngxAsk(t, s.url, "smtp", "bob@example.com", strings.Repeat("x", 1500)+strconv.Itoa(i), "127.5.5.6", "1")
		if h.Get("Auth-Status") != ngxInvalid {
			t.Fatalf("try %d: %v", i, h)
		}
	}
	if blocked(s.eng, "127.5.5.6") || len(s.smtp.asked()) != 0 {
		t.Error("an overlong login was sent or counted")
	}
}
