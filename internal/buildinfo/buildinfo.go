// Package buildinfo describes the running binary: its version, the source
// revision it was built from and the Go toolchain that built it. `postern
// version` prints it and the administration API's status reports it.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Info describes a binary: which source it was built from and how.
type Info struct {
	Version   string // release or pseudo-version; "devel" when unknown
	Revision  string // VCS commit; empty when unknown
	Time      string // commit time (RFC 3339); empty when unknown
	Modified  bool   // the working tree had uncommitted changes
	GoVersion string // toolchain that built it
	Platform  string // GOOS/GOARCH
}

// Read combines values given at link time (-ldflags -X; they win) with
// the module version and VCS settings the toolchain embedded (bi, ok as
// debug.ReadBuildInfo returns them). go build in a git clone records the
// commit; go run, go test, -buildvcs=false and a git worktree (its .git is
// a file, which the go command does not take for a repository) record
// none, and the version is then "devel".
func Read(ldVersion, ldRevision, ldTime string, bi *debug.BuildInfo, ok bool) Info {
	info := Info{
		Version:   "devel",
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	if ok && bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Revision = s.Value
			case "vcs.time":
				info.Time = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
	}
	if ldVersion != "" {
		info.Version = ldVersion
	}
	if ldRevision != "" {
		info.Revision = ldRevision
		// A revision given by hand says whether its tree was modified
		// itself, as git describe --dirty does.
		info.Modified = strings.HasSuffix(ldRevision, "-dirty")
	}
	if ldTime != "" {
		info.Time = ldTime
	}
	return info
}

// Current is Read with the running binary's embedded build information.
func Current(ldVersion, ldRevision, ldTime string) Info {
	bi, ok := debug.ReadBuildInfo()
	return Read(ldVersion, ldRevision, ldTime, bi, ok)
}

// String is what 'postern version' prints: the version on the first line
// ("postern v1.2.3"), then one "key value" line for each thing known.
func (b Info) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "postern %s\n", b.Version)
	if b.Revision != "" {
		fmt.Fprintf(&s, "  revision  %s\n", b.RevisionText())
	} else {
		fmt.Fprintf(&s, "  revision  unknown (no VCS information in the build: go run, go test, -buildvcs=false or a git worktree)\n")
	}
	if b.Time != "" {
		fmt.Fprintf(&s, "  time      %s\n", b.Time)
	}
	fmt.Fprintf(&s, "  go        %s %s\n", b.GoVersion, b.Platform)
	return s.String()
}

// RevisionText is the revision with " (modified)" when the tree was
// modified and the revision does not say so itself; "" when unknown.
func (b Info) RevisionText() string {
	rev := b.Revision
	if rev != "" && b.Modified && !strings.HasSuffix(rev, "-dirty") {
		rev += " (modified)"
	}
	return rev
}
