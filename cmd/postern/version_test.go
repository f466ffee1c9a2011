package main

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestReadBuildInfo(t *testing.T) {
	vcs := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i+1 < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/postern/postern", Version: "v0.0.0-20261203110000-d669feb1a2b3+dirty"},
		Settings: vcs("-buildmode", "exe",
			"vcs", "git",
			"vcs.revision", "d669feb1a2b3c4d5e6f708192a3b4c5d6e7f8091",
			"vcs.time", "2026-12-03T11:00:00Z",
			"vcs.modified", "true"),
	}
	goRun := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/postern/postern", Version: "(devel)"}}
	tagged := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/postern/postern", Version: "v1.2.3"},
		Settings: vcs("vcs.revision", "abc", "vcs.modified", "false")}

	for _, tc := range []struct {
		name                   string
		ldVersion, ldRev, ldTm string
		bi                     *debug.BuildInfo
		ok                     bool
		want                   buildInfo
	}{
		{name: "go build in a checkout", bi: stamped, ok: true, want: buildInfo{
			Version: "v0.0.0-20261203110000-d669feb1a2b3+dirty", Revision: "d669feb1a2b3c4d5e6f708192a3b4c5d6e7f8091",
			Time: "2026-12-03T11:00:00Z", Modified: true, GoVersion: "go1.26.8"}},
		{name: "go run or go test", bi: goRun, ok: true, want: buildInfo{Version: "devel", GoVersion: "go1.26.8"}},
		{name: "go install module@v1.2.3", bi: tagged, ok: true, want: buildInfo{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26.8"}},
		{name: "no build info", bi: nil, ok: false, want: buildInfo{Version: "devel", GoVersion: runtime.Version()}},
		{name: "ldflags win over the stamp", ldVersion: "1.4.0", ldRev: "0123abc", ldTm: "2026-12-01T00:00:00Z", bi: stamped, ok: true,
			want: buildInfo{Version: "1.4.0", Revision: "0123abc", Time: "2026-12-01T00:00:00Z", GoVersion: "go1.26.8"}},
		{name: "ldflags revision from git describe --dirty", ldVersion: "v1.4.0-3-g0123abc-dirty", ldRev: "0123abc-dirty", bi: goRun, ok: true,
			want: buildInfo{Version: "v1.4.0-3-g0123abc-dirty", Revision: "0123abc-dirty", Modified: true, GoVersion: "go1.26.8"}},
		{name: "ldflags version only keeps the stamped revision", ldVersion: "1.4.0", bi: stamped, ok: true,
			want: buildInfo{Version: "1.4.0", Revision: "d669feb1a2b3c4d5e6f708192a3b4c5d6e7f8091", Time: "2026-12-03T11:00:00Z", Modified: true, GoVersion: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.Platform = runtime.GOOS + "/" + runtime.GOARCH
			if got := readBuildInfo(tc.ldVersion, tc.ldRev, tc.ldTm, tc.bi, tc.ok); got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestBuildInfoString(t *testing.T) {
	b := buildInfo{Version: "1.4.0", Revision: "0123abc", Time: "2026-12-01T00:00:00Z", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"}
	want := "postern 1.4.0\n  revision  0123abc (modified)\n  time      2026-12-01T00:00:00Z\n  go        go1.26.8 linux/amd64\n"
	if got := b.String(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	b = buildInfo{Version: "devel", GoVersion: "go1.26.8", Platform: "linux/amd64"}
	if got := b.String(); !strings.HasPrefix(got, "postern devel\n  revision  unknown (") || strings.Contains(got, "time") {
		t.Fatalf("without VCS information: %q", got)
	}
}

// 'postern version' and 'postern --version' print the same text, that of
// the running binary (a test binary: no VCS stamp, version "devel" unless
// -ldflags set it).
func TestVersionCommandAndFlag(t *testing.T) {
	want := currentBuildInfo().String()
	code, out, errOut := postern(t, "version")
	if code != 0 || out != want || errOut != "" {
		t.Fatalf("version: %d %q %q, want %q", code, out, errOut, want)
	}
	code, out, errOut = postern(t, "--version")
	if code != 0 || out != want || errOut != "" {
		t.Fatalf("--version: %d %q %q, want %q", code, out, errOut, want)
	}
	if !strings.HasPrefix(out, "postern ") || !strings.Contains(out, "\n  go        "+runtime.Version()+" ") {
		t.Fatalf("--version: %q", out)
	}
	if code, _, _ := postern(t, "version", "extra"); code == 0 {
		t.Fatal("version with an argument: exit 0")
	}
}

// gen-man writes one page per available command, hidden ones excluded,
// with the flags of each command in its page.
func TestGenMan(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man")
	if code, out, errOut := postern(t, "gen-man", dir); code != 0 {
		t.Fatalf("gen-man: %d %q %q", code, out, errOut)
	}
	for _, name := range []string{"postern.1", "postern-serve.1", "postern-check.1", "postern-blocks-list.1", "postern-version.1", "postern-completion-bash.1"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		page := string(b)
		if !strings.HasPrefix(page, ".nh\n.TH ") || !strings.Contains(page, `"postern manual"`) {
			t.Errorf("%s: no man header: %.120q", name, page)
		}
		if strings.Contains(page, "Auto generated") {
			t.Errorf("%s: carries a generation stamp", name)
		}
	}
	serve, _ := os.ReadFile(filepath.Join(dir, "postern-serve.1"))
	if !strings.Contains(string(serve), `\fB--config\fP`) || !strings.Contains(string(serve), "SEE ALSO") {
		t.Errorf("postern-serve.1 lacks --config or SEE ALSO:\n%s", serve)
	}
	if _, err := os.Stat(filepath.Join(dir, "postern-gen-man.1")); err == nil {
		t.Error("the hidden gen-man command has a page")
	}
	if code, _, _ := postern(t, "gen-man"); code == 0 {
		t.Error("gen-man without DIR: exit 0")
	}
}
