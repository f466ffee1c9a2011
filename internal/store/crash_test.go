package store

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash test runs this test binary again as a child that writes blocks
// and reports each commit; the parent kills it with SIGKILL and checks that
// every reported block survived.
const (
	childEnv      = "GO_WANT_STORE_CHILD"
	childPathEnv  = "GO_STORE_CHILD_PATH"
	crashBatches  = 200
	crashBatchLen = 25
)

// crashBlock is block j of batch k, tagged so that a batch can be recognized.
func crashBlock(k, j int) Block {
	b := block(addr(k*crashBatchLen+j), j)
	b.Comment = "batch " + strconv.Itoa(k)
	return b
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("run by TestCrashSafety")
	}
	ctx := context.Background()
	db, err := Open(ctx, os.Getenv(childPathEnv))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	for k := range crashBatches {
		batch := make([]Block, crashBatchLen)
		for j := range batch {
			batch[j] = crashBlock(k, j)
		}
		if err := db.PutBlocks(ctx, batch); err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Printf("committed %d\n", k) // os.Stdout is unbuffered
	}
	fmt.Println("done")
	time.Sleep(time.Minute) // wait to be killed; exit eventually if the parent is gone
	os.Exit(3)
}

func TestCrashSafety(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		t.Skip("in the child")
	}
	rounds := []int{1, 3, 40}
	if testing.Short() {
		rounds = []int{3}
	}
	for _, killAfter := range rounds {
		path := filepath.Join(t.TempDir(), "crash.db")
		reported := crashChild(t, path, killAfter)
		if reported < killAfter {
			t.Fatalf("child reported %d commits before dying", reported)
		}

		db, err := Open(context.Background(), path) // the lock died with the child
		if err != nil {
			t.Fatalf("reopen after SIGKILL: %v", err)
		}
		got, err := db.LoadBlocks(context.Background())
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		stored := map[netip.Prefix]Block{}
		perBatch := map[string]int{}
		for _, b := range got {
			stored[b.Prefix] = b
			perBatch[b.Comment]++
		}
		for k := 0; k < reported; k++ {
			for j := range crashBatchLen {
				want := crashBlock(k, j)
				if b, ok := stored[want.Prefix]; !ok || b != want {
					t.Fatalf("kill after %d: block %v of reported batch %d lost or changed: %+v", killAfter, want.Prefix, k, b)
				}
			}
		}
		// Batches past the last report were either committed whole or not at all.
		for tag, n := range perBatch {
			if n != crashBatchLen {
				t.Errorf("kill after %d: %s has %d of %d blocks", killAfter, tag, n, crashBatchLen)
			}
		}
		t.Logf("killed after %d reports: %d batches reported, %d stored", killAfter, reported, len(perBatch))
	}
}

// crashChild runs the child on path, SIGKILLs it once it has reported
// killAfter commits, and returns how many commits it reported in all.
func crashChild(t *testing.T, path string, killAfter int) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1", childPathEnv+"="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	reported, killed := 0, false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if s, ok := strings.CutPrefix(line, "committed "); ok {
			k, err := strconv.Atoi(s)
			if err != nil || k != reported {
				t.Fatalf("child said %q after %d commits", line, reported)
			}
			reported++
		} else if strings.HasPrefix(line, "error") {
			t.Fatalf("child: %s", line)
		}
		if !killed && (reported >= killAfter || line == "done") {
			// Lines already written to the pipe still count: the
			// child printed them after PutBlocks returned.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", err)
	}
	return reported
}
