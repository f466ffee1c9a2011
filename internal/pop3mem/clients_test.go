package pop3mem

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// poplibResult is what testdata/poplib_client.py prints.
type poplibResult struct {
	Welcome     string   `json:"welcome"`
	Capa        []string `json:"capa"`
	CapaTLS     []string `json:"capa_tls"`
	WrongPass   string   `json:"wrong_pass"`
	Pass        string   `json:"pass"`
	Stat        []int    `json:"stat"`
	List        []string `json:"list"`
	UIDL        []string `json:"uidl"`
	UIDL1       string   `json:"uidl1"`
	Retr        []string `json:"retr"`
	Top         string   `json:"top"`
	RetrDeleted string   `json:"retr_deleted"`
	Rset        string   `json:"rset"`
	Quit        string   `json:"quit"`
}

func TestPoplib(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	serverTLS, _, certFile := selfSigned(t)
	for _, tc := range []struct {
		name string
		opts Options
		ca   []string
	}{
		{"plaintext allowed", Options{AllowPlaintextAuth: true}, nil},
		{"STLS", Options{TLS: serverTLS}, []string{certFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, tc.opts)
			host, port, _ := net.SplitHostPort(srv.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"testdata/poplib_client.py", host, port, "alice", "pw"}, tc.ca...)
			cmd := exec.CommandContext(ctx, python, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("poplib client: %v\n%s", err, stderr.String())
			}
			var r poplibResult
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("poplib client output %q: %v", out, err)
			}

			msgs := []string{msg1, msgDots, msgLFN}
			total := len(msg1) + len(msgDots) + len(msgLFN)
			if r.Welcome != "+OK pop3mem POP3 ready." {
				t.Errorf("welcome %q", r.Welcome)
			}
			capa := r.Capa
			if tc.ca != nil {
				if !slices.Contains(r.Capa, "STLS") || slices.Contains(r.Capa, "USER") {
					t.Errorf("capa before STLS %q", r.Capa)
				}
				capa = r.CapaTLS
			}
			if want := []string{"AUTH-RESP-CODE", "PIPELINING", "RESP-CODES", "SASL", "TOP", "UIDL", "USER"}; !slices.Equal(capa, want) {
				t.Errorf("capa %q, want %q", capa, want)
			}
			if r.WrongPass != "-ERR [AUTH] Authentication failed." {
				t.Errorf("wrong password: %q", r.WrongPass)
			}
			if r.Pass != "+OK Logged in." {
				t.Errorf("pass: %q", r.Pass)
			}
			if !slices.Equal(r.Stat, []int{3, total}) {
				t.Errorf("stat %v", r.Stat)
			}
			if want := []string{fmt.Sprintf("1 %d", len(msg1)), fmt.Sprintf("2 %d", len(msgDots)), fmt.Sprintf("3 %d", len(msgLFN))}; !slices.Equal(r.List, want) {
				t.Errorf("list %q, want %q", r.List, want)
			}
			if len(r.UIDL) != 3 || r.UIDL1 != "+OK "+r.UIDL[0] {
				t.Errorf("uidl %q, uidl 1 %q", r.UIDL, r.UIDL1)
			}
			if len(r.Retr) != 3 {
				t.Fatalf("retr: %d messages", len(r.Retr))
			}
			for i, m := range msgs {
				if got := unb64(t, r.Retr[i]); got != m {
					t.Errorf("retr %d: %q, want %q", i+1, got, m)
				}
			}
			if got, want := unb64(t, r.Top), "Subject: dots\r\n\r\n.leading dot\r\n"; got != want {
				t.Errorf("top 2 1: %q, want %q", got, want)
			}
			if r.RetrDeleted != "-ERR Message is deleted." {
				t.Errorf("retr of a deleted message: %q", r.RetrDeleted)
			}
			if !strings.HasPrefix(r.Rset, "+OK") || r.Quit != "+OK Logging out." {
				t.Errorf("rset %q, quit %q", r.Rset, r.Quit)
			}
			if got := srv.Messages("alice"); len(got) != 2 || string(got[0]) != msg1 || string(got[1]) != msgDots {
				t.Errorf("after QUIT: %q", got)
			}
			l := srv.Logins()
			if len(l) != 2 || l[0].OK || !l[1].OK || l[1].TLS != (tc.ca != nil) {
				t.Errorf("Logins: %+v", l)
			}
		})
	}
}

func unb64(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	serverTLS, _, certFile := selfSigned(t)
	srv := startServer(t, Options{TLS: serverTLS, AllowPlaintextAuth: true})
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, curl, append([]string{"-sS", "--max-time", "20"}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("curl %q: %v\n%s", args, err, stderr.String())
		}
		return string(out)
	}
	url := "pop3://" + srv.addr
	if got := run(url+"/1", "-u", "alice:pw"); got != msg1 {
		t.Errorf("curl RETR 1: %q, want %q", got, msg1)
	}
	if got := run(url+"/2", "-u", "alice:pw"); got != msgDots {
		t.Errorf("curl RETR 2: %q, want %q", got, msgDots)
	}
	if got, want := run(url+"/", "-u", "alice:pw"), fmt.Sprintf("1 %d\r\n2 %d\r\n3 %d\r\n", len(msg1), len(msgDots), len(msgLFN)); got != want {
		t.Errorf("curl LIST: %q, want %q", got, want)
	}
	if got := run("--ssl-reqd", "--cacert", certFile, url+"/3", "-u", "alice:pw"); got != msgLFN {
		t.Errorf("curl over STLS RETR 3: %q, want %q", got, msgLFN)
	}
	l := srv.Logins()
	if len(l) != 4 || !l[3].TLS || l[0].TLS {
		t.Errorf("Logins: %+v", l)
	}
	for _, r := range l {
		if !r.OK || r.User != "alice" {
			t.Errorf("login %+v", r)
		}
	}
}
