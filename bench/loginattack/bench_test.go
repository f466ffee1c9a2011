package loginattack

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// BenchmarkAttack guesses passwords over IMAP at 10, 50 and 200 attempts
// per second, one attempt per new connection, each from the same address,
// for 5 seconds, against real Dovecot through postern (failed_logins: 5).
// It reports the wrong passwords Dovecot checked beyond the threshold
// ("beyond-threshold", goal 0, read from Dovecot's log), the time from the
// attempt that reached the threshold being sent to the block
// ("ms-sent-to-block"), and how long before that attempt's answer reached
// the attacker the block was already in force ("ms-block-before-answer").
//
//	sudo POSTERN_E2E=1 go test -run '^$' -bench Attack -benchtime 1x ./bench/loginattack/
func BenchmarkAttack(b *testing.B) {
	env := testenv.Backends(b)
	for i, rate := range []int{10, 50, 200} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			for range b.N {
				attack(b, env, rate, fmt.Sprintf("127.0.4.%d", 10+i))
			}
		})
	}
}

type attempt struct {
	sent, answered time.Time
	answer         string
}

func attack(b *testing.B, env *testenv.Env, rate int, src string) {
	g := startGateway(b, env)
	mark := env.LogMark(b, "dovecot")
	const duration = 5 * time.Second
	n := rate * int(duration/time.Second)

	var blockedAt atomic.Int64
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		t := time.NewTicker(200 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if _, ok := g.eng.BlockOf(netipOf(src)); ok {
					blockedAt.Store(time.Now().UnixNano())
					return
				}
			}
		}
	})

	attempts := make([]attempt, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	start := time.Now()
	for i := range n {
		if i > 0 {
			<-tick.C
		}
		wg.Go(func() {
			a := &attempts[i]
			a.sent = time.Now()
			c, err := dial(g.imap, src)
			if err != nil {
				a.answer = "dial: " + err.Error()
				return
			}
			defer c.c.Close()
			if l := c.line(); !strings.HasPrefix(l, "* OK") {
				a.answer, a.answered = "greeting: "+l, time.Now()
				return
			}
			a.sent = time.Now()
			a.answer = c.imapLogin("alice@example.test", fmt.Sprintf("guess%d", i))
			a.answered = time.Now()
		})
	}
	tick.Stop()
	wg.Wait()
	close(stop)
	watch.Wait()
	elapsed := time.Since(start)

	checked := failures(b, env, mark, src)
	// The attempts postern counted as failed, in the order they were
	// answered: the threshold-th is the one that blocked.
	var failed []attempt
	kinds := map[string]int{}
	for _, a := range attempts {
		switch {
		case strings.HasPrefix(a.answer, "a NO"):
			failed = append(failed, a)
			kinds["failed"]++
		case strings.HasPrefix(a.answer, "* BYE [UNAVAILABLE]"):
			// Dovecot dropped the login in its failure delay (its
			// connection queue was full): postern counts it as failed.
			failed = append(failed, a)
			kinds["dropped by Dovecot, counted as failed"]++
		case strings.HasPrefix(a.answer, "greeting: * BYE Blocked"):
			kinds["refused at connect"]++
		case strings.HasPrefix(a.answer, "* BYE Blocked"):
			kinds["refused at login"]++
		default:
			kinds["other: "+a.answer]++
		}
	}
	slices.SortFunc(failed, func(x, y attempt) int { return x.answered.Compare(y.answered) })
	b.ReportMetric(float64(checked-threshold), "beyond-threshold")
	if len(failed) >= threshold && blockedAt.Load() != 0 {
		t5 := failed[threshold-1]
		blocked := time.Unix(0, blockedAt.Load())
		b.ReportMetric(float64(blocked.Sub(t5.sent).Microseconds())/1000, "ms-sent-to-block")
		b.ReportMetric(float64(t5.answered.Sub(blocked).Microseconds())/1000, "ms-block-before-answer")
	}
	if checked > threshold {
		shown := 0
		for _, l := range strings.Split(string(dovecotLog(b, env, mark)), "\n") {
			if strings.Contains(l, src) && !strings.Contains(l, "Password mismatch") && !strings.Contains(l, "auth failed") && shown < 15 {
				b.Logf("dovecot: %s", l)
				shown++
			}
		}
	}
	b.Logf("rate %d/s: %d attempts in %v; Dovecot checked %d wrong passwords (threshold %d); answers %v",
		rate, n, elapsed.Round(time.Millisecond), checked, threshold, kinds)
}

func netipOf(s string) netip.Addr { return netip.MustParseAddr(s) }
