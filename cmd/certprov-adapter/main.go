// Command certprov-adapter is the Certificate Provisioning adapter daemon.
//
//	certprov-adapter run      --config FILE   receive notifications and provision certificates
//	certprov-adapter validate --config FILE   check a configuration, print every problem
//	certprov-adapter init-ca  --dir DIR       create a CA for the built-in "local" connector
//	certprov-adapter version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/adapter"
	_ "github.com/certprov/certprov-adapter/internal/ca/install"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/logging"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "init-ca":
		return cmdInitCA(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "certprov-adapter", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: certprov-adapter <command> [flags]

commands:
  run       --config FILE   receive notifications and provision certificates
  validate  --config FILE   check a configuration and print every problem with its YAML path
  init-ca   --dir DIR       create a CA certificate and key for the built-in "local" connector
  version                   print the version
`)
}

func configFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("CERTPROV_CONFIG")
	if def == "" {
		def = "/etc/certprov/adapter.yaml"
	}
	return fs.String("config", def, "configuration file (env CERTPROV_CONFIG)")
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	log, err := logging.New(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintf(stderr, "logger: %v\n", err)
		return 1
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := adapter.New(ctx, cfg, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	log.Info("starting", zap.String("version", version), zap.String("config", *path))
	runErr := a.Run(ctx)
	if err := a.Close(); err != nil {
		log.Warn("close", zap.Error(err))
	}
	if runErr != nil {
		log.Error("stopped with error", zap.Error(runErr))
		return 1
	}
	log.Info("stopped")
	return 0
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	_, perr := adapter.Profiles(cfg)
	_, cerr := adapter.Connectors(cfg, zap.NewNop())
	if err := errors.Join(perr, cerr); err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK (%d profiles, %d CA connections)\n", *path, len(cfg.Profiles), len(cfg.CAConnections))
	return 0
}

// printProblems prints one problem per line, each starting with its YAML path.
func printProblems(w io.Writer, path string, err error) {
	var pe *config.ProblemsError
	if errors.As(err, &pe) {
		for _, p := range pe.Problems {
			fmt.Fprintf(w, "%s: %s: %s\n", path, p.Path, p.Message)
		}
		return
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintf(w, "%s: %s\n", path, line)
	}
}

func cmdInitCA(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("init-ca", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory for ca.crt and ca.key (created if absent)")
	keyType := fs.String("key-type", "ecdsa", "CA key type: ecdsa (P-256) or rsa (3072)")
	cn := fs.String("cn", "certprov local CA", "CA common name")
	validity := fs.Duration("validity", 10*365*24*time.Hour, "CA certificate lifetime")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(stderr, "init-ca: --dir is required")
		return 2
	}
	certPath, keyPath, err := local.CreateCA(*dir, *keyType, *cn, *validity)
	if err != nil {
		fmt.Fprintf(stderr, "init-ca: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "CA certificate: %s\nCA key:         %s\n", certPath, keyPath)
	return 0
}
