package cluster

import (
	"bytes"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/cluster/redistest"
)

// startRedis starts redis-server (see redistest).
func startRedis(t testing.TB) *redisServer { return &redisServer{redistest.Start(t)} }

type redisServer struct{ *redistest.Server }

func (r *redisServer) addr() string                      { return r.Addr() }
func (r *redisServer) kill()                             { r.Kill() }
func (r *redisServer) start()                            { r.Restart() }
func (r *redisServer) client(t testing.TB) *redis.Client { return r.Client(t) }

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var _ = fmt.Sprint

type redisXAdd struct {
	stream string
	values map[string]any
}

func (x redisXAdd) args() *redis.XAddArgs {
	return &redis.XAddArgs{Stream: x.stream, Values: x.values}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
