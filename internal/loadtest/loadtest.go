// Package loadtest is the load harness (certprov-emulator load, make bench-load): it runs the
// emulator and the adapter as separate processes on loopback with the built-in CA, starts a
// scenario's processes in one burst, and measures from the outside what issue 15 asks for:
// throughput, latency from notification to upload, API calls per process by method, the API
// request rate in any 10-second window, CPU per 1,000 processes, peak memory and goroutines,
// and memory per process while devices wait. The same workload runs against the minimal
// reference driver (package reference) on a fresh emulator in the same run, so that the
// adapter's numbers are read as ratios of what the emulator allows on this machine.
//
// Results are written as JSON (report.json) and as a markdown table (report.md).
package loadtest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/emulator"
)

// Options configure a harness run.
type Options struct {
	// AdapterBin and EmulatorBin are the two binaries (make build puts them in bin/).
	AdapterBin, EmulatorBin string
	// Scenarios are the names to run (Scenarios()); empty runs all.
	Scenarios []string
	// Scale shrinks every scenario: 1 is the full size (20,000 and 10,000 processes).
	Scale float64
	// Runs repeats every scenario, alternating which driver goes first, for the spread.
	Runs int
	// Processes, when positive, replaces every scenario's process count after Scale, which
	// then scales only the delays: a knob study of long waits with fewer processes.
	Processes int
	// PostgresDSN reaches a PostgreSQL server where each adapter run gets a fresh schema; the
	// postgres scenarios are skipped without it.
	PostgresDSN string
	// OutDir receives report.json, report.md and a directory per run with its logs.
	OutDir string
	// Override replaces the scenarios' settings (a knob study).
	Override Override
	// ProfileSeconds, when positive, takes a CPU profile of the adapter for that long from the
	// burst's start, and an allocation profile at its end, in the a scenarios' first run.
	ProfileSeconds int
	// CountSyscalls runs the adapter under strace -c to count fsync, fdatasync and writes per
	// certificate; strace slows those calls, so the run's times are not comparable.
	CountSyscalls bool
	// Timeout bounds one driver's run of a scenario; 0 derives it from the scenario.
	Timeout time.Duration
	// Seed makes the sign delays and the mix of a scenario the same for every driver and run.
	Seed uint64
	// Progress receives a line per step; nil discards.
	Progress io.Writer
}

// Override holds the settings to force in every scenario; nil fields keep the scenario's.
type Override struct {
	Workers, Streams, MaxOutstandingMessages, Burst *int
	RequestsPerSecond                               *float64
	PollInterval, MaxPollInterval                   *time.Duration
	LogLevel                                        *string
}

func (o Override) apply(s *Settings) {
	set := func(dst *int, v *int) {
		if v != nil {
			*dst = *v
		}
	}
	set(&s.Workers, o.Workers)
	set(&s.Streams, o.Streams)
	set(&s.MaxOutstandingMessages, o.MaxOutstandingMessages)
	set(&s.Burst, o.Burst)
	if o.RequestsPerSecond != nil {
		s.RequestsPerSecond = *o.RequestsPerSecond
	}
	if o.PollInterval != nil {
		s.PollInterval = Duration(*o.PollInterval)
	}
	if o.MaxPollInterval != nil {
		s.MaxPollInterval = Duration(*o.MaxPollInterval)
	}
	if o.LogLevel != nil {
		s.LogLevel = *o.LogLevel
	}
}

