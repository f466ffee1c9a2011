package main

import (
	"os"
	"testing"
)

// followCPULimit: serve follows the runtime's default processors (and so
// a changed container CPU limit) unless the environment fixes them.
func TestFollowCPULimit(t *testing.T) {
	for _, c := range []struct {
		gomaxprocs, godebug string
		want                bool
	}{
		{"", "", true},
		{"2", "", false},
		{"", "updatemaxprocs=0", false},
		{"", "updatemaxprocs=1", true},
		{"", "x=1, updatemaxprocs=0", false},
		{"", "updatemaxprocs=0,updatemaxprocs=1", true}, // the last one wins, as in the runtime
		{"", "updatemaxprocs=1,updatemaxprocs=0", false},
		{"", "containermaxprocs=0", true},
	} {
		if got := followCPULimit(c.gomaxprocs, c.godebug); got != c.want {
			t.Errorf("GOMAXPROCS=%q GODEBUG=%q: follow %v, want %v", c.gomaxprocs, c.godebug, got, c.want)
		}
	}
	if o := gatewayOptions(nil); (o.ProcessorCeiling != nil) != followCPULimit(os.Getenv("GOMAXPROCS"), os.Getenv("GODEBUG")) {
		t.Errorf("gatewayOptions: ProcessorCeiling set %v in this environment", o.ProcessorCeiling != nil)
	}
}
