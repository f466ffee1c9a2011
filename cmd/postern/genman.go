package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenManCmd is the hidden 'postern gen-man DIR': one man page (section 1)
// for every command, generated from the command tree itself so the pages
// cannot drift from the flags. 'make man' and the packages use it.
func newGenManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages into DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("gen-man: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // no generation date in the pages' text
			info := currentBuildInfo()
			header := &doc.GenManHeader{
				Section: "1",
				Source:  "postern " + info.Version,
				Manual:  "postern manual",
			}
			// The date in the page footer: the commit's, so that the same
			// source gives the same pages; without one, SOURCE_DATE_EPOCH
			// or today (cobra's rule).
			if t, err := time.Parse(time.RFC3339, info.Time); err == nil {
				t = t.UTC()
				header.Date = &t
			}
			if err := doc.GenManTree(root, header, dir); err != nil {
				return fmt.Errorf("gen-man: %w", err)
			}
			return nil
		},
	}
}
