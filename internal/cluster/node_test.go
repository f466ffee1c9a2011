package cluster

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/snapshot"
	"github.com/postern/postern/internal/store"
)

const nodeConfig = `
services:
  imap: { listen: ":143", backend: "b:143" }
  smtp: { listen: ":25", backend: "b:25" }
trusted_upstreams: "127.0.0.0/8"
intrusion_prevention:
  block_minutes: 60
  imap_pop3: { failed_logins: 5 }
  smtp: { failed_logins: 5 }
`

// node is one gateway in a test: an engine with its own SQLite store and
// its own link to the shared Redis.
type node struct {
	name string
	dir  string
	e    *guard.Engine
	db   *store.DB
	c    *Cluster
	log  *logBuffer
	addr string
}

func settings(t testing.TB, dir string) *guard.Settings {
	t.Helper()
	return settingsFrom(t, dir, nodeConfig)
}

// settingsFrom returns the engine settings of configuration text yaml.
func settingsFrom(t testing.TB, dir, yaml string) *guard.Settings {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "postern.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Build(context.Background(), cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap.Guard
}

// startNode starts node name against the Redis at addr (dir: its state;
// reused when a node restarts).
func startNode(t testing.TB, name, addr, dir string, peers ...netip.Prefix) *node {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1, ContextTimeoutEnabled: true})
	return startNodeWith(t, name, rdb, dir, peers...)
}

// startNodeWith starts node name with the Redis client rdb.
func startNodeWith(t testing.TB, name string, rdb redis.UniversalClient, dir string, peers ...netip.Prefix) *node {
	t.Helper()
	return startNodeOpts(t, name, rdb, dir, guard.Options{Peers: peers})
}

// startNodeOpts starts node name with the Redis client rdb and engine
// options (store, node, cluster and logger are set here).
func startNodeOpts(t testing.TB, name string, rdb redis.UniversalClient, dir string, opts guard.Options) *node {
	t.Helper()
	addr := ""
	if dir == "" {
		dir = t.TempDir()
	}
	n := &node{name: name, dir: dir, log: new(logBuffer), addr: addr}
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(dir, "postern.db"))
	if err != nil {
		t.Fatal(err)
	}
	n.db = db
	n.c, err = New(Options{Client: rdb, Node: name, Timeout: time.Second, StatePath: filepath.Join(dir, "cluster.state"),
		Logger: n.log.logger().With("node", name)})
	if err != nil {
		t.Fatal(err)
	}
	opts.Store, opts.Node, opts.Cluster, opts.Logger = db, name, n.c, n.log.logger()
	n.e, err = guard.New(ctx, settings(t, dir), opts)
	if err != nil {
		t.Fatal(err)
	}
	n.c.Start(n.e)
	t.Cleanup(n.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, n.log.String())
		}
	})
	return n
}

func (n *node) stop() {
	if n.c != nil {
		n.c.Close()
		n.c = nil
	}
	if n.e != nil {
		n.e.Close()
		n.e = nil
	}
	if n.db != nil {
		n.db.Close()
		n.db = nil
	}
}

// failLogins reports k failed IMAP logins from addr, each with another
// wrong password.
func (n *node) failLogins(t testing.TB, addr string, k int) {
	t.Helper()
	a := netip.MustParseAddr(addr)
	for i := range k {
		s, v := n.e.Accept(a, service.IMAP, func() {})
		if s == nil {
			t.Fatalf("%s: connection from %s refused before login %d: %+v", n.name, addr, i+1, v)
		}
		s.LoginFailed("user@example.com", n.e.PasswordFingerprint("user@example.com", n.name+"-guess-"+string(rune('a'+i))))
		s.Close()
	}
}

func (n *node) refuses(addr string) bool {
	return n.e.Admit(netip.MustParseAddr(addr), service.IMAP).Action == guard.Refuse
}

// syncState waits until the node's sender has nothing queued.
func (n *node) idle() bool { return n.c.Pending() == 0 }

// caughtUp reports whether the node has read the cluster once (its stream
// position is saved).
func (n *node) caughtUp() bool { return exists(filepath.Join(n.dir, "cluster.state")) }

func exists(path string) bool { _, err := os.Stat(path); return err == nil }
