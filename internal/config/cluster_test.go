package config

import (
	"strings"
	"testing"
	"time"
)

func TestClusterConfig(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte(`
node: mx1
cluster:
  redis: "rediss://postern@redis.example.net:6380/2"
  password_file: redis.pass
  ca_file: ca.pem
  peers: "192.0.2.10; 2001:db8::25, 198.51.100.0/28"
`))
	if err != nil {
		t.Fatal(err)
	}
	c := f.Cluster
	if !c.Enabled() || c.KeyPrefix != "postern:" || c.Timeout.D != 500*time.Millisecond || c.StreamLength != 100000 || c.Queue != 100000 {
		t.Errorf("defaults: %+v", c)
	}
	if c.PasswordFile.Value != "/etc/postern/redis.pass" || c.CAFile.Value != "/etc/postern/ca.pem" {
		t.Errorf("paths not resolved: %s %s", c.PasswordFile.Value, c.CAFile.Value)
	}
	ps, err := c.PeerPrefixes()
	if err != nil || len(ps) != 3 || ps[0].String() != "192.0.2.10/32" || ps[1].String() != "2001:db8::25/128" {
		t.Errorf("peers %v %v", ps, err)
	}
	off, err := Parse("/x/postern.yaml", []byte("node: a\n"))
	if err != nil || off.Cluster.Enabled() {
		t.Errorf("cluster on without a server: %v", err)
	}
	sentinel, err := Parse("/x/postern.yaml", []byte(`
cluster:
  sentinel: { master: mymaster, addresses: ["10.0.0.1:26379", "10.0.0.2:26379"] }
`))
	if err != nil || sentinel.Cluster.Sentinel.Master != "mymaster" || len(sentinel.Cluster.Sentinel.Addresses) != 2 {
		t.Errorf("sentinel: %+v %v", sentinel, err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"cluster: { redis: \"redis://u:secret@h:6379\" }", "do not write the password"},
		{"cluster: { redis: \"http://h\" }", "want redis://"},
		{"cluster: { redis: \"redis://h:6379\", adresses: [\"a:1\"] }", "adresses"},
		{"cluster: { redis: \"redis://h:6379\", addresses: [\"a:1\"] }", "give one of"},
		{"cluster: { addresses: [\"nohost\"] }", "want host:port"},
		{"cluster: { sentinel: { master: m } }", "needs addresses"},
		{"cluster: { redis: \"redis://h:6379\", key_prefix: \"a b\" }", "key_prefix"},
		{"cluster: { redis: \"redis://h:6379\", peers: \"mx2.example\" }", "not an address"},
		{"cluster: { redis: \"redis://h:6379\", stream_length: 10 }", "stream_length"},
	} {
		_, err := Parse("/x/postern.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestClusterExamples: the two gateways of examples/cluster load.
func TestClusterExamples(t *testing.T) {
	for _, n := range []string{"mx1", "mx2"} {
		f, err := Load("../../examples/cluster/" + n + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if f.Node != n || !f.Cluster.Enabled() || f.Cluster.CAFile.Value != "/etc/postern/redis-ca.pem" {
			t.Errorf("%s: %+v", n, f.Cluster)
		}
		if ps, err := f.Cluster.PeerPrefixes(); err != nil || len(ps) != 1 {
			t.Errorf("%s: peers %v %v", n, ps, err)
		}
	}
}

func TestClusterFingerprintKeyFileResolved(t *testing.T) {
	f, err := Parse("/etc/postern/postern.yaml", []byte("cluster: { redis: \"redis://h:6379\", fingerprint_key_file: fp.key }\n"))
	if err != nil || f.Cluster.FingerprintKeyFile.Value != "/etc/postern/fp.key" {
		t.Fatalf("%v %+v", err, f.Cluster.FingerprintKeyFile)
	}
}
