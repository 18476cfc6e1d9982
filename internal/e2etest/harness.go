// Package e2etest runs the real pieces of the adapter together on loopback for tests: the
// emulator's REST API over HTTP and its pstest Pub/Sub over gRPC, the Chrome API client, the
// engine, the intake, an in-memory journal, the built-in CA and whatever other CA connectors a
// test brings. Connector packages use it to prove the whole flow against their real CA server.
package e2etest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/clocktest"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/intake"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics/metricstest"
)

const (
	// Customer is the customer the harness serves.
	Customer = "C0test"
	// InstanceID is the adapter's callerInstanceId.
	InstanceID = "adapter-under-test"
	// BuiltinCA is the name of the local CA connection every harness has.
	BuiltinCA = "builtin"
)

// Options shape a Harness. Zero values take test-friendly defaults.
type Options struct {
	// SignDeadline of the built-in profiles "device" and "user" (default 30s).
	SignDeadline time.Duration
	// RetryFor bounds transient failures of a step (default 20s).
	RetryFor time.Duration
	// CAs adds CA connections next to "builtin"; it runs once the built-in CA exists.
	CAs func(h *Harness) map[string]ca.Connector
	// Profiles adds or replaces adapter profiles.
	Profiles map[string]config.Profile
	// Verbose logs at info level instead of warn.
	Verbose bool
	// LeaseDuration and ShutdownGracePeriod go to the engine (default: the engine's).
	LeaseDuration       time.Duration
	ShutdownGracePeriod time.Duration
	// Journal opens the journal (default: in memory), e.g. a SQLite file or a PostgreSQL schema
	// of the test's own; it closes the store through t.Cleanup.
	Journal func(t testing.TB) journal.Store
	// Store wraps the journal, for tests that inject journal faults (default: none).
	Store func(journal.Store) journal.Store
	// CATimeout bounds one call of every CA connection (default 10s).
	CATimeout time.Duration
	// REST wraps the emulator's REST API handler, for faults the emulator has no switch for.
	REST func(http.Handler) http.Handler
	// Audit wraps the audit log (a file in the test's directory), for tests that inject audit
	// faults (default: none).
	Audit func(*audit.Log) engine.Auditor
	// Directory turns google.directory on, with its defaults: the emulator serves it, with the
	// records a test puts there (Emu.SetDirectoryDevice, Emu.SetDirectoryUser).
	Directory bool
	// BuiltinCRL gives the built-in CA a CRL file, so that it can revoke (Local.RevocationStatus
	// reads it).
	BuiltinCRL bool
	// Now is the engine's clock (default time.Now), for tests that let hours pass.
	Now func() time.Time
}

// Harness is a running adapter against a running emulator.
type Harness struct {
	t     testing.TB
	Emu   *emulator.Emulator
	Roots *x509.CertPool // the built-in CA
	Local *local.Connector
	// Registry holds every metric the adapter's components export (package metrics).
	Registry *prometheus.Registry
	Store    journal.Store
	API      *chromeapi.Client // the adapter's own client, for tests that set a scene
	// Logs holds every entry the adapter's components logged, at the harness's level.
	Logs *observer.ObservedLogs
	// AuditPath is the file the engine writes its audit events to.
	AuditPath string

	ctx        context.Context
	engineOpts engine.Options
	mu         sync.Mutex
	stopEngine func() error // stops the running engine and waits for Run to return
	eng        *engine.Engine
}

// Profile is the profile the built-in "device" and "user" profiles are made from.
func Profile(cn, sanEmail string, deadline time.Duration) config.Profile {
	p := config.Profile{
		Subject:      config.Subject{CommonName: cn, Organization: []string{"Example Corp"}},
		KeyUsage:     []string{"digitalSignature", "keyEncipherment"},
		ExtKeyUsage:  []string{"clientAuth"},
		Validity:     24 * time.Hour,
		SignDeadline: deadline,
	}
	if sanEmail != "" {
		p.SubjectAltNames.Email = []string{sanEmail}
	}
	return p
}

