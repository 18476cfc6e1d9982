// Command certprov-adapter is the Certificate Provisioning adapter daemon.
//
//	certprov-adapter run      --config FILE   receive notifications and provision certificates
//	certprov-adapter validate --config FILE   check a configuration, print every problem
//	certprov-adapter inspect  --config FILE [--json] [--all | --state S] [--limit N] [--pem] [PROCESS]
//	                                          list processes, or show one's history and certificate
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
	"sort"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/ca"
	_ "github.com/certprov/certprov-adapter/internal/ca/install"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/process"
)

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
	case "inspect":
		return cmdInspect(args[1:], stdout, stderr)
	case "init-ca":
		return cmdInitCA(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "certprov-adapter", buildinfo.Get())
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
  validate  --config FILE [--check-connections]
                          check a configuration and print every problem with its YAML path;
                          with --check-connections also contact every CA
  inspect   --config FILE [--json] [--all | --state S] [--limit N] [--pem] [PROCESS]
                          list unfinished processes (state, age, next step, last error), with
                          --all finished ones too, with --state those in one state; or show one
                          process's history and certificate (--pem: the PEM too); PROCESS is its
                          id or full name
  init-ca   --dir DIR       create a CA certificate and key for the built-in "local" connector
  version                   print the version, commit, build date and Go version
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
	log, level, err := logging.NewLeveled(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintf(stderr, "logger: %v\n", err)
		return 1
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
		return 1
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
				log.Info("SIGHUP: reloading the configuration", zap.String("config", *path))
				_ = a.ReloadFile(*path) // logged by the adapter; a refused reload keeps running
			case <-quit:
				return
			}
		}
	}()
	bi := buildinfo.Get()
	log.Info("starting", zap.String("version", bi.Version), zap.String("commit", bi.Commit), zap.String("config", *path))
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

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	check := fs.Bool("check-connections", false, "also contact every CA connection (Ping) and report its health")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "%s: %s: warning: %s\n", *path, w.Path, w.Message)
	}
	_, perr := adapter.Profiles(cfg)
	conns, cerr := adapter.Connectors(cfg, zap.NewNop())
	// Enrollment profiles are checked whether or not the section is enabled, so that enabling
	// it later holds no surprise.
	var vaerr error
	if len(cfg.VerifiedAccess.Profiles) > 0 {
		_, vaerr = adapter.VerifiedAccessProfiles(cfg, conns)
	}
	if err := errors.Join(perr, cerr, vaerr); err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	if *check {
		if !checkConnections(stdout, stderr, conns) {
			return 1
		}
	}
	if n := len(cfg.VerifiedAccess.Profiles); n > 0 {
		fmt.Fprintf(stdout, "%s: OK (%d profiles, %d CA connections, %d Verified Access profiles)\n", *path, len(cfg.Profiles), len(cfg.CAConnections), n)
		return 0
	}
	fmt.Fprintf(stdout, "%s: OK (%d profiles, %d CA connections)\n", *path, len(cfg.Profiles), len(cfg.CAConnections))
	return 0
}

// checkConnections pings every connector that can be pinged and reports each; it returns
// whether all answered.
func checkConnections(stdout, stderr io.Writer, conns map[string]*engine.CAConnection) bool {
	names := make([]string, 0, len(conns))
	for n := range conns {
		names = append(names, n)
	}
	sort.Strings(names)
	ok := true
	for _, n := range names {
		pinger, can := conns[n].Connector.(ca.Pinger)
		if !can {
			fmt.Fprintf(stdout, "caConnections.%s: no health check for this connector type\n", n)
			continue
		}
		timeout := conns[n].Timeout
		if timeout <= 0 {
			timeout = 30 * time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := pinger.Ping(ctx)
		cancel()
		if err != nil {
			ok = false
			fmt.Fprintf(stderr, "caConnections.%s: unreachable or misconfigured: %v\n", n, err)
			continue
		}
		fmt.Fprintf(stdout, "caConnections.%s: OK\n", n)
	}
	return ok
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

func cmdInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	all := fs.Bool("all", false, "list finished processes too, most recent first")
	stateName := fs.String("state", "", "list only processes in this state (uploaded and failed: finished ones)")
	limit := fs.Int("limit", inspect.DefaultLimit, "list at most this many finished processes")
	withPEM := fs.Bool("pem", false, "with PROCESS: print the certificate's PEM too")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fmt.Fprintln(stderr, "inspect: at most one process")
		return 2
	}
	filter := inspect.Filter{All: *all, Limit: *limit}
	if *stateName != "" {
		st, err := inspect.ParseState(*stateName)
		if err != nil {
			fmt.Fprintf(stderr, "inspect: --state: %v\n", err)
			return 2
		}
		filter.State = st
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := adapter.OpenJournal(ctx, cfg.Journal, true, nil)
	if err != nil {
		fmt.Fprintf(stderr, "inspect: open journal: %v\n", err)
		return 1
	}
	defer store.Close()
	now := time.Now()
	if fs.NArg() == 0 {
		if err := inspect.Run(ctx, stdout, store, filter, now, *asJSON); err != nil {
			fmt.Fprintf(stderr, "inspect: %v\n", err)
			return 1
		}
		return 0
	}
	rec, err := findRecord(ctx, store, cfg.Customers, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "inspect: %v\n", err)
		return 1
	}
	var opts []inspect.ShowOption
	if *withPEM {
		opts = append(opts, inspect.WithPEM())
	}
	if err := inspect.Show(stdout, rec, now, *asJSON, opts...); err != nil {
		fmt.Fprintf(stderr, "inspect: %v\n", err)
		return 1
	}
	return 0
}

// findRecord accepts a full process name or a bare id, which is looked up under each served
// customer.
func findRecord(ctx context.Context, store journal.Store, customers []string, arg string) (*journal.Record, error) {
	if strings.HasPrefix(arg, "customers/") {
		return store.Get(ctx, arg)
	}
	for _, c := range customers {
		rec, err := store.Get(ctx, process.Name(c, arg))
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, journal.ErrNotFound) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("no process %q in the journal (customers %v)", arg, customers)
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
