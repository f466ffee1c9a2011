package gateway

import (
	"context"
	"testing"
)

// runGateway starts a gateway on the configuration at cfg and runs it
// until the test ends, when it is stopped and Run's error reported. A send
// on the returned channel asks for a reload, as SIGHUP does.
func runGateway(t *testing.T, cfg string, opts Options) (*Gateway, chan<- struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	g, err := Start(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, reload) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return g, reload
}