// h0config is the adapter's configuration for the harness: the emulator's REST API at restURL
// and Pub/Sub at pubsubAddr, fast polling and retries, the built-in profiles and o's.
func h0config(o Options, restURL, pubsubAddr string) *config.Config {
	cfg := config.Defaults()
	cfg.InstanceID, cfg.Customers = InstanceID, []string{Customer}
	cfg.PubSub.Project, cfg.PubSub.Subscription = "test", "adapter"
	cfg.PubSub.Endpoint, cfg.PubSub.Insecure = pubsubAddr, true
	cfg.Google.Endpoint = restURL + "/"
	cfg.Google.Credentials = config.Credentials{Type: config.CredentialsNone}
	cfg.Google.RateLimit = config.RateLimit{RequestsPerSecond: 2000, Burst: 200}
	cfg.Google.RequestTimeout = 5 * time.Second
	cfg.Engine = config.Engine{
		Workers: 8, PollInterval: 20 * time.Millisecond, MaxPollInterval: 200 * time.Millisecond,
		Retry: config.Retry{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxDuration: o.RetryFor},
	}
	if o.LeaseDuration > 0 {
		cfg.Journal.LeaseDuration = o.LeaseDuration
	}
	if o.ShutdownGracePeriod > 0 {
		cfg.ShutdownGracePeriod = o.ShutdownGracePeriod
	}
	cfg.Google.Directory.Enabled = o.Directory
	cfg.Profiles = map[string]config.Profile{
		"device": Profile("{{.Device.SerialNumber}}", "", o.SignDeadline),
		"user":   Profile("{{.User.Email}}", "{{.User.Email}}", o.SignDeadline),
	}
	maps.Copy(cfg.Profiles, o.Profiles)
	cfg.CAConnections = map[string]config.CAConnection{}
	return &cfg
}

// New starts everything and stops it when the test ends.
func New(t testing.TB, o Options) *Harness {
	t.Helper()
	if o.SignDeadline == 0 {
		o.SignDeadline = 30 * time.Second
	}
	if o.RetryFor == 0 {
		o.RetryFor = 20 * time.Second
	}
	if o.CATimeout == 0 {
		o.CATimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	level := zap.WarnLevel
	if o.Verbose {
		level = zap.InfoLevel
	}
	observed, logs := observer.New(level)
	log := zaptest.NewLogger(t, zaptest.Level(level), zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, observed)
	})))

	emu, err := emulator.New(ctx, emulator.Options{Project: "test", Topic: "certprov", Subscription: "adapter", Logger: log.Named("emulator")})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	var handler http.Handler = emu.Handler()
	if o.REST != nil {
		handler = o.REST(handler)
	}
	rest := httptest.NewServer(handler)

	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "test CA", 48*time.Hour)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	cfg := h0config(o, rest.URL, emu.PubSubAddr())
	cfg.Audit.Path = filepath.Join(dir, "audit.jsonl")
	cfg.CAConnections[BuiltinCA] = config.CAConnection{Type: local.Type, Timeout: o.CATimeout,
		Settings: map[string]any{"certificateFile": certPath, "keyFile": keyPath, "ledgerFile": filepath.Join(dir, "ledger.jsonl")}}
	if o.BuiltinCRL {
		cfg.CAConnections[BuiltinCA].Settings["crlFile"] = filepath.Join(dir, "ca.crl")
	}
	// The adapter's own wiring, from the configuration; the harness only adds the test's
	// connectors and wraps the journal and the audit log when a test injects faults there.
	cas, err := adapter.Connectors(cfg, log)
	if err != nil {
		t.Fatalf("CA connections: %v", err)
	}
	profiles, err := adapter.Profiles(cfg)
	if err != nil {
		t.Fatalf("profiles: %v", err)
	}
	var store journal.Store = journal.NewMemory()
	if o.Journal != nil {
		store = o.Journal(t)
	}
	if o.Store != nil {
		store = o.Store(store)
	}
	h := &Harness{t: t, Emu: emu, Roots: x509.NewCertPool(), Local: cas[BuiltinCA].Connector.(*local.Connector), Registry: prometheus.NewRegistry(), Store: store, Logs: logs, ctx: ctx,
		AuditPath: cfg.Audit.Path}
	auditLog, err := audit.Open(cfg.Audit.Path, log.Named("audit"))
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	var auditor engine.Auditor = auditLog
	if o.Audit != nil {
		auditor = o.Audit(auditLog)
	}
	h.Roots.AddCert(h.Local.Certificate())
	if o.CAs != nil {
		for name, c := range o.CAs(h) {
			cas[name] = &engine.CAConnection{Connector: c, Timeout: o.CATimeout}
		}
	}

	apiOpts := adapter.APIOptions(cfg, log.Named("chromeapi"), h.Registry)
	apiOpts.MaxInlineWait = 300 * time.Millisecond
	api, err := chromeapi.New(ctx, apiOpts)
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	h.API = api
	h.engineOpts = adapter.EngineOptions(cfg)
	h.engineOpts.API, h.engineOpts.Store, h.engineOpts.Profiles, h.engineOpts.CAs, h.engineOpts.Audit = api, h.Store, profiles, cas, auditor
	h.engineOpts.Logger, h.engineOpts.Registerer, h.engineOpts.Now = log.Named("engine"), h.Registry, o.Now
	if h.engineOpts.Directory, _, err = adapter.Directory(ctx, cfg, log.Named("directory"), h.Registry); err != nil {
		t.Fatalf("directory client: %v", err)
	}
	eng, err := engine.New(h.engineOpts)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	recv := intake.NewReceiver(adapter.ReceiverOptions(cfg, eng, log.Named("intake"), h.Registry))
	ps, err := adapter.PubSubClient(ctx, cfg, recv.ClientOptions())
	if err != nil {
		t.Fatalf("pubsub client: %v", err)
	}

	var wg sync.WaitGroup
	wg.Add(1)
	h.runEngine(ctx, eng)
	go func() { defer wg.Done(); _ = recv.Run(ctx, ps.Subscriber(cfg.PubSub.Subscription)) }()
	t.Cleanup(func() {
		cancel()
		_ = h.StopEngine()
		wg.Wait()
		_ = ps.Close()
		rest.Close()
		_ = emu.Close()
		_ = auditLog.Close()
	})
	return h
}

