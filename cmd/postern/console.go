package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/postern/postern/internal/config"
	"github.com/postern/postern/internal/console"
)

func newConsoleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Manage the web console's users",
	}
	cmd.AddCommand(newConsolePasswdCmd())
	return cmd
}

func newConsolePasswdCmd() *cobra.Command {
	var path, file string
	cmd := &cobra.Command{
		Use:   "passwd USER",
		Short: "Set a console user's password",
		Long: `passwd sets USER's password in the console's users file: the user's line is
replaced, or added, with an argon2id hash of the password (64 MiB, 3 passes);
the other lines stay. The file is written with mode 0600. The file is -f, or
console.users_file of the configuration (-c). The running gateway reads the
file at each sign-in: no reload is needed.

The password is asked for twice on a terminal, or read as the first line of
standard input.

Exit status: 0 set, 2 error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				cfg, err := config.Load(path)
				if err != nil {
					return err
				}
				if !cfg.Console.UsersFile.IsSet() {
					return fmt.Errorf("%s sets no console.users_file: give the file with -f", path)
				}
				file = cfg.Console.UsersFile.Value
			}
			pw, err := readNewPassword(cmd)
			if err != nil {
				return err
			}
			if err := console.SetPassword(file, args[0], pw, console.DefaultHashParams); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s set in %s\n", args[0], file)
			return nil
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringVarP(&file, "file", "f", "", "users file (default: console.users_file of the configuration)")
	return cmd
}

// readNewPassword asks twice on a terminal, else reads a line of stdin.
func readNewPassword(cmd *cobra.Command) (string, error) {
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		errw := cmd.ErrOrStderr()
		fmt.Fprint(errw, "New password: ")
		a, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(errw)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(errw, "Again: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(errw)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(a) != string(b) {
			return "", errors.New("the passwords differ")
		}
		if len(a) == 0 {
			return "", errors.New("empty password")
		}
		return string(a), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("empty password on standard input")
	}
	return pw, nil
}
