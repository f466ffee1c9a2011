package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postern/postern/internal/config"
)

func TestFingerprintKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fp.key")
	c := &config.Cluster{FingerprintKeyFile: config.Text{Value: path}}
	if _, err := FingerprintKey(c); err == nil {
		t.Error("a missing file was accepted")
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := FingerprintKey(c); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Errorf("a short key: %v", err)
	}
	os.WriteFile(path, []byte(strings.Repeat("k", 32)), 0o644)
	os.Chmod(path, 0o644)
	if _, err := FingerprintKey(c); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("a readable key: %v", err)
	}
	os.Chmod(path, 0o600)
	k1, err := FingerprintKey(c)
	if err != nil || k1 == nil {
		t.Fatal(err)
	}
	k2, _ := FingerprintKey(c)
	if *k1 != *k2 {
		t.Error("the same file gave two keys")
	}
	if k, err := FingerprintKey(&config.Cluster{}); k != nil || err != nil {
		t.Errorf("no file: %v %v", k, err)
	}
}