// runEngine runs eng until StopEngine or the end of ctx.
func (h *Harness) runEngine(ctx context.Context, eng *engine.Engine) {
	ectx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- eng.Run(ectx) }()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopEngine = func() error { stop(); return <-done }
	h.eng = eng
}

// StartReplica runs another engine with the harness's configuration, API client and CA
// connections on store, as a second replica sharing the journal's database would (its own
// Store value, its own lease owner), until the test ends.
func (h *Harness) StartReplica(store journal.Store) *engine.Engine {
	h.t.Helper()
	o := h.engineOpts
	o.Store = store
	eng, err := engine.New(o)
	if err != nil {
		h.t.Fatalf("replica engine: %v", err)
	}
	ctx, stop := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = eng.Run(ctx) }()
	h.t.Cleanup(func() { stop(); <-done })
	return eng
}

// Engine is the engine running now.
func (h *Harness) Engine() *engine.Engine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.eng
}

// NewLocalCA creates another built-in CA in the test's directory, for tests that change CAs.
func (h *Harness) NewLocalCA(name string) (*local.Connector, *x509.CertPool) {
	h.t.Helper()
	certPath, keyPath, err := local.CreateCA(filepath.Join(h.t.TempDir(), name), "ecdsa", name, 48*time.Hour)
	if err != nil {
		h.t.Fatalf("create CA: %v", err)
	}
	conn, err := local.New(ca.Settings{"certificateFile": certPath, "keyFile": keyPath}, ca.Env{Name: name})
	if err != nil {
		h.t.Fatalf("local CA: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(conn.Certificate())
	return conn, roots
}

// StopEngine stops the engine as a SIGTERM would and returns once its Run returned (so after
// its shutdown grace period at the latest). The intake keeps running. Calling it again, or
// with no engine running, does nothing.
func (h *Harness) StopEngine() error {
	h.mu.Lock()
	stop := h.stopEngine
	h.stopEngine = nil
	h.mu.Unlock()
	if stop == nil {
		return nil
	}
	return stop()
}

// RestartEngine starts a new engine, as a restarted adapter would: same configuration and
// journal, a new lease owner. The previous one must have been stopped.
func (h *Harness) RestartEngine() {
	h.t.Helper()
	h.mu.Lock()
	running := h.stopEngine != nil
	h.mu.Unlock()
	if running {
		h.t.Fatal("RestartEngine: the engine is still running; call StopEngine first")
	}
	eng, err := engine.New(h.engineOpts)
	if err != nil {
		h.t.Fatalf("engine: %v", err)
	}
	h.runEngine(h.ctx, eng)
}

// Start starts a process on the emulator, filling in the customer, the built-in CA and the
// profile matching the scope where the spec leaves them empty.
func (h *Harness) Start(spec emulator.ProcessSpec) string {
	h.t.Helper()
	if spec.Customer == "" {
		spec.Customer = Customer
	}
	if spec.CARef == "" {
		spec.CARef = BuiltinCA
	}
	if spec.ProfileRef == "" && spec.SCEPProfile == nil {
		spec.ProfileRef = "device"
		if spec.Scope == "user" {
			spec.ProfileRef = "user"
		}
	}
	name, err := h.Emu.StartProcess(context.Background(), spec)
	if err != nil {
		h.t.Fatalf("start process: %v", err)
	}
	return name
}

// WaitFinished waits until every named process has ended on the emulator's side.
func (h *Harness) WaitFinished(names []string, timeout time.Duration) map[string]emulator.Snapshot {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := map[string]emulator.Snapshot{}
		pending := 0
		for _, n := range names {
			s, ok := h.Emu.Process(n)
			if !ok {
				h.t.Fatalf("emulator lost process %s", n)
			}
			if !s.Finished() {
				pending++
			}
			out[n] = s
		}
		if pending == 0 {
			return out
		}
		if time.Now().After(deadline) {
			for _, s := range out {
				if !s.Finished() {
					h.t.Errorf("unfinished: %s state=%s calls=%v", s.Name, s.State, s.Calls)
				}
			}
			h.t.Fatalf("%d of %d processes unfinished after %s", pending, len(names), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitJournalIdle waits until the journal holds no unfinished record.
func (h *Harness) WaitJournalIdle(timeout time.Duration) {
	h.t.Helper()
	WaitFor(h.t, timeout, func() bool {
		recs, err := h.Store.Unfinished(context.Background())
		if err != nil {
			h.t.Fatal(err)
		}
		return len(recs) == 0
	})
}

// MustIssue asserts that s ended with a certificate that chains to roots (the built-in CA when
// nil) and carries the device key, and that signData was requested exactly once. For the
// built-in CA it also asserts that the CA issued exactly once.
func (h *Harness) MustIssue(s emulator.Snapshot, roots *x509.CertPool) *x509.Certificate {
	h.t.Helper()
	builtin := roots == nil
	if builtin {
		roots = h.Roots
	}
	if s.State != emulator.StateIssued {
		h.t.Fatalf("%s: state %s, failure %q", s.Name, s.State, s.FailureMessage)
	}
	leaf, err := emulator.VerifyIssued(s, roots, nil)
	if err != nil {
		h.t.Fatalf("%s: %v", s.Name, err)
	}
	if s.SignDataCount != 1 {
		h.t.Fatalf("%s: signData called %d times", s.Name, s.SignDataCount)
	}
	if builtin {
		if n := h.Local.Issued(s.Name); n != 1 {
			h.t.Fatalf("%s: CA issued %d certificates", s.Name, n)
		}
	}
	return leaf
}

// AuditEvents reads the audit file: every event, in order.
func (h *Harness) AuditEvents() []audit.Event {
	h.t.Helper()
	data, err := os.ReadFile(h.AuditPath)
	if err != nil {
		h.t.Fatalf("read audit log: %v", err)
	}
	var out []audit.Event
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var ev audit.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			h.t.Fatalf("audit log line %d is not an event: %v\n%s", i+1, err, line)
		}
		out = append(out, ev)
	}
	return out
}

// WaitFor polls cond until it holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	clocktest.WaitFor(t, "the condition", timeout, cond)
}

// Metric is the sum of the samples of the metric family name (a counter, a gauge, or a
// histogram's sample count) whose labels include each name and value pair of labels.
func (h *Harness) Metric(name string, labels ...string) float64 {
	h.t.Helper()
	return metricstest.Sum(metricstest.Gather(h.t, h.Registry), name, labels...)
}

// Series lists the samples of the metric family name, by their labels written as
// name=value pairs in label order, comma-separated.
func (h *Harness) Series(name string) map[string]float64 {
	h.t.Helper()
	return metricstest.Series(metricstest.Gather(h.t, h.Registry), name)
}
