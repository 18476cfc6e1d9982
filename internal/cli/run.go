package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/logging"
)

func newRunCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Receive notifications and provision certificates (the daemon)",
		Long: `Run the adapter until SIGTERM or SIGINT. The first signal stops taking work and lets in-flight
CA calls and uploads finish for shutdownGracePeriod, then exits 0; a second signal stops at once
(exit 1), and what was cut off resumes from the journal on the next start.

SIGHUP reloads the configuration and the files it names, all checked first: profiles, CA
connections, customers, rate limits, log level and the Verified Access TLS certificate change
live; a configuration that does not load is refused (logged) and the old one goes on.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runDaemon(o, *path)
	}
	return cmd
}

func runDaemon(o Options, path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		config.PrintProblems(o.Stderr, path, err)
		return fail(nil)
	}
	log, level, err := logging.NewLeveled(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = log.Sync() }()

	for _, w := range cfg.Warnings() {
		log.Warn("configuration warning", zap.String("path", w.Path), zap.String("warning", w.Message))
	}

	// The first SIGINT or SIGTERM stops taking work and lets in-flight steps finish; a second
	// one stops waiting for them.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// SIGHUP reloads the configuration (registered now: unhandled, it would end the process).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	quit := make(chan struct{})
	defer close(quit)
	again := make(chan struct{})
	go watchSignals(log, sigs, quit, stop, again)
	a, err := adapter.New(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return fail(nil)
	}
	go func() {
		select {
		case <-again:
			a.Interrupt()
		case <-quit:
		}
	}()
	a.LogLevel = level
	go func() {
		for {
			select {
			case <-hup:
				log.Info("SIGHUP: reloading the configuration", zap.String("config", path))
				_ = a.ReloadFile(path) // logged by the adapter; a refused reload keeps running
			case <-quit:
				return
			}
		}
	}()
	log.Info("starting", zap.String("version", o.Build.Version), zap.String("commit", o.Build.Commit), zap.String("config", path))
	runErr := a.Run(ctx)
	if err := a.Close(); err != nil {
		log.Warn("close", zap.Error(err))
	}
	if runErr != nil {
		log.Error("stopped with error", zap.Error(runErr))
		return fail(nil)
	}
	log.Info("stopped")
	return nil
}

// watchSignals calls stop on the first signal from sigs and closes again on the second, until
// quit is closed.
func watchSignals(log *zap.Logger, sigs <-chan os.Signal, quit <-chan struct{}, stop func(), again chan<- struct{}) {
	select {
	case s := <-sigs:
		log.Info("signal received; stopping", zap.Stringer("signal", s))
		stop()
	case <-quit:
		return
	}
	select {
	case s := <-sigs:
		log.Warn("second signal; stopping without waiting for in-flight steps", zap.Stringer("signal", s))
		close(again)
	case <-quit:
	}
}