// Run runs the selected scenarios and writes the report. It returns the report even when a run
// failed (the failure is in its Result), and an error only when the harness itself could not
// work (bad options, a binary that does not start, no space for the report).
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs <= 0 {
		o.Runs = 1
	}
	if o.Scale == 0 {
		o.Scale = 1
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.AdapterBin == "" || o.EmulatorBin == "" || o.OutDir == "" {
		return nil, errors.New("load: the adapter and emulator binaries and an output directory are required")
	}
	// Children run in their own directories, and the adapter resolves its configuration's paths
	// against the file's.
	for _, p := range []*string{&o.AdapterBin, &o.EmulatorBin, &o.OutDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		*p = abs
	}
	scenarios, err := Select(o.Scenarios, o.Scale)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	h := &harness{o: o, http: &http.Client{Timeout: 2 * time.Minute}}
	rep := &Report{Machine: describeMachine(), Started: time.Now().UTC(), Scale: o.Scale, Runs: o.Runs, Seed: o.Seed}
	for i := range scenarios {
		o.Override.apply(&scenarios[i].Settings)
		if o.Processes > 0 {
			scenarios[i].Processes = o.Processes
		}
	}
	rep.Scenarios = scenarios
	if err := h.makeCA(); err != nil {
		return nil, err
	}
	h.ops = h.adapterHasOps()
	if !h.ops {
		h.progress("the adapter has no ops listener: goroutines and profiles are not measured")
	}
	for run := 1; run <= o.Runs; run++ {
		for _, s := range scenarios {
			if s.Journal == JournalPostgres && o.PostgresDSN == "" {
				h.progress("%s: skipped, no PostgreSQL (--postgres-dsn or CERTPROV_TEST_POSTGRES_DSN)", s.Name)
				continue
			}
			drivers := slices.Clone(s.Drivers)
			if run%2 == 0 {
				slices.Reverse(drivers) // alternate who goes first, so that neither always meets a warmer machine
			}
			for _, d := range drivers {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				res := h.runOne(ctx, s, d, run)
				rep.Results = append(rep.Results, res)
				h.progress("%s run %d %s: %s", s.Name, run, d, res.short())
			}
		}
	}
	rep.Finished = time.Now().UTC()
	rep.summarize()
	if err := rep.write(o.OutDir); err != nil {
		return rep, err
	}
	return rep, nil
}

type harness struct {
	o      Options
	http   *http.Client
	caDir  string
	caCert string
	roots  *x509.CertPool
	ops    bool // the adapter binary has the ops listener (metrics, pprof)
}

// adapterHasOps asks the adapter binary whether it knows the ops section, which serves the
// goroutine gauge and the profiler; an adapter built before it does not.
func (h *harness) adapterHasOps() bool {
	dir, err := os.MkdirTemp("", "certprov-load-probe-")
	if err != nil {
		return false
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "probe.yaml")
	if err := writeAdapterConfig(cfg, adapterConfig{Name: "probe", PubSub: "127.0.0.1:1", REST: "http://127.0.0.1:1",
		Settings: baseSettings(), Journal: JournalSQLite, CACert: h.caCert, CAKey: filepath.Join(h.caDir, "ca.key"), Ops: "127.0.0.1:0"}); err != nil {
		return false
	}
	out, _ := exec.Command(h.o.AdapterBin, "validate", "--offline", "--config", cfg).CombinedOutput()
	return !regexp.MustCompile(`\bops(\.\w+)?: unknown key`).Match(out)
}

func (h *harness) progress(format string, args ...any) {
	fmt.Fprintf(h.o.Progress, "load: "+format+"\n", args...)
}

// makeCA creates the adapter's built-in CA once for all runs (each run has its own ledger).
func (h *harness) makeCA() error {
	h.caDir = filepath.Join(h.o.OutDir, "ca")
	if err := os.RemoveAll(h.caDir); err != nil {
		return fmt.Errorf("load: %w", err)
	}
	cert, _, err := local.CreateCA(h.caDir, "ecdsa", "certprov load test CA", 30*24*time.Hour)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	pemBytes, err := os.ReadFile(cert)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	h.caCert = cert
	h.roots, _, err = emulator.CertPoolFromPEM(pemBytes)
	return err
}

// keyPool is how many device keys of each type the emulator makes: RSA-2048 generation would
// otherwise take longer than the burst it feeds.
const keyPool = 16

var (
	emulatorReady  = regexp.MustCompile(`emulator ready rest=(\S+) pubsub=(\S+)`)
	referenceReady = regexp.MustCompile(`reference ready metrics=(\S+)`)
	adapterReady   = regexp.MustCompile(`Pub/Sub stream open; receiving notifications`)
)

// driverProc is one process working the scenario: an adapter replica or the reference driver.
type driverProc struct {
	*child
	metrics string // URL of its Prometheus endpoint
	ops     string // base URL of the adapter's ops listener (profiles)
	target  int    // the PID to sample: the adapter itself, under strace too
	strace  string // strace -c output, with CountSyscalls
}

