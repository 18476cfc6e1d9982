package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/loadtest"
)

// runLoad runs the load harness (internal/loadtest) and prints the markdown report. Exit 0 when
// every run measured (all processes issued and verified), 1 when one did not, 2 for usage and
// setup errors. Whether a target was met is in the report, not in the exit status: the numbers
// depend on the machine.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	self, _ := os.Executable()
	adapter := fs.String("adapter", filepath.Join(filepath.Dir(self), "certprov-adapter"), "the certprov-adapter binary")
	emu := fs.String("emulator-bin", self, "the certprov-emulator binary (serve and reference)")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios (default all): "+scenarioNames())
	scale := fs.Float64("scale", 0.1, "size of the scenarios: 1 is the full 20,000/10,000 processes")
	runs := fs.Int("runs", 1, "repeat every scenario, alternating which driver goes first")
	processes := fs.Int("processes", 0, "replace every scenario's process count (then --scale shrinks only the delays)")
	out := fs.String("out", "load-report", "directory for report.json, report.md and the logs of every run")
	dsn := fs.String("postgres-dsn", "", "PostgreSQL for the postgres scenarios (a fresh schema per run); default $CERTPROV_TEST_POSTGRES_DSN, empty skips them")
	profile := fs.Int("profile-seconds", 0, "take a CPU profile of the adapter for this long in the a scenarios' first run, and an allocation profile")
	countSyscalls := fs.Bool("count-syscalls", false, "run the adapter under strace -c to count fsyncs and writes per certificate (slows it)")
	timeout := fs.Duration("timeout", 0, "bound on one driver's run of a scenario (default: from its size)")
	seed := fs.Uint64("seed", 1, "seed of the sign delays")
	var ov loadtest.Override
	intFlag(fs, &ov.Workers, "workers", "override engine.workers")
	intFlag(fs, &ov.Streams, "streams", "override pubsub.streams (both drivers)")
	intFlag(fs, &ov.MaxOutstandingMessages, "max-outstanding-messages", "override pubsub.maxOutstandingMessages (both drivers)")
	intFlag(fs, &ov.Burst, "burst", "override google.rateLimit.burst")
	fs.Func("requests-per-second", "override google.rateLimit.requestsPerSecond", func(s string) error {
		var v float64
		_, err := fmt.Sscan(s, &v)
		ov.RequestsPerSecond = &v
		return err
	})
	durationFlag(fs, &ov.PollInterval, "poll-interval", "override engine.pollInterval (both drivers)")
	durationFlag(fs, &ov.MaxPollInterval, "max-poll-interval", "override engine.maxPollInterval (both drivers)")
	fs.Func("log-level", "override the adapter's log.level (info)", func(s string) error { ov.LogLevel = &s; return nil })
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "load: unexpected arguments %q\n", fs.Args())
		return exitUsage
	}
	if *dsn == "" {
		*dsn = os.Getenv("CERTPROV_TEST_POSTGRES_DSN") // not a flag default: -h would print its password
	}
	var names []string
	for _, n := range strings.Split(*scenarios, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	for _, bin := range []string{*adapter, *emu} {
		if _, err := os.Stat(bin); err != nil {
			fmt.Fprintf(stderr, "load: %v (make build puts both binaries in bin/)\n", err)
			return exitUsage
		}
	}
	rep, err := loadtest.Run(ctx, loadtest.Options{
		AdapterBin: *adapter, EmulatorBin: *emu, Scenarios: names, Scale: *scale, Runs: *runs, Processes: *processes,
		PostgresDSN: *dsn, OutDir: *out, Override: ov, ProfileSeconds: *profile, CountSyscalls: *countSyscalls,
		Timeout: *timeout, Seed: *seed, Progress: stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "load: %v\n", err)
		if rep == nil {
			return exitUsage
		}
		return exitFail
	}
	fmt.Fprint(stdout, rep.Markdown())
	fmt.Fprintf(stdout, "\nreport: %s\n", filepath.Join(*out, "report.json"))
	for _, r := range rep.Results {
		if !r.OK() {
			return exitFail
		}
	}
	return exitOK
}

func scenarioNames() string {
	var names []string
	for _, s := range loadtest.Scenarios() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}

func intFlag(fs *flag.FlagSet, dst **int, name, usage string) {
	fs.Func(name, usage, func(s string) error {
		var v int
		_, err := fmt.Sscan(s, &v)
		*dst = &v
		return err
	})
}

func durationFlag(fs *flag.FlagSet, dst **time.Duration, name, usage string) {
	fs.Func(name, usage, func(s string) error {
		v, err := time.ParseDuration(s)
		*dst = &v
		return err
	})
}
