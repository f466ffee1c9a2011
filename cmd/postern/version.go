package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/buildinfo"
)

// Set at build time with -ldflags "-X main.version=… -X main.revision=…
// -X main.commitTime=…" (the Makefile and the packages do). Empty values fall
// back to what the Go toolchain recorded in the binary.
var (
	version    string
	revision   string
	commitTime string
)

// buildInfo describes the binary (internal/buildinfo, which the gateway's
// status shares).
type buildInfo = buildinfo.Info

// readBuildInfo combines the -ldflags values (which win) with what the
// toolchain embedded.
func readBuildInfo(ldVersion, ldRevision, ldTime string, bi *debug.BuildInfo, ok bool) buildInfo {
	return buildinfo.Read(ldVersion, ldRevision, ldTime, bi, ok)
}

// currentBuildInfo is the build information of the running binary.
func currentBuildInfo() buildInfo {
	return buildinfo.Current(version, revision, commitTime)
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
