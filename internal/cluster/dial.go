package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/postern/postern/internal/config"
)

// Client makes the Redis client a configuration asks for: one server (a
// redis://, rediss:// or unix:// URL), a Redis Cluster (addresses) or a
// master watched by Sentinel — go-redis's UniversalClient in each case.
// The password is read from password_file; a rediss:// URL or tls: true
// verifies the server against ca_file (default: the system's roots).
func Client(c *config.Cluster) (redis.UniversalClient, error) {
	pass, err := readSecret(c.PasswordFile.Value)
	if err != nil {
		return nil, fmt.Errorf("cluster.password_file: %w", err)
	}
	var tc *tls.Config
	if c.TLS || strings.HasPrefix(c.Redis.Value, "rediss://") {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile.Value != "" {
			pem, err := os.ReadFile(c.CAFile.Value)
			if err != nil {
				return nil, fmt.Errorf("cluster.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cluster.ca_file %s: no PEM certificate", c.CAFile.Value)
			}
			tc.RootCAs = pool
		}
	}
	timeout := c.Timeout.D
	if c.Redis.IsSet() {
		o, err := redis.ParseURL(c.Redis.Value)
		if err != nil {
			return nil, fmt.Errorf("cluster.redis: %w", err)
		}
		if c.Username != "" {
			o.Username = c.Username
		}
		if pass != "" {
			o.Password = pass
		}
		if tc != nil {
			tc.ServerName = o.TLSConfig.ServerName
			o.TLSConfig = tc
		}
		tune(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.MaxRetries, timeout)
		o.ContextTimeoutEnabled = true
		return redis.NewClient(o), nil
	}
	u := &redis.UniversalOptions{Username: c.Username, Password: pass, TLSConfig: tc, ContextTimeoutEnabled: true}
	tune(&u.DialTimeout, &u.ReadTimeout, &u.WriteTimeout, &u.MaxRetries, timeout)
	switch {
	case c.Sentinel.Master != "":
		sp, err := readSecret(c.Sentinel.PasswordFile.Value)
		if err != nil {
			return nil, fmt.Errorf("cluster.sentinel.password_file: %w", err)
		}
		u.MasterName, u.SentinelPassword = c.Sentinel.Master, sp
		for _, a := range c.Sentinel.Addresses {
			u.Addrs = append(u.Addrs, a.Value)
		}
	case len(c.Addresses) > 0:
		u.IsClusterMode = true
		for _, a := range c.Addresses {
			u.Addrs = append(u.Addrs, a.Value)
		}
	default:
		return nil, errors.New("cluster: no server configured")
	}
	return redis.NewUniversalClient(u), nil
}

// tune bounds every Redis round trip by the configured timeout: a slow or
// absent Redis costs the sender a bounded wait, never the accept path.
func tune(dial, read, write *time.Duration, retries *int, d time.Duration) {
	*dial, *read, *write = 2*d, d, d
	*retries = 1
}

// readSecret reads the first line of a file ("" for no file).
func readSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(s, "\r"), nil
}

// FingerprintKey reads the shared fingerprint key file (nil when none is
// configured): the SHA-256 of its content, which must be at least 32 bytes
// and readable by no one but its owner.
func FingerprintKey(c *config.Cluster) (*[32]byte, error) {
	path := c.FingerprintKeyFile.Value
	if path == "" {
		return nil, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster.fingerprint_key_file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster.fingerprint_key_file %s is readable by others (mode %04o); chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster.fingerprint_key_file: %w", err)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("cluster.fingerprint_key_file %s holds %d bytes; want at least 32 (head -c 32 /dev/urandom > %s)", path, len(b), path)
	}
	k := sha256.Sum256(b)
	return &k, nil
}

// FromConfig makes the cluster link a configuration asks for; it is nil
// when cluster mode is off. statePath keeps the stream position (next to
// the block store).
func FromConfig(c *config.Cluster, node, statePath string, log *slog.Logger) (*Cluster, []netip.Prefix, error) {
	if !c.Enabled() {
		return nil, nil, nil
	}
	peers, err := c.PeerPrefixes()
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.peers: %w", err)
	}
	rdb, err := Client(c)
	if err != nil {
		return nil, nil, err
	}
	cl, err := New(Options{Client: rdb, KeyPrefix: c.KeyPrefix, Node: node, Timeout: c.Timeout.D,
		StreamLength: int64(c.StreamLength), Queue: c.Queue, StatePath: statePath, Logger: log})
	if err != nil {
		rdb.Close()
		return nil, nil, err
	}
	return cl, peers, nil
}

// redisLog hands go-redis's own messages (a dial that failed, a Sentinel
// switching masters) to a logger at debug level: the cluster logs an
// outage once itself, with what it means for postern.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.Debug("redis client: " + fmt.Sprintf(format, v...))
}

// RouteClientLog sends the Redis client library's messages to log at
// debug level instead of standard error. The library keeps one logger per
// process: the gateway calls this once, at start.
func RouteClientLog(log *slog.Logger) { redis.SetLogger(redisLog{log}) }
