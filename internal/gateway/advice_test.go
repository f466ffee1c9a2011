package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Start-up errors say what failed and how to fix it, in the
// administrator's words (no package names).
func TestStartErrorsSayHowToFix(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	state := fmt.Sprintf("store: { path: %s }\nadmin: { listen: \"unix:%s\", token_file: %s }\n",
		filepath.Join(dir, "postern.db"), filepath.Join(dir, "a.sock"), filepath.Join(dir, "admin.token"))
	for _, tc := range []struct {
		name, config string
		want         []string
	}{
		{"port in use", `services: { smtp: { listen: "` + busy.Addr().String() + `", backend: "127.0.0.1:10025" } }`,
			[]string{"service smtp cannot listen on " + busy.Addr().String(), "address already in use", "Fix: another program listens there", "ss -ltnp"}},
		{"no such user", `run_as: no-such-user-postern
services: { smtp: { listen: "127.0.0.1:0", backend: "127.0.0.1:10025" } }`,
			[]string{"run_as no-such-user-postern: no such user on this machine", "useradd --system"}},
		{"address not here", `services: { smtp: { listen: "192.0.2.1:2525", backend: "127.0.0.1:10025" } }`,
			[]string{"cannot listen on 192.0.2.1:2525", "Fix: no interface of this host has that address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "postern.yaml")
			writeConfig(t, cfg, state+tc.config+"\n")
			_, err := Start(context.Background(), cfg, Options{Log: &syncBuffer{}})
			if err == nil {
				t.Fatal("Start succeeded")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "netlisten") || strings.Contains(msg, "tlsconf") {
				t.Errorf("error names an internal package: %q", msg)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "postern.db")); err == nil {
		t.Error("a failed start created the store")
	}
}

func TestListenErrorPermission(t *testing.T) {
	err := listenError("smtp", ":25", &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", syscall.EACCES)})
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), "CAP_NET_BIND_SERVICE") || !strings.Contains(err.Error(), "examples/systemd/postern.service") {
		t.Errorf("permission error: %v", err)
	}
	err = storeError("/var/lib/postern/postern.db", fmt.Errorf("open: %w", syscall.EACCES))
	if !strings.Contains(err.Error(), "cannot open the block store /var/lib/postern/postern.db: permission denied. Fix:") {
		t.Errorf("store error: %v", err)
	}
}
