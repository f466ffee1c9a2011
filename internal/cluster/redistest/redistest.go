// Package redistest starts Debian's redis-server for tests: on a free
// loopback port, in a temporary directory, without persistence (a restart
// loses its data, the harder case for the nodes).
package redistest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running (or killed) redis-server.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	args []string // more arguments (a replica's --replicaof, a sentinel's)
	conf string   // a configuration file (a sentinel's)
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts redis-server, or skips the test when it is not installed
// (with POSTERN_E2E=1 that is a failure) or in -short mode. It is killed
// when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	r := prepare(t)
	r.Restart()
	t.Cleanup(r.Kill)
	return r
}

// prepare finds redis-server and a free port (or skips the test).
func prepare(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("POSTERN_E2E") == "1" {
			t.Fatal("redis-server not installed (apt-get install -y redis-server)")
		}
		t.Skip("redis-server not installed")
	}
	if testing.Short() && os.Getenv("POSTERN_E2E") != "1" {
		t.Skip("starts redis-server; not in -short mode")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return &Server{t: t, bin: bin, dir: t.TempDir(), port: port}
}

// Failover is a master, a replica and one Sentinel (quorum 1) watching
// them as "mymaster", with a short down-after time for tests.
type Failover struct {
	Master, Replica, Sentinel *Server
}

// MasterName is the name the Sentinel knows the master by.
const MasterName = "mymaster"

// StartFailover starts a master, its replica and a Sentinel.
func StartFailover(t testing.TB) *Failover {
	t.Helper()
	f := &Failover{Master: prepare(t), Replica: prepare(t), Sentinel: prepare(t)}
	f.Master.Restart()
	t.Cleanup(f.Master.Kill)
	f.Replica.args = []string{"--replicaof", "127.0.0.1", strconv.Itoa(f.Master.port)}
	f.Replica.Restart()
	t.Cleanup(f.Replica.Kill)
	conf := filepath.Join(f.Sentinel.dir, "sentinel.conf")
	body := "port " + strconv.Itoa(f.Sentinel.port) + "\nbind 127.0.0.1\ndir " + f.Sentinel.dir + "\n" +
		"sentinel monitor " + MasterName + " 127.0.0.1 " + strconv.Itoa(f.Master.port) + " 1\n" +
		"sentinel down-after-milliseconds " + MasterName + " 400\n" +
		"sentinel failover-timeout " + MasterName + " 4000\n"
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	f.Sentinel.args = []string{"--sentinel"}
	f.Sentinel.conf = conf
	f.Sentinel.Restart()
	t.Cleanup(f.Sentinel.Kill)
	// Wait until the replica is in sync with the master and the Sentinel
	// knows it, so it can fail over.
	rc := redis.NewClient(&redis.Options{Addr: f.Replica.Addr()})
	defer rc.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := rc.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica never synced: %v\n%s", err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: f.Sentinel.Addr()})
	defer c.Close()
	for {
		rs, err := c.Replicas(context.Background(), MasterName).Result()
		if err == nil && len(rs) > 0 {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sentinel never saw the replica: %v %v", rs, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MasterAddr asks the Sentinel for the master's address.
func (f *Failover) MasterAddr() string {
	c := redis.NewSentinelClient(&redis.Options{Addr: f.Sentinel.Addr()})
	defer c.Close()
	a, err := c.GetMasterAddrByName(context.Background(), MasterName).Result()
	if err != nil || len(a) != 2 {
		return ""
	}
	return a[0] + ":" + a[1]
}

// Addr is the server's host:port.
func (r *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Restart starts the server again (empty) on the same port.
func (r *Server) Restart() {
	r.t.Helper()
	var args []string
	if r.conf != "" {
		args = append(args, r.conf)
	}
	args = append(args, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--protected-mode", "yes", "--daemonize", "no", "--logfile", filepath.Join(r.dir, "redis.log"))
	if r.conf == "" {
		args = append(args, "--save", "", "--appendonly", "no")
	}
	r.cmd = exec.Command(r.bin, append(args, r.args...)...)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(r.cmd, r.done)
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server did not answer: %v\n%s", err, log)
		}
		select {
		case <-r.done:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server exited\n%s", log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (r *Server) Kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	r.cmd = nil
}

// Client is a plain client for a test's own checks, closed with the test.
func (r *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

// StartCluster starts a Redis Cluster of three masters (no replicas) and
// returns them; redis-cli --cluster create assigns the slots. It skips
// the test when redis-cli is missing.
func StartCluster(t testing.TB) []*Server {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("POSTERN_E2E") == "1" {
			t.Fatal("redis-cli not installed (apt-get install -y redis-tools)")
		}
		t.Skip("redis-cli not installed")
	}
	var ss []*Server
	args := []string{"--cluster", "create"}
	for range 3 {
		s := prepare(t)
		s.args = []string{"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(s.dir, "nodes.conf"), "--cluster-node-timeout", "2000"}
		s.Restart()
		t.Cleanup(s.Kill)
		ss = append(ss, s)
		args = append(args, s.Addr())
	}
	out, err := exec.Command(cli, append(args, "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	// Every master must see the cluster as ok (they agree one after the
	// other after the slots are assigned).
	deadline := time.Now().Add(15 * time.Second)
	for _, srv := range ss {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		for {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("%s never saw the cluster ok: %v\n%s", srv.Addr(), err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return ss
}
