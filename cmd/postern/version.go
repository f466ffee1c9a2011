package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// Set at build time with -ldflags "-X main.version=… -X main.revision=…
// -X main.commitTime=…" (the Makefile and the packages do). Empty values fall
// back to what the Go toolchain recorded in the binary.
var (
	version    string
	revision   string
	commitTime string
)

// buildInfo describes the binary: which source it was built from and how.
type buildInfo struct {
	Version   string // release or pseudo-version; "devel" when unknown
	Revision  string // VCS commit; empty when unknown
	Time      string // commit time (RFC 3339); empty when unknown
	Modified  bool   // the working tree had uncommitted changes
	GoVersion string // toolchain that built it
	Platform  string // GOOS/GOARCH
}

// readBuildInfo combines the -ldflags values (which win) with the module
// version and VCS settings the toolchain embedded. go build in a git clone
// records the commit; go run, go test, -buildvcs=false and a git worktree
// (its .git is a file, which the go command does not take for a
// repository) record none, and the version is then "devel".
func readBuildInfo(ldVersion, ldRevision, ldTime string, bi *debug.BuildInfo, ok bool) buildInfo {
	info := buildInfo{
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

// String is what 'postern version' and 'postern --version' print: the
// version on the first line ("postern v1.2.3"), then one "key value" line
// for each thing known.
func (b buildInfo) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "postern %s\n", b.Version)
	if b.Revision != "" {
		rev := b.Revision
		if b.Modified && !strings.HasSuffix(rev, "-dirty") {
			rev += " (modified)"
		}
		fmt.Fprintf(&s, "  revision  %s\n", rev)
	} else {
		fmt.Fprintf(&s, "  revision  unknown (no VCS information in the build: go run, go test, -buildvcs=false or a git worktree)\n")
	}
	if b.Time != "" {
		fmt.Fprintf(&s, "  time      %s\n", b.Time)
	}
	fmt.Fprintf(&s, "  go        %s %s\n", b.GoVersion, b.Platform)
	return s.String()
}

// currentBuildInfo is the build information of the running binary.
func currentBuildInfo() buildInfo {
	bi, ok := debug.ReadBuildInfo()
	return readBuildInfo(version, revision, commitTime, bi, ok)
}

// setVersion wires 'postern version' and 'postern --version' to the same
// text.
func setVersion(root *cobra.Command) {
	text := currentBuildInfo().String()
	root.Version = text
	root.SetVersionTemplate("{{.Version}}")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, the source revision and the Go version it was built with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprint(cmd.OutOrStdout(), text)
			return err
		},
	})
}
