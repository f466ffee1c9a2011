package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/postern/postern/internal/gateway"
	"github.com/postern/postern/internal/logbatch"
	"github.com/postern/postern/internal/procs"
)

func newServeCmd() *cobra.Command {
	var path, cpuProfile string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the gateway",
		Long: `serve loads the configuration, opens the block store, starts the intrusion
prevention engine and the administration API, and runs until SIGINT or
SIGTERM. SIGHUP reloads the configuration and applies all of it: backends,
timeouts, limits, certificates, login forms, listeners (bound, moved and
closed without dropping the sessions open on them). A configuration that does
not build is rejected whole, logged, and the running one stays; blocks and
counters survive. The log names the keys that changed and those that wait for
a restart (store, admin.listen, admin.token_file, run_as, node, log.format,
processors).

Every configured service is served: smtp, submission, smtps, imap, imaps,
pop3, pop3s and web (HTTP, or HTTPS with HTTP/2 when it has tls).

--cpu-profile FILE records the Go runtime's CPU profile of the whole run
(about 5 % more CPU while on) and writes it to FILE when serve stops: for
'go tool pprof', and for rebuilding the profile the release binary is
compiled with (docs/BENCHMARKS.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{})
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						select {
						case reload <- struct{}{}:
						case <-ctx.Done():
							return
						}
					}
				}
			}()
			logw := cmd.ErrOrStderr()
			if f, ok := logw.(*os.File); ok {
				// The process's own standard error: lines go out in
				// batches, at most logbatch.DefaultDelay late, in raw
				// writes where they cannot block.
				b := logbatch.NewFile(f, 0)
				defer b.Close()
				logw = b
			}
			if cpuProfile != "" {
				stopProfile, perr := startCPUProfile(cpuProfile)
				if perr != nil {
					return perr
				}
				defer func() { err = errors.Join(err, stopProfile()) }()
			}
			return serve(ctx, path, logw, reload)
		},
	}
	configFlag(cmd, &path)
	cmd.Flags().StringVar(&cpuProfile, "cpu-profile", "", "write the run's CPU profile (pprof format) to this file when serve stops")
	return cmd
}

// gatewayOptions are the gateway's options from the command line.
func gatewayOptions(logw io.Writer) gateway.Options {
	o := gateway.Options{Log: logw, Warnings: ipsWarnings, Build: currentBuildInfo(), SizeProcessors: true}
	if followCPULimit(os.Getenv("GOMAXPROCS"), os.Getenv("GODEBUG")) {
		o.ProcessorCeiling = procs.RuntimeDefault
	}
	return o
}

// followCPULimit says whether adaptive processors follow the runtime's
// default as the CPUs and the container's CPU limit change, as the Go
// runtime itself does for a program that sets no number: not when the
// GOMAXPROCS environment variable fixes the ceiling, nor when GODEBUG
// turns the runtime's own updates off (updatemaxprocs=0).
func followCPULimit(gomaxprocs, godebug string) bool {
	if gomaxprocs != "" {
		return false
	}
	follow := true
	for _, kv := range strings.Split(godebug, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && k == "updatemaxprocs" {
			follow = v != "0" // the last setting wins, as in the runtime
		}
	}
	return follow
}

// serve runs the gateway until ctx is done, reloading the configuration
// whenever reload delivers.
func serve(ctx context.Context, path string, logw io.Writer, reload <-chan struct{}) error {
	if err := gateway.Serve(ctx, path, gatewayOptions(logw), reload); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// startGateway starts a gateway that Run serves.
func startGateway(ctx context.Context, path string, logw io.Writer) (*gateway.Gateway, error) {
	return gateway.Start(ctx, path, gatewayOptions(logw))
}
