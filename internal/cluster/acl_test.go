package cluster

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/passes"
	"github.com/postern/postern/internal/policy"
	"github.com/postern/postern/internal/store"
)

// aclRules is the ACL of docs/CLUSTER.md and examples/cluster/users.acl:
// only the commands postern sends (and those its scripts call), only its
// key prefix.
const aclRules = "~postern:* &postern:* -@all +evalsha +eval +script|load +xread +xrange +xrevrange +zrangebyscore +zremrangebyscore +mget +unlink +hello " +
	"+set +del +exists +incrby +pexpire +pttl +zadd +zrem +zrange +xadd +sadd +hset +hdel +hgetall +publish +subscribe +ping"

// TestACLUserWithOnlyNeededCommands: two nodes logged in as an ACL user
// with only aclRules share blocks, counts and unblocks; nothing is refused.
func TestACLUserWithOnlyNeededCommands(t *testing.T) {
	r := startRedis(t)
	rc := r.client(t)
	ctx := context.Background()
	args := []any{"ACL", "SETUSER", "postern", "reset", "on", ">s3cret"}
	for _, f := range strings.Fields(aclRules) {
		args = append(args, f)
	}
	if err := rc.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	start := func(name string) *node {
		dir := t.TempDir()
		n := &node{name: name, dir: dir, log: new(logBuffer)}
		db, err := store.Open(ctx, filepath.Join(dir, "postern.db"))
		if err != nil {
			t.Fatal(err)
		}
		n.db = db
		cl := redis.NewClient(&redis.Options{Addr: r.addr(), Username: "postern", Password: "s3cret", ContextTimeoutEnabled: true})
		n.c, _ = New(Options{Client: cl, Node: name, StatePath: filepath.Join(dir, "cluster.state"), Logger: n.log.logger()})
		n.e, err = guard.New(ctx, settings(t, dir), guard.Options{Store: db, Node: name, Cluster: n.c, Logger: n.log.logger()})
		if err != nil {
			t.Fatal(err)
		}
		n.c.Start(n.e)
		t.Cleanup(n.stop)
		return n
	}
	a, b := start("mx1"), start("mx2")
	// Travel passes are shared by the same user.
	pol := passPolicy(t)
	var pms []*passes.Manager
	for _, n := range []*node{a, b} {
		m := passes.NewManager(passes.NewTable(time.Now), n.db, func() *policy.Policy { return pol })
		sh := n.c.Passes(m)
		m.SetPublisher(sh)
		sh.Start()
		t.Cleanup(sh.Close)
		pms = append(pms, m)
	}
	pass, err := pms[0].Add(ctx, passes.AddRequest{Account: "alice@example.com", From: "203.0.113.0/24", For: "1d"}, "root")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "the pass on mx2", func() bool { _, ok := pms[1].Held()[pass.ID]; return ok })
	if _, err := pms[0].Remove(ctx, pass.ID, "root"); err != nil {
		t.Fatal(err)
	}
	eventually(t, propagate, "the pass gone on mx2", func() bool { _, ok := pms[1].Held()[pass.ID]; return !ok })
	a.failLogins(t, "203.0.113.20", 3)
	b.failLogins(t, "203.0.113.20", 2)
	eventually(t, propagate, "the cluster count blocking on mx1", func() bool { return a.refuses("203.0.113.20") })
	p := netip.MustParsePrefix("198.51.100.0/24")
	b.e.BlockManual(ctx, p, time.Hour, "", "cli")
	eventually(t, propagate, "mx1 refusing", func() bool { return a.refuses("198.51.100.1") })
	a.e.Unblock(ctx, []netip.Prefix{p}, "cli")
	eventually(t, propagate, "mx2 admitting", func() bool { return !b.refuses("198.51.100.1") })
	a.e.PurgeExpired(ctx, "cli")
	a.e.UnblockAll(ctx, "cli")
	eventually(t, propagate, "mx2 empty", func() bool { return len(b.e.Blocks()) == 0 })
	for _, n := range []*node{a, b} {
		eventually(t, propagate, "sent", n.idle)
		if l := n.log.String(); strings.Contains(l, "NOPERM") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "refused a command") || strings.Contains(l, "travel pass") {
			t.Errorf("%s:\n%s", n.name, l)
		}
	}
}
