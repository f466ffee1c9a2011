// Command postern is a mail security gateway: GeoIP access control and
// intrusion prevention in front of any SMTP, IMAP, POP3 and webmail server.
// This package is the command line only; the work is done in internal/.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes shared by the commands that answer a yes/no question
// (pattern test, explain): yes, no, or could not tell.
const (
	exitYes   = 0
	exitNo    = 1
	exitError = 2
)

// exitCode carries a process exit status through cobra without printing.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	default:
		fmt.Fprintln(stderr, "postern:", err)
		return exitError
	}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "postern",
		Short: "Mail security gateway: GeoIP access control and intrusion prevention for SMTP, IMAP, POP3 and webmail",
		Long: `postern stands in front of a mail server and decides who may connect,
log in and deliver: country and network grant lists per service, login IP
restrictions per account, an /admin path for explicit addresses only, and
automatic blocking of abuse.

Start with 'postern init -o postern.yaml', edit it, then 'postern check -c postern.yaml'.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	setVersion(root)
	root.AddCommand(
		newInitCmd(),
		newCheckCmd(),
		newPatternCmd(),
		newExplainCmd(),
		newServeCmd(),
		newBlocksCmd(),
		newPassCmd(),
		newStatusCmd(),
		newDemoCmd(),
		newDoctorCmd(),
		newConsoleCmd(),
		newGenManCmd(),
	)
	return root
}

// configFlag adds the -c/--config flag every configuration command takes.
func configFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVarP(path, "config", "c", "postern.yaml", "configuration file")
}
