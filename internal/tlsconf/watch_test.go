package tlsconf

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// waitMsg returns the next logged message containing want, failing the test
// after a deadline; other messages are passed to seen.
func waitMsg(t *testing.T, msgs <-chan string, want string, seen func(string)) string {
	t.Helper()
	deadline := time.NewTimer(5 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, want) {
				return m
			}
			if seen != nil {
				seen(m)
			}
		case <-deadline.C:
			t.Fatalf("no log message containing %q", want)
		}
	}
}

func TestWatch(t *testing.T) {
	dir, certFile, keyFile := selfSigned(t, "localhost")
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	first := serial(t, c)

	msgs := make(chan string, 1000)
	logf := func(msg string, args ...any) {
		select {
		case msgs <- msg + " " + fmt.Sprint(args...):
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Watch(ctx, 5*time.Millisecond, logf)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Renewal is picked up.
	if _, _, err := SelfSigned(dir, []string{"localhost"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitMsg(t, msgs, "certificate reloaded", nil)
	second := serial(t, c)
	if second == first {
		t.Fatal("Watch logged a reload but GetCertificate returns the old certificate")
	}

	// A broken key is logged once however many ticks see it, and the old
	// pair stays in service.
	mustWrite(t, keyFile, []byte("garbage"))
	failure := waitMsg(t, msgs, "reload failed", nil)
	if got := serial(t, c); got != second {
		t.Fatal("a failed reload replaced the certificate")
	}
	if _, _, err := SelfSigned(dir, []string{"localhost"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// (The renewal renames the key, then the certificate: a tick between
	// the two may log a different failure, a mismatch; that is fine.)
	failures := 0
	waitMsg(t, msgs, "certificate reloaded", func(m string) {
		if m == failure {
			failures++
		}
	})
	if failures != 0 {
		t.Errorf("the same failure was logged %d more times", failures)
	}

	// Watch returns when its context ends.
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestWatchNilLogf(t *testing.T) {
	_, certFile, keyFile := selfSigned(t, "localhost")
	c, err := Load(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Watch(ctx, 0, nil) // returns at once: ctx is done
}
