package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

// RevisionText marks a modified tree once, whether the revision says so
// itself (git describe --dirty) or the toolchain recorded it.
func TestRevisionText(t *testing.T) {
	for _, tc := range []struct {
		info Info
		want string
	}{
		{Info{}, ""},
		{Info{Revision: "abc"}, "abc"},
		{Info{Revision: "abc", Modified: true}, "abc (modified)"},
		{Info{Revision: "abc-dirty", Modified: true}, "abc-dirty"},
	} {
		if got := tc.info.RevisionText(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.info, got, tc.want)
		}
	}
}

// Link-time values win over what the toolchain recorded; the status and
// `postern version` read the same Info.
func TestRead(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.1", Main: debug.Module{Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "true"}}}
	got := Read("", "", "", bi, true)
	if got.Version != "v1.2.3" || got.Revision != "abc" || !got.Modified || got.GoVersion != "go1.26.1" {
		t.Errorf("from the toolchain: %+v", got)
	}
	got = Read("1.4.0", "0123abc", "2026-12-01T00:00:00Z", bi, true)
	if got.Version != "1.4.0" || got.RevisionText() != "0123abc" || got.Time != "2026-12-01T00:00:00Z" {
		t.Errorf("from the linker: %+v", got)
	}
	if s := got.String(); !strings.HasPrefix(s, "postern 1.4.0\n  revision  0123abc\n") {
		t.Errorf("String: %q", s)
	}
	if c := Current("", "", ""); c.Version == "" || c.GoVersion == "" || c.Platform == "" {
		t.Errorf("Current: %+v", c)
	}
}