// runOne runs scenario s once with driver d on a fresh emulator and measures it.
func (h *harness) runOne(ctx context.Context, s Scenario, d string, run int) (res Result) {
	res = Result{Scenario: s.Name, Run: run, Driver: d, Processes: s.Processes, Settings: s.Settings, Started: time.Now().UTC()}
	if d == DriverAdapter {
		res.Replicas = s.Replicas
		res.Journal = s.Journal
	}
	dir := filepath.Join(h.o.OutDir, fmt.Sprintf("%s-run%d-%s", s.Name, run, d))
	if err := os.RemoveAll(dir); err != nil {
		res.fail(err)
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.fail(err)
		return res
	}
	res.Dir = dir
	timeout := h.o.Timeout
	if timeout <= 0 {
		timeout = s.timeout()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+2*time.Minute)
	defer cancel()

	emu, restURL, pubsubAddr, err := h.startEmulator(ctx, dir, s)
	if err != nil {
		res.fail(err)
		return res
	}
	defer func() {
		if err := emu.stop(10 * time.Second); err != nil {
			res.fail(err)
		}
	}()
	var procs []*driverProc
	var cleanup func()
	roots := h.roots
	switch d {
	case DriverAdapter:
		procs, cleanup, err = h.startAdapters(ctx, dir, s, restURL, pubsubAddr)
	case DriverReference:
		var p *driverProc
		p, roots, err = h.startReference(ctx, dir, s, restURL, pubsubAddr)
		procs = []*driverProc{p}
	default:
		err = fmt.Errorf("unknown driver %q", d)
	}
	if cleanup != nil {
		defer cleanup()
	}
	defer func() {
		for _, p := range procs {
			if p == nil {
				continue
			}
			if err := p.stopVia(p.target, 40*time.Second); err != nil {
				res.fail(err)
			}
		}
		if d == DriverAdapter {
			res.countLogs(procs)
			if h.o.CountSyscalls {
				res.readStrace(procs)
			}
		}
	}()
	if err != nil {
		res.fail(err)
		return res
	}
	h.measure(ctx, &res, s, emu, procs, restURL, roots, timeout, run)
	return res
}

func (s Scenario) timeout() time.Duration {
	// Generous: 20 processes a second, or half what the rate limit allows at 5 calls each, and
	// the longest device delay.
	perProcess := max(time.Second/20, time.Duration(float64(10*time.Second)/s.Settings.RequestsPerSecond))
	return 3*time.Minute + time.Duration(s.Processes)*perProcess + time.Duration(s.SignDelay[1])
}

