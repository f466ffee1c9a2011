package main

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/admin"
	"github.com/postern/postern/internal/gateway"
	"github.com/postern/postern/internal/guard"
	"github.com/postern/postern/internal/service"
	"github.com/postern/postern/internal/store"
)

// importBudgetMiB is the most resident memory a gateway may take on top of
// its idle size to import 200,000 blocks (see docs/BENCHMARKS.md).
const importBudgetMiB = 320

// TestImportMemoryBudget imports 200,000 blocks with `postern blocks import`
// into a running gateway (a child process, so the client's copy of the file
// is not counted) and checks the gateway's peak resident size against
// importBudgetMiB. The figure goes to docs/BENCHMARKS.md.
func TestImportMemoryBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 200,000 blocks")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory: the budget is measured without it")
	}
	const n = 200_000
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, "services:\n  smtp: { listen: \"127.0.0.1:0\", backend: \"127.0.0.1:10025\" }\n"+stateConfig(t, dir))
	for _, format := range []string{"csv", "json"} {
		t.Run(format, func(t *testing.T) {
			file := filepath.Join(dir, "blocks."+format)
			writeImport(t, file, format, n)
			fi, _ := os.Stat(file)
			c := startChild(t, cfg, false)
			pid := c.cmd.Process.Pid
			// Reset the peak so it counts from here.
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
				t.Skipf("cannot reset the peak resident size: %v", err)
			}
			idle := procStatusKiB(t, pid, "VmHWM")
			start := time.Now()
			code, out, errs := postern(t, "blocks", "import", "-c", cfg, file)
			took := time.Since(start)
			if code != 0 {
				t.Fatalf("blocks import: exit %d\n%s%s", code, out, errs)
			}
			if !strings.Contains(out, strconv.Itoa(n)) {
				t.Fatalf("blocks import: %s", out)
			}
			peak := procStatusKiB(t, pid, "VmHWM")
			grew := (peak - idle) / 1024
			t.Logf("import of %d blocks (%s, %.1f MiB): %s; gateway resident %d MiB idle, %d MiB peak (+%d MiB; budget +%d MiB)",
				n, format, float64(fi.Size())/(1<<20), took.Round(time.Millisecond), idle/1024, peak/1024, grew, importBudgetMiB)
			if grew > importBudgetMiB {
				t.Errorf("the import took %d MiB more, over the budget of %d MiB", grew, importBudgetMiB)
			}
			if err := c.stop(t, syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			os.Remove(filepath.Join(dir, "state", "postern.db"))
			os.Remove(filepath.Join(dir, "state", "postern.db-wal"))
			os.Remove(filepath.Join(dir, "state", "postern.db-shm"))
		})
	}
}

// writeImport writes n distinct blocks in format (csv or json), as an export
// would.
func writeImport(t *testing.T, path, format string, n int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	now := time.Now().UTC().Truncate(time.Second)
	first := now.Add(-time.Hour).Format(time.RFC3339)
	exp := now.Add(24 * time.Hour).Format(time.RFC3339)
	if format == "csv" {
		fmt.Fprintln(w, "target,reason,service,detail,first_seen,last_seen,hits,expires,node,by,comment,level")
	} else {
		fmt.Fprintln(w, `{"blocks": [`)
	}
	for i := range n {
		ip := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if format == "csv" {
			fmt.Fprintf(w, "%s,L,imap,account user%d@example.test,%s,%s,%d,%s,gw1,engine,,0\n", ip, i, first, first, 5, exp)
			continue
		}
		sep := ","
		if i == n-1 {
			sep = ""
		}
		fmt.Fprintf(w, `  {"target":%q,"prefix":"%s/32","reason":"L","reason_name":"failed logins","service":"imap","detail":"account user%d@example.test","first_seen":%q,"last_seen":%q,"hits":5,"expires":%q,"expired":false,"node":"gw1","by":"engine","comment":"","level":0}%s`+"\n",
			ip, ip, i, first, first, exp, sep)
	}
	if format == "json" {
		fmt.Fprintln(w, "]}")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// procStatusKiB reads a "kB" field of /proc/<pid>/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(ln, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// An import that the API reports as failed leaves nothing enforced, on the
// real engine and store: a row that expires in the year 9999 is refused
// with its line (before, the engine enforced every row, the store refused
// the whole write, and the API answered 500 with the blocks in force),
// and so is an import the store cannot write.
func TestBlocksImportFailedEnforcesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postern.yaml")
	writeFile(t, cfg, "services:\n  smtp: { listen: \"127.0.0.1:0\", backend: \"127.0.0.1:10025\" }\n"+stateConfig(t, dir))
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	opts := gatewayOptions(&logs)
	var db *store.DB
	opts.OpenStore = func(ctx context.Context, path string) (*store.DB, error) {
		var err error
		db, err = store.Open(ctx, path)
		return db, err
	}
	g, err := gateway.Start(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	now := time.Now().UTC().Truncate(time.Second)
	good := "10.9.0.1,L,imap,,," + now.Format(time.RFC3339) + ",3," + now.Add(time.Hour).Format(time.RFC3339) + ",gw1,engine,,0\n"
	file := filepath.Join(dir, "blocks.csv")
	writeFile(t, file, admin.CSVHeader+"\n"+good+"10.9.0.2,L,imap,,,,3,9999-12-31T23:59:59Z,gw1,engine,,0\n")
	code, out, errs := postern(t, "blocks", "import", "-c", cfg, file)
	if code != 2 || out != "" || !strings.Contains(errs, "line 3: expires: 9999-12-31T23:59:59Z is more than 10 years ahead") {
		t.Fatalf("import of year 9999: %d %q %q", code, out, errs)
	}
	if a := g.Engine().Admit(netip.MustParseAddr("10.9.0.1"), service.SMTP); a.Action != guard.Allow || len(g.Engine().Blocks()) != 0 {
		t.Fatalf("a refused import is enforced: %+v", a)
	}
	js := filepath.Join(dir, "blocks.json")
	writeFile(t, js, `{"blocks": [
  {"target": "10.9.0.1", "reason": "L"},
  {"target": "10.9.0.2", "reason": "L", "first_seen": "`+now.Format(time.RFC3339)+`", "expires": "`+now.Add(-time.Hour).Format(time.RFC3339)+`"}
]}`)
	code, _, errs = postern(t, "blocks", "import", "-c", cfg, js)
	if code != 2 || !strings.Contains(errs, "blocks[1] (line 3): expires: ") || !strings.Contains(errs, "is before first_seen") {
		t.Fatalf("import expiring before first_seen: %d %q", code, errs)
	}

	// The store fails (here: closed under the engine): the API reports the
	// failure and nothing is enforced.
	writeFile(t, file, admin.CSVHeader+"\n"+good)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	code, _, errs = postern(t, "blocks", "import", "-c", cfg, file)
	if code != 2 || errs == "" {
		t.Fatalf("import into a closed store: %d %q", code, errs)
	}
	if a := g.Engine().Admit(netip.MustParseAddr("10.9.0.1"), service.SMTP); a.Action != guard.Allow || len(g.Engine().Blocks()) != 0 {
		t.Fatalf("an import the store refused is enforced: %+v", a)
	}
	if !strings.Contains(logs.String(), "none imported") {
		t.Errorf("the log does not say the import failed whole:\n%s", logs.String())
	}
}
