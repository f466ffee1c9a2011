package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/postern/postern/internal/diag"
)

// Cluster configures cluster mode: gateways that share their blocks and
// cross-session counters through Redis or Valkey. It is on when Redis,
// Addresses or Sentinel names a server.
type Cluster struct {
	// Redis is one server's URL: redis://[user@]host:port/db, or rediss://
	// for TLS. A password is never written here: see PasswordFile.
	Redis Text `yaml:"redis"`
	// Addresses are the seed nodes of a Redis Cluster (host:port).
	Addresses []Text `yaml:"addresses"`
	// Sentinel names a monitored master and its sentinels.
	Sentinel Sentinel `yaml:"sentinel"`
	// Username is the ACL user (overrides the URL's).
	Username string `yaml:"username"`
	// PasswordFile holds the password (first line), read at start.
	PasswordFile Text `yaml:"password_file"`
	// TLS turns TLS on for Addresses and Sentinel (a rediss:// URL turns it
	// on by itself).
	TLS bool `yaml:"tls"`
	// CAFile is the PEM bundle that verifies the server's certificate
	// (default: the system's roots).
	CAFile Text `yaml:"ca_file"`
	// KeyPrefix starts every key postern writes.
	KeyPrefix string `yaml:"key_prefix" default:"postern:"`
	// Timeout bounds one Redis round trip (a pipeline of many commands).
	Timeout Duration `yaml:"timeout" default:"500ms"`
	// StreamLength bounds the block stream (XADD MAXLEN ~): a node away
	// for more changes than this reconciles from the block keys.
	StreamLength int `yaml:"stream_length" default:"100000" min:"1000"`
	// Queue bounds the writes kept while Redis cannot be reached.
	Queue int `yaml:"queue" default:"100000" min:"100"`
	// FingerprintKeyFile holds a secret (at least 32 bytes) every gateway
	// of the cluster shares: it keys the wrong-password fingerprints, so a
	// retry of the same wrong password counts once cluster-wide. Without
	// it each gateway keys them with a random key of its own.
	FingerprintKeyFile Text `yaml:"fingerprint_key_file"`
	// Peers are the other gateways' addresses (a pattern: addresses and
	// prefixes separated by ";" or ","), never blocked automatically.
	Peers Text `yaml:"peers"`
}

// Sentinel names a master monitored by Redis Sentinel.
type Sentinel struct {
	Master       string `yaml:"master"`
	Addresses    []Text `yaml:"addresses"`
	PasswordFile Text   `yaml:"password_file"` // the sentinels' own password, if they need one
}

// Enabled reports whether cluster mode is configured.
func (c *Cluster) Enabled() bool {
	return c.Redis.IsSet() || len(c.Addresses) > 0 || c.Sentinel.Master != ""
}

func (f *File) validateCluster(d *decoder) {
	c := &f.Cluster
	if !c.Enabled() {
		return
	}
	n := 0
	for _, on := range []bool{c.Redis.IsSet(), len(c.Addresses) > 0, c.Sentinel.Master != ""} {
		if on {
			n++
		}
	}
	pos := c.Redis.Pos
	if n > 1 {
		d.errs.Add(diag.Errorf(pos, "cluster: give one of redis, addresses (Redis Cluster) and sentinel"))
	}
	if c.Redis.IsSet() {
		u, err := url.Parse(c.Redis.Value)
		switch {
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix"):
			d.errs.Add(diag.Errorf(c.Redis.Pos, "cluster.redis: want redis://host:port/db, rediss://host:port/db or unix:///path"))
		case u.User != nil:
			if _, has := u.User.Password(); has {
				d.errs.Add(diag.Errorf(c.Redis.Pos, "cluster.redis: do not write the password in the URL; put it in password_file"))
			}
		}
	}
	if c.Sentinel.Master != "" && len(c.Sentinel.Addresses) == 0 {
		d.errs.Add(diag.Errorf(pos, "cluster.sentinel needs addresses"))
	}
	for _, a := range append(slicesClone(c.Addresses), c.Sentinel.Addresses...) {
		if i := strings.LastIndexByte(a.Value, ':'); i <= 0 || i == len(a.Value)-1 {
			d.errs.Add(diag.Errorf(a.Pos, "cluster: bad address %q: want host:port", a.Value))
		}
	}
	if c.KeyPrefix == "" || strings.ContainsAny(c.KeyPrefix, " \t\r\n{}") {
		d.errs.Add(diag.Errorf(pos, "cluster.key_prefix must be non-empty, without spaces or braces"))
	}
	for _, t := range []*Text{&c.PasswordFile, &c.CAFile, &c.Sentinel.PasswordFile, &c.FingerprintKeyFile} {
		f.resolve(t)
	}
	if c.Peers.IsSet() {
		if _, err := c.PeerPrefixes(); err != nil {
			d.errs.Add(diag.Errorf(c.Peers.Pos, "cluster.peers: %v", err))
		}
	}
	if c.Timeout.D <= 0 {
		d.errs.Add(diag.Errorf(c.Timeout.Pos, "cluster.timeout must be positive"))
	}
}

// PeerPrefixes returns the prefixes Peers lists (addresses as single-address
// prefixes).
func (c *Cluster) PeerPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(c.Peers.Value, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if p, err := netip.ParsePrefix(f); err == nil && !p.Addr().Is4In6() {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an address or prefix", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func slicesClone(t []Text) []Text { return append([]Text(nil), t...) }