func (h *harness) startEmulator(ctx context.Context, dir string, s Scenario) (*child, string, string, error) {
	c, err := start(dir, "emulator", h.o.EmulatorBin, []string{"serve",
		"--listen", "127.0.0.1:0", "--pubsub-listen", "127.0.0.1:0", "--ack-deadline", "60s",
		"--key-pool", fmt.Sprint(keyPool), "--latency", s.Latency.String(), "--log-level", "warn",
	}, nil)
	if err != nil {
		return nil, "", "", err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m, err := c.waitFor(rctx, c.out, emulatorReady)
	if err != nil {
		_ = c.stop(5 * time.Second)
		return nil, "", "", err
	}
	return c, m[1], m[2], nil
}

func (h *harness) startReference(ctx context.Context, dir string, s Scenario, restURL, pubsubAddr string) (*driverProc, *x509.CertPool, error) {
	caOut := filepath.Join(dir, "reference-ca.crt")
	c, err := start(dir, "reference", h.o.EmulatorBin, []string{"reference",
		"--emulator", restURL, "--pubsub", pubsubAddr, "--project", emulator.DefaultProject,
		"--subscription", emulator.DefaultSubscription, "--ca-out", caOut,
		"--streams", fmt.Sprint(s.Settings.Streams), "--max-outstanding-messages", fmt.Sprint(s.Settings.MaxOutstandingMessages),
		"--poll-interval", s.Settings.PollInterval.String(), "--max-poll-interval", s.Settings.MaxPollInterval.String(),
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	m, err := c.waitFor(rctx, c.out, referenceReady)
	if err != nil {
		_ = c.stop(5 * time.Second)
		return nil, nil, err
	}
	pemBytes, err := os.ReadFile(caOut)
	if err != nil {
		_ = c.stop(5 * time.Second)
		return nil, nil, err
	}
	roots, _, err := emulator.CertPoolFromPEM(pemBytes)
	if err != nil {
		_ = c.stop(5 * time.Second)
		return nil, nil, err
	}
	return &driverProc{child: c, metrics: m[1] + "/metrics", target: c.pid()}, roots, nil
}

// startAdapters writes a configuration per replica and starts them; cleanup drops the
// PostgreSQL schema.
func (h *harness) startAdapters(ctx context.Context, dir string, s Scenario, restURL, pubsubAddr string) ([]*driverProc, func(), error) {
	var dsn string
	var cleanup func()
	if s.Journal == JournalPostgres {
		var err error
		dsn, cleanup, err = freshSchema(ctx, h.o.PostgresDSN)
		if err != nil {
			return nil, nil, err
		}
	}
	var procs []*driverProc
	for i := range s.Replicas {
		name := "adapter"
		if s.Replicas > 1 {
			name = fmt.Sprintf("adapter-%d", i+1)
		}
		var ops string
		if h.ops {
			var err error
			if ops, err = freeAddr(); err != nil {
				return procs, cleanup, err
			}
		}
		cfg := filepath.Join(dir, name+".yaml")
		if err := writeAdapterConfig(cfg, adapterConfig{
			Name: name, PubSub: pubsubAddr, REST: restURL, Settings: s.Settings, Journal: s.Journal,
			CACert: h.caCert, CAKey: filepath.Join(h.caDir, "ca.key"), Ops: ops,
		}); err != nil {
			return procs, cleanup, err
		}
		bin, args := h.o.AdapterBin, []string{"run", "--config", cfg}
		var env []string
		if dsn != "" {
			env = []string{"CERTPROV_JOURNAL_DSN=" + dsn} // a DSN may hold a password: not in the file
		}
		var straceOut string
		if h.o.CountSyscalls {
			straceOut = filepath.Join(dir, name+".strace")
			args = append([]string{"-f", "--seccomp-bpf", "-qq", "-c", "-o", straceOut,
				"-e", "trace=fsync,fdatasync,write,pwrite64,writev,pwritev", "--", bin}, args...)
			bin = "strace"
		}
		c, err := start(dir, name, bin, args, env)
		if err != nil {
			return procs, cleanup, err
		}
		p := &driverProc{child: c, target: c.pid(), strace: straceOut}
		if ops != "" {
			p.metrics, p.ops = "http://"+ops+"/metrics", "http://"+ops
		}
		procs = append(procs, p)
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err = c.waitFor(rctx, c.err, adapterReady)
		cancel()
		if err != nil {
			return procs, cleanup, err
		}
		if h.o.CountSyscalls {
			if p.target, err = onlyChild(c.pid()); err != nil {
				return procs, cleanup, err
			}
		}
	}
	return procs, cleanup, nil
}

// onlyChild is the one child process of pid (the adapter under strace).
func onlyChild(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data))
	if len(f) != 1 {
		return 0, fmt.Errorf("process %d has children %q, want one", pid, f)
	}
	var child int
	_, err = fmt.Sscan(f[0], &child)
	return child, err
}

// freshSchema creates a schema on the server of dsn and returns a DSN that selects it, and a
// function that drops it.
func freshSchema(ctx context.Context, dsn string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(ctx)
	schema := fmt.Sprintf("certprov_load_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create schema: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", nil, fmt.Errorf("parse the PostgreSQL DSN: %w", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
			_ = c.Close(ctx)
		}
	}
	return u.String(), drop, nil
}

type adapterConfig struct {
	Name, PubSub, REST string
	Settings           Settings
	Journal            string
	CACert, CAKey, Ops string
}

// adapterTemplate is the adapter's configuration in a load run: the demo's profiles, the
// built-in CA with a ledger, an audit file, the ops listener with the profiler, and the run's
// settings; everything else at its default. Replicas share the CA's ledger (flock orders the
// appends) and, on PostgreSQL, the instance id.
var adapterTemplate = template.Must(template.New("adapter").Parse(`instanceId: load-adapter
customers: [C0demo]
pubsub:
  project: demo
  subscription: certprov-adapter
  endpoint: {{.PubSub}}
  insecure: true
  streams: {{.Settings.Streams}}
  maxOutstandingMessages: {{.Settings.MaxOutstandingMessages}}
google:
  endpoint: {{.REST}}/
  credentials: {type: none}
  rateLimit: {requestsPerSecond: {{.Settings.RequestsPerSecond}}, burst: {{.Settings.Burst}}}
engine:
  workers: {{.Settings.Workers}}
  pollInterval: {{.Settings.PollInterval}}
  maxPollInterval: {{.Settings.MaxPollInterval}}
journal:
{{- if eq .Journal "postgres"}}
  type: postgres   # dsn: CERTPROV_JOURNAL_DSN
{{- else}}
  type: sqlite
  path: {{.Name}}-journal.db
{{- end}}
log: {level: {{.Settings.LogLevel}}, format: json}
audit: {path: {{.Name}}-audit.jsonl}
{{- if .Ops}}
ops: {listen: {{.Ops}}, pprof: true}
{{- end}}
profiles:
  device:
    subject:
      commonName: "{{"{{"}}.Device.SerialNumber{{"}}"}}"
      organization: [Example Corp]
      organizationalUnit: [ChromeOS devices]
    subjectAltNames:
      uri: ["urn:chromeos:device:{{"{{"}}.Device.DirectoryID{{"}}"}}"]
    keyUsage: [digitalSignature, keyEncipherment]
    extendedKeyUsage: [clientAuth]
    validity: 720h
    signDeadline: 1h
  user:
    subject:
      commonName: "{{"{{"}}.User.Email{{"}}"}}"
    subjectAltNames:
      email: ["{{"{{"}}.User.Email{{"}}"}}"]
    extendedKeyUsage: [clientAuth]
    validity: 720h
    signDeadline: 1h
caConnections:
  builtin:
    type: local
    certificateFile: {{.CACert}}
    keyFile: {{.CAKey}}
    ledgerFile: ledger.jsonl
`))

func writeAdapterConfig(path string, c adapterConfig) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	return errors.Join(adapterTemplate.Execute(f, c), f.Close())
}

