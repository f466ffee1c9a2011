package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postern/postern/internal/testenv"
)

// Set by TestMain when POSTERN_E2E=1.
var (
	moduleRoot string // the folder holding go.mod
	posternBin string // the postern binary built for this run
	buildErr   error
	buildLog   string
)

// defaultParallel is how many subtests run at once unless -parallel is
// given: they mostly wait on sockets and the mail servers, so more than
// GOMAXPROCS (2 on the CI machine) keeps the suite short.
const defaultParallel = 8

func TestMain(m *testing.M) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(defaultParallel))
	}
	if os.Getenv("POSTERN_E2E") == "1" {
		buildPostern()
	}
	testenv.Main(m)
}

// buildPostern builds ./cmd/postern once into a folder of this process,
// $TMPDIR/postern-e2e-bin-<pid>; folders of earlier runs whose process is
// gone are removed first (testenv.Main exits the process, so no deferred
// cleanup would run).
func buildPostern() {
	wd, err := os.Getwd()
	if err != nil {
		buildErr = err
		return
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			moduleRoot = d
			break
		}
		if filepath.Dir(d) == d {
			buildErr = fmt.Errorf("no go.mod above %s", wd)
			return
		}
	}
	removeStaleBinDirs()
	dir := filepath.Join(os.TempDir(), "postern-e2e-bin-"+strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		buildErr = err
		return
	}
	bin := filepath.Join(dir, "postern")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/postern")
	cmd := exec.Command("go", args...)
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	buildLog = fmt.Sprintf("go %s (in %s): %.1fs\n%s", strings.Join(args, " "), moduleRoot, time.Since(t0).Seconds(), out)
	if err != nil {
		buildErr = fmt.Errorf("building postern: %v", err)
		return
	}
	posternBin = bin
}

func removeStaleBinDirs() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), "postern-e2e-bin-*"))
	for _, d := range old {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "postern-e2e-bin-"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// posternBinary returns the built postern, failing the test if the build failed.
func posternBinary(t testing.TB) string {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("%v\n%s", buildErr, buildLog)
	}
	if posternBin == "" {
		t.Fatal("postern was not built (TestMain builds it only with POSTERN_E2E=1)")
	}
	return posternBin
}
