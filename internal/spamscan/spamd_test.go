package spamscan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSpamd accepts connections on 127.0.0.1, reads one SPAMC request
// each, hands it to answer and writes back what answer returns.
func fakeSpamd(t *testing.T, answer func(cmd string, headers map[string]string, body string) string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(conn)
				cmd, _ := r.ReadString('\n')
				headers := map[string]string{}
				for range 20 {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
					k, v, _ := strings.Cut(strings.TrimRight(line, "\r\n"), ": ")
					headers[k] = v
				}
				n, _ := strconv.Atoi(headers["Content-length"])
				body := make([]byte, n)
				io.ReadFull(r, body)
				io.WriteString(conn, answer(strings.TrimRight(cmd, "\r\n"), headers, string(body)))
			})
		}
	})
	return ln.Addr().String()
}

func TestSpamd(t *testing.T) {
	addr := fakeSpamd(t, func(cmd string, h map[string]string, body string) string {
		if cmd != "SYMBOLS SPAMC/1.5" || body != testMessage {
			return "SPAMD/1.5 76 EX_PROTOCOL\r\n\r\n"
		}
		syms := "BAYES_99,GTUBE, MISSING_DATE,\r\n"
		return fmt.Sprintf("SPAMD/1.1 0 EX_OK\r\nContent-length: %d\r\nSpam: True ; 1015.3 / 5.0\r\n\r\n%s", len(syms), syms)
	})
	s := NewSpamd(addr, time.Second)
	if s.Name() != "spamd" {
		t.Errorf("Name = %q", s.Name())
	}
	v, err := s.Scan(context.Background(), testMsg(testMessage))
	if err != nil {
		t.Fatal(err)
	}
	if v.Score != 1015.3 || v.Threshold != 5 || v.Action != "" || !slices.Equal(v.Symbols, []string{"BAYES_99", "GTUBE", "MISSING_DATE"}) {
		t.Errorf("verdict %+v", v)
	}
}

func TestSpamdErrors(t *testing.T) {
	for _, tc := range []struct{ name, answer, want string }{
		{"error status", "SPAMD/1.1 74 EX_TEMPFAIL\r\n\r\n", "EX_TEMPFAIL"},
		{"not spamd", "HTTP/1.1 400 Bad Request\r\n\r\n", "bad status line"},
		{"no Spam header", "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "without a Spam header"},
		{"bad Spam header", "SPAMD/1.1 0 EX_OK\r\nSpam: maybe\r\n\r\n", "bad Spam header"},
		{"bad score", "SPAMD/1.1 0 EX_OK\r\nSpam: True ; x / 5\r\n\r\n", "bad Spam header"},
		{"bad length", "SPAMD/1.1 0 EX_OK\r\nContent-length: -3\r\nSpam: False ; 1 / 5\r\n\r\n", "bad Content-length"},
		{"truncated", "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1", "unexpected EOF"},
		{"empty", "", "unexpected EOF"},
		{"line too long", "SPAMD/1.1 0 EX_OK\r\nX: " + strings.Repeat("x", 5000) + "\r\n\r\n", "line too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeSpamd(t, func(string, map[string]string, string) string { return tc.answer })
			_, err := NewSpamd(addr, time.Second).Scan(context.Background(), testMsg(testMessage))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	if _, err := NewSpamd("127.0.0.1:1", time.Second).Scan(context.Background(), testMsg(testMessage)); err == nil {
		t.Error("no error from a closed port")
	}
	if _, err := NewSpamd("127.0.0.1:1", time.Second).Scan(context.Background(), Message{}); err == nil {
		t.Error("no error for a message without a body")
	}
}

func TestSpamdTimeout(t *testing.T) {
	release := make(chan struct{})
	addr := fakeSpamd(t, func(string, map[string]string, string) string {
		<-release
		return ""
	})
	t.Cleanup(func() { close(release) }) // before fakeSpamd's cleanup waits for the handler
	const timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := NewSpamd(addr, timeout).Scan(context.Background(), testMsg(testMessage))
	if elapsed := time.Since(start); elapsed > timeout+400*time.Millisecond {
		t.Errorf("Scan took %v with a %v timeout", elapsed, timeout)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want a deadline error", err)
	}
}