// specs is the scenario's workload: the demo's mix of device and user processes with RSA-2048
// and P-256 keys, and sign delays drawn from the scenario's range, the same for every driver.
func (h *harness) specs(s Scenario, run int) []emulator.ProcessSpec {
	rng := rand.New(rand.NewPCG(h.o.Seed, uint64(run)))
	kinds := []struct{ scope, key, profile string }{
		{emulator.ScopeDevice, emulator.KeyRSA, "device"}, {emulator.ScopeDevice, emulator.KeyECDSA, "device"},
		{emulator.ScopeUser, emulator.KeyRSA, "user"}, {emulator.ScopeUser, emulator.KeyECDSA, "user"},
	}
	out := make([]emulator.ProcessSpec, s.Processes)
	lo, hi := time.Duration(s.SignDelay[0]), time.Duration(s.SignDelay[1])
	for i := range out {
		k := kinds[i%len(kinds)]
		delay := lo
		if hi > lo {
			delay += time.Duration(rng.Int64N(int64(hi - lo)))
		}
		out[i] = emulator.ProcessSpec{Scope: k.scope, KeyType: k.key, ProfileRef: k.profile, CARef: "builtin",
			SignDelay: delay, NoPublish: true}
	}
	return out
}

// createChunk keeps a control request well under the emulator's 1 MiB body limit.
const createChunk = 2000

// measure runs the workload against the started drivers and fills res.
func (h *harness) measure(ctx context.Context, res *Result, s Scenario, emuProc *child, procs []*driverProc,
	restURL string, roots *x509.CertPool, timeout time.Duration, run int) {
	ctl := emulator.NewControlClient(restURL, h.http)
	specs := h.specs(s, run)
	var names []string
	for i := 0; i < len(specs); i += createChunk {
		n, err := ctl.Create(ctx, specs[i:min(i+createChunk, len(specs))])
		if err != nil {
			res.fail(err)
			return
		}
		names = append(names, n...)
	}
	sm := newSampler(h.http, procs)
	base := sm.sample(ctx)
	res.Baseline = base.summary()

	if h.o.ProfileSeconds > 0 && run == 1 && s.Name[0] == 'a' && procs[0].ops != "" {
		stopProfile := h.profile(ctx, res, procs[0])
		defer stopProfile()
	}
	emuStart, _ := readProc(emuProc.pid())
	notified := time.Now()
	if err := ctl.Notify(ctx, names); err != nil {
		res.fail(err)
		return
	}
	h.progress("%s run %d %s: %d processes notified", s.Name, run, res.Driver, len(names))

	deadline := notified.Add(timeout)
	var last sample
	for {
		st, err := ctl.Stats(ctx, time.Second)
		if err != nil {
			res.fail(err)
			return
		}
		last = sm.sample(ctx)
		// Only a scenario whose devices take their time has a plateau of waiting processes
		// worth measuring; in a burst a process waits a poll interval at most.
		if waiting := st.Processes[emulator.StateSigning]; s.SignDelay[1] > 0 && (res.Waiting == nil || waiting > res.Waiting.Processes) {
			res.Waiting = last.waiting(waiting, base)
		}
		done := st.Processes[emulator.StateIssued] + st.Processes[emulator.StateFailed]
		if done >= len(names) {
			break
		}
		if time.Now().After(deadline) {
			res.fail(fmt.Errorf("timed out after %s: %d of %d processes ended (%v)", timeout, done, len(names), st.Processes))
			break
		}
		select {
		case <-ctx.Done():
			res.fail(ctx.Err())
			return
		case <-time.After(time.Second):
		}
	}
	res.PeakGoroutines = sm.peakGoroutines
	res.CPUSeconds = (last.cpu() - base.cpu()).Seconds()
	res.PeakRSS = last.hwm()
	res.writes = last.syscw() - base.syscw()
	res.written = last.written() - base.written()
	if emuEnd, err := readProc(emuProc.pid()); err == nil {
		res.EmulatorCPUSeconds = (emuEnd.CPU - emuStart.CPU).Seconds()
	}
	stats, err := ctl.Stats(ctx, 10*time.Second)
	if err != nil {
		res.fail(err)
		return
	}
	minute, err := ctl.Stats(ctx, time.Minute)
	if err != nil {
		res.fail(err)
		return
	}
	res.MaxIn60s = minute.MaxInWindow
	snaps, err := ctl.List(ctx)
	if err != nil {
		res.fail(err)
		return
	}
	res.evaluate(snaps, stats, roots, s)
}

// profile fetches a CPU profile of the adapter from the burst's start, the goroutines halfway
// through it (where the workers wait), and an allocation profile when the returned function runs
// (the burst's end).
func (h *harness) profile(ctx context.Context, res *Result, p *driverProc) func() {
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.fail(fmt.Errorf("%s: %w", what, err))
	}
	secs := time.Duration(h.o.ProfileSeconds) * time.Second
	cpu := filepath.Join(res.Dir, "adapter-cpu.pprof")
	goroutines := filepath.Join(res.Dir, "adapter-goroutines.txt")
	allocs := filepath.Join(res.Dir, "adapter-allocs.pprof")
	wg.Go(func() {
		url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", p.ops, h.o.ProfileSeconds)
		if err := fetch(ctx, &http.Client{Timeout: secs + time.Minute}, url, cpu); err != nil {
			failed("cpu profile", err)
		}
	})
	wg.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(secs / 2):
		}
		if err := fetch(ctx, h.http, p.ops+"/debug/pprof/goroutine?debug=1", goroutines); err != nil {
			failed("goroutine profile", err)
		}
	})
	return func() {
		if err := fetch(ctx, h.http, p.ops+"/debug/pprof/allocs", allocs); err != nil {
			failed("allocation profile", err)
		}
		wg.Wait()
		res.Profiles = []string{cpu, goroutines, allocs}
	}
}

// Machine describes where the numbers were measured.
type Machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpuModel"`
	MemoryMiB int64   `json:"memoryMiB"`
	GoVersion string  `json:"goVersion"`
	OS        string  `json:"os"`
	Load1     float64 `json:"load1AtStart"` // other work on the machine when the run began
}

func describeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if rest, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryMiB = plainField(data, "MemTotal:") / 1024
	}
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		_, _ = fmt.Sscan(string(data), &m.Load1)
	}
	return m
}
