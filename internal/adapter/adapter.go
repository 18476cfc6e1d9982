// Package adapter assembles the daemon from its configuration: the API client, the CA
// connectors, the compiled profiles, the journal, the engine and the Pub/Sub intake, and, when
// enabled, the Verified Access enrollment server.
package adapter

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/intake"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/ops"
	"github.com/certprov/certprov-adapter/internal/statuspage"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
)

// Adapter is a running daemon's object graph: one pipeline per tenant (the single-customer form
// is one implicit tenant), and what they share: the audit log, the ops listener and, when
// enabled, the Verified Access enrollment server.
type Adapter struct {
	cfg *config.Config
	log *zap.Logger
	// Registry holds every metric the adapter exports on /metrics (package metrics).
	Registry *prometheus.Registry
	// Ops is the ops listener (/metrics, /healthz, /readyz); Register adds pages to it, and
	// Readiness reads the checks' latest results.
	Ops *ops.Server
	// Engine and Store are the first running tenant's: the only one in the single-customer form.
	Engine *engine.Engine
	Store  journal.Store
	// tenants are the pipelines, in the order of the configuration; a named tenant that could
	// not be built is among them with its startErr, and runs nothing.
	tenants []*tenant
	// va is the Verified Access enrollment server; nil unless verifiedAccess.enabled.
	va *verifiedaccess.Server
	// Audit is the audit trail's sink (audit.path), shared by the engines and the enrollment
	// server.
	Audit *audit.Log
	// LogLevel, when set, is the handle through which a reload changes log.level.
	LogLevel *logging.Level

	// What a reload changes (reload.go); reloading serializes reloads.
	reloading sync.Mutex
	vaClient  *verifiedaccess.Client
	checks    readiness // the readiness checks' inputs, for SetChecks after a reload
	m         *metrics.Adapter

	interrupt     chan struct{} // closed by Interrupt
	interruptOnce sync.Once
}

// ErrInterrupted is returned by Run when Interrupt cut its stop short.
var ErrInterrupted = errors.New("stop interrupted before in-flight steps finished")

// Timing of a stop beyond the grace period.
const (
	// stopMargin is how long Run waits past the grace period before it gives up on the parts
	// still running: the engine needs a moment after its grace period to release its leases.
	stopMargin = 2 * time.Second
	// closeTimeout bounds closing the Pub/Sub client, which may wait on a connection that is
	// still trying to reach Pub/Sub.
	closeTimeout = 2 * time.Second
)

// Profiles compiles every profile of the single-customer form (TenantProfiles for a named
// tenant); the error is a *config.ProblemsError with every problem at its YAML path
// (profiles.wifi.subject.commonName).
func Profiles(cfg *config.Config) (map[string]*engine.Profile, error) {
	return TenantProfiles(cfg.Implicit())
}

// Connectors builds every CA connection of the single-customer form (TenantConnectors for a
// named tenant); the error is a *config.ProblemsError with every problem at its YAML path
// (caConnections.corp.url).
func Connectors(cfg *config.Config, log *zap.Logger) (map[string]*engine.CAConnection, error) {
	return TenantConnectors(cfg.Implicit(), cfg.BaseDir, log)
}

// CheckRevokers checks that every CA connection a profile's revokeSuperseded revokes through
// (its caConnections, or every connection when it lists none) can revoke (ca.Revoker), for the
// single-customer form (TenantCheckRevokers for a named tenant); the error is a
// *config.ProblemsError at profiles.<name>.revokeSuperseded. Connections that failed to build,
// which Connectors reported, are not checked again.
func CheckRevokers(cfg *config.Config, conns map[string]*engine.CAConnection) error {
	return TenantCheckRevokers(cfg.Implicit(), conns)
}

// Connector builds the one CA connection named, which must be in cfg, with its own logger and
// paths resolved against the configuration's directory. Its error is the connector's, with its
// problems at their keys (config.ProblemsAt under caConnections.<name>).
func Connector(cfg *config.Config, name string, log *zap.Logger) (ca.Connector, error) {
	return newConnector(name, cfg.CAConnections[name], cfg.BaseDir, log)
}

// newConnector builds connection c, named name, with paths relative to baseDir.
func newConnector(name string, c config.CAConnection, baseDir string, log *zap.Logger) (ca.Connector, error) {
	return ca.New(c.Type, ca.Settings(c.Settings), ca.Env{Name: name, Logger: log.With(zap.String("ca_connection", name)), BaseDir: baseDir})
}

// CloseConnectors closes the connectors that hold resources (io.Closer: the built-in CA's
// ledger index), for callers that build connections without running them (validate, doctor).
func CloseConnectors(conns map[string]*engine.CAConnection) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(conns)) {
		if c, ok := conns[name].Connector.(io.Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close caConnections.%s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ConnectorPing is the answer of one CA connection to its health check (ca.Pinger).
type ConnectorPing struct {
	Name string
	// Checked is false for a connector that has no health check.
	Checked bool
	Err     error
}

// PingConnectors asks every connection in conns that can be pinged whether it answers, each
// within its timeout (config.DefaultCATimeout when it has none), in the order of their names:
// `validate --check-connections`.
func PingConnectors(ctx context.Context, conns map[string]*engine.CAConnection) []ConnectorPing {
	var out []ConnectorPing
	for _, name := range slices.Sorted(maps.Keys(conns)) {
		pinger, ok := conns[name].Connector.(ca.Pinger)
		if !ok {
			out = append(out, ConnectorPing{Name: name})
			continue
		}
		timeout := conns[name].Timeout
		if timeout <= 0 {
			timeout = config.DefaultCATimeout
		}
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := pinger.Ping(pctx)
		cancel()
		out = append(out, ConnectorPing{Name: name, Checked: true, Err: err})
	}
	return out
}

// CheckConnectors checks every CA connection's settings like Connectors, but without reading
// their files or building anything (ca.CheckSettings), for `validate --offline`. unchecked
// names the connections whose type has no offline check. TenantCheckConnectors does the same
// for a named tenant.
func CheckConnectors(cfg *config.Config) (unchecked []string, err error) {
	return TenantCheckConnectors(cfg.Implicit())
}

// problemsError is nil for no problems, so that callers can test err != nil.
func problemsError(ps []config.Problem) error {
	if len(ps) == 0 {
		return nil
	}
	return &config.ProblemsError{Problems: ps}
}

// VerifiedAccessProfiles compiles every Verified Access enrollment profile and binds it to its CA
// connection. A connection whose connector cannot issue for a bare public key is a problem at
// verifiedAccess.profiles.<name>.caConnection; the error joins every problem, each naming its
// YAML path.
func VerifiedAccessProfiles(cfg *config.Config, conns map[string]*engine.CAConnection) (map[string]*verifiedaccess.Profile, error) {
	cas := make(map[string]verifiedaccess.CAConnection, len(cfg.CAConnections))
	for name, c := range cfg.CAConnections {
		vc := verifiedaccess.CAConnection{Type: c.Type}
		if built := conns[name]; built != nil {
			vc.Connector, vc.Timeout = built.Connector, built.Timeout
		}
		cas[name] = vc // without a Connector when it failed to build, which Connectors reported
	}
	return verifiedaccess.Profiles(cfg, cas)
}

// verifiedAccessServer builds the enrollment server, or nil when the section is off. Its
// challenges are remembered in the journal's database when that is shared by replicas
// (PostgreSQL), so that any replica recognises an answer to a challenge another handed out; in
// memory otherwise (SQLite and memory journals serve one replica).
func verifiedAccessServer(ctx context.Context, cfg *config.Config, conns map[string]*engine.CAConnection, log *zap.Logger, reg prometheus.Registerer, trail *audit.Log, store journal.Store) (*verifiedaccess.Server, *verifiedaccess.Client, error) {
	va := cfg.VerifiedAccess
	if !va.Enabled {
		return nil, nil, nil
	}
	var challenges verifiedaccess.ChallengeStore
	if pg, ok := store.(*postgres.Store); ok {
		c, err := pg.Challenges(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("verified access: %w", err)
		}
		challenges = c
	}
	profiles, err := VerifiedAccessProfiles(cfg, conns)
	if err != nil {
		return nil, nil, err
	}
	client, err := verifiedaccess.NewClient(ctx, verifiedaccess.ClientOptions{
		Endpoint:       va.Endpoint,
		Credentials:    GoogleCredentials(cfg.Google.Credentials),
		UserAgent:      UserAgent(),
		RequestTimeout: cfg.Google.RequestTimeout,
		RateLimit:      cfg.Google.RateLimit,
		Logger:         log.Named("verifiedaccess"),
		Registerer:     reg,

		InsecureAllowCleartext: va.InsecureAllowCleartext,
	})
	if err != nil {
		return nil, nil, err
	}
	srv, err := verifiedaccess.NewServer(verifiedaccess.ServerOptions{
		Config:     va,
		Profiles:   profiles,
		Google:     client,
		Logger:     log.Named("verifiedaccess"),
		Registerer: reg,

		Challenges: challenges,

		Audit:      trail,
		InstanceID: cfg.InstanceID,
	})
	return srv, client, err
}

// EngineOptions are the engine's settings from cfg: instance id, workers, polling, retries, the
// journal lease and the shutdown grace period. The caller adds the parts the engine drives (API,
// Store, Profiles, CAs, Audit) and its Logger and Registerer.
func EngineOptions(cfg *config.Config) engine.Options {
	return engine.Options{
		InstanceID:      cfg.InstanceID,
		Workers:         cfg.Engine.Workers,
		PollInterval:    cfg.Engine.PollInterval,
		MaxPollInterval: cfg.Engine.MaxPollInterval,
		LongWaitAfter:   cfg.Engine.LongWaitAfter, LongWaitPollInterval: cfg.Engine.LongWaitPollInterval,
		Retry:         cfg.Engine.Retry,
		LeaseDuration: cfg.Journal.LeaseDuration,
		// How long a stop lets in-flight steps finish (Run).
		ShutdownGracePeriod: cfg.ShutdownGracePeriod,
	}
}

// ReceiverOptions are the Pub/Sub intake's options of the single-customer form, admitting to
// admitter (TenantReceiverOptions for a named tenant).
func ReceiverOptions(cfg *config.Config, admitter intake.Admitter, log *zap.Logger, reg prometheus.Registerer) intake.ReceiverOptions {
	return TenantReceiverOptions(cfg, cfg.Implicit(), admitter, log, reg)
}

// New builds the adapter. It does not start anything.
//
// A named tenant that cannot be built (a key file that does not load, a CA connection whose
// files are missing, a journal table it cannot create) does not stop the others: it is logged,
// runs nothing, and fails its readiness check (<tenant>/start) until a restart. Only when no
// tenant can be built, or the single-customer form's cannot, does New fail.
func New(ctx context.Context, cfg *config.Config, log *zap.Logger) (*Adapter, error) {
	reg := prometheus.NewRegistry()
	bi := buildinfo.Get()
	metrics.RegisterProcess(reg, metrics.Build{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion})
	trail, err := audit.Open(cfg.Audit.Path, log.Named("audit"))
	if err != nil {
		return nil, err
	}
	var tenants []*tenant
	fail := func(err error) (*Adapter, error) {
		for _, tn := range tenants {
			_ = tn.close()
		}
		_ = trail.Close()
		return nil, err
	}
	var first *tenant
	var startErrs []error
	for _, t := range cfg.AllTenants() {
		tn, err := newTenant(ctx, cfg, t, reg, trail, log)
		if err != nil {
			if t.Implicit {
				return fail(err)
			}
			log.Error("tenant cannot start; the other tenants run without it until a restart", zap.String("tenant", t.Name), zap.Error(err))
			startErrs = append(startErrs, err)
			tenants = append(tenants, &tenant{cfg: t, log: tenantLogger(log, t), startErr: err})
			continue
		}
		tenants = append(tenants, tn)
		if first == nil {
			first = tn
		}
	}
	if first == nil {
		return fail(fmt.Errorf("no tenant can start: %w", errors.Join(startErrs...)))
	}
	// Verified Access is served for the single-customer form only (config refuses it beside
	// tenants), so first is the implicit tenant here.
	vaServer, vaClient, err := verifiedAccessServer(ctx, cfg, first.conns, log, reg, trail, first.store)
	if err != nil {
		return fail(err)
	}
	checks := readiness{cfg: cfg, tenants: tenants, vaOn: vaClient != nil}
	if vaServer != nil {
		checks.va = vaClient.TokenSource()
		first.certs.Add(metrics.KindVerifiedAccess, "server", heldCertificates(vaServer.Certificates))
	}
	opsServer, err := ops.New(ops.Options{
		Listen: cfg.Ops.Listen, Pprof: cfg.Ops.Pprof, Gatherer: reg, Registerer: reg,
		Checks: checks.checks(), CheckInterval: cfg.Ops.CheckInterval, CheckTimeout: cfg.Ops.CheckTimeout,
		Logger: log.Named("ops"),
	})
	if err == nil {
		err = registerStatusPages(opsServer, cfg, tenants, bi, log)
	}
	if err == nil {
		err = opsServer.Listen() // a port in use stops the start
	}
	if err != nil {
		return fail(err)
	}
	return &Adapter{
		cfg: cfg, log: log, Registry: reg, Ops: opsServer, Engine: first.engine, Store: first.store, tenants: tenants,
		Audit: trail, va: vaServer, vaClient: vaClient, checks: checks, m: metrics.NewAdapter(reg),
		interrupt: make(chan struct{}),
	}, nil
}

// registerStatusPages serves the operator's status page (package statuspage) on the ops
// listener: at /status for the single-customer form; with tenants one page per tenant that runs,
// at /status/<tenant>, and the first one's at /status as well.
func registerStatusPages(srv *ops.Server, cfg *config.Config, tenants []*tenant, bi buildinfo.Info, log *zap.Logger) error {
	var names []string
	for _, tn := range tenants {
		if !tn.cfg.Implicit && tn.startErr == nil {
			names = append(names, tn.name())
		}
	}
	started := time.Now()
	first := true
	for _, tn := range tenants {
		if tn.startErr != nil {
			continue
		}
		page, err := statuspage.New(statuspage.Options{
			Journal: tn.store, Readiness: srv, JournalType: cmp.Or(cfg.Journal.Type, config.JournalMemory),
			InstanceID: cfg.InstanceID, Tenant: tenantLabel(tn.cfg), Tenants: names,
			Build: bi, Started: started, StepsRunning: tn.engine.InFlight,
			Logger: tn.log.Named("status"),
		})
		if err != nil {
			return err
		}
		if first {
			if err := srv.Register(ops.PathStatus, page); err != nil {
				return err
			}
			first = false
		}
		if !tn.cfg.Implicit {
			if err := srv.Register(statuspage.TenantPath(tn.name()), page); err != nil {
				return err
			}
		}
	}
	return nil
}

// JournalTable is the PostgreSQL table of the named tenant's part of the journal (docs/tenants.md).
func JournalTable(tenant string) string { return postgres.DefaultTable + "_" + tenant }

// OpenJournal opens the configured journal, or with j from config.TenantJournal a tenant's part
// of it. readOnly is for `inspect`, which may run beside a
// live adapter. log (nil for none) hears about a journal others may read.
func OpenJournal(ctx context.Context, j config.Journal, readOnly bool, log *zap.Logger) (journal.Store, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch j.Type {
	case config.JournalSQLite:
		if readOnly {
			return sqlite.OpenReadOnly(ctx, j.Path)
		}
		return sqlite.Open(ctx, j.Path, sqlite.WithLogger(log)) // creates its directory, private
	case config.JournalPostgres:
		opts := []postgres.Option{postgres.WithInsecureAllowCleartext(j.InsecureAllowCleartext), postgres.WithLogger(log)}
		if j.Tenant != "" {
			opts = append(opts, postgres.WithTable(JournalTable(j.Tenant)))
		}
		return postgres.Open(ctx, j.DSN, opts...)
	case config.JournalMemory, "":
		if readOnly {
			return nil, errors.New("the memory journal lives inside the running adapter and cannot be inspected")
		}
		return journal.NewMemory(), nil
	default:
		return nil, fmt.Errorf("journal type %q is not supported", j.Type)
	}
}

// PubSubClient connects to Pub/Sub for the single-customer form (TenantPubSubClient for a named
// tenant).
func PubSubClient(ctx context.Context, cfg *config.Config, opts []option.ClientOption) (*pubsub.Client, error) {
	return TenantPubSubClient(ctx, cfg.Implicit(), opts)
}

// TenantPubSubClient connects to Pub/Sub with opts and tenant t's endpoint and credentials; an
// endpoint marked insecure is an emulator (plaintext gRPC, no credentials).
func TenantPubSubClient(ctx context.Context, t config.Tenant, opts []option.ClientOption) (*pubsub.Client, error) {
	ps := t.PubSub
	if ps.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(ps.Endpoint))
	}
	switch {
	case ps.Insecure:
		opts = append(opts, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	case t.Google.Credentials.Type == config.CredentialsServiceAccountKey || t.Google.Credentials.Type == config.CredentialsSelfSignedJWT:
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, t.Google.Credentials.File)) // resolved by config.Load
	}
	c, err := pubsub.NewClient(ctx, ps.Project, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub client for project %s: %w", ps.Project, err)
	}
	return c, nil
}

// Run receives notifications and works processes until ctx ends; with Verified Access enabled it
// also serves the enrollment API. Any part failing stops the others.
//
// When ctx ends the adapter stops taking new work: the Pub/Sub receive and the admissions in
// progress stop (their messages come again), the enrollment server stops accepting, and the
// engine stops leasing. In-flight steps — a CA call, an upload — may finish for up to
// shutdownGracePeriod and are journaled; the engine then releases its leases. Run returns nil
// once every part stopped, an error if a part failed or was still running shortly after the
// grace period, and ErrInterrupted at once if Interrupt is called meanwhile. Close comes next.
func (a *Adapter) Run(ctx context.Context) error {
	for _, tn := range a.running() {
		tn.log.Info("adapter running", zap.String("instance_id", a.cfg.InstanceID),
			zap.Strings("customers", tn.cfg.Customers), zap.String("subscription", tn.subscriber().String()),
			zap.Int("pubsub_streams", tn.cfg.PubSub.Streams), zap.Int("max_outstanding_messages", tn.cfg.PubSub.MaxOutstandingMessages),
			zap.Duration("shutdown_grace_period", a.cfg.ShutdownGracePeriod))
	}
	// The ops listener outlives the other parts: it reports not ready as soon as the stop
	// begins, and serves /metrics and /healthz until everything else stopped.
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOps()
	runCtx, failed := context.WithCancelCause(ctx)
	defer failed(nil)
	opsDone := make(chan error, 1)
	go func() {
		err := a.Ops.Serve(opsCtx)
		if err != nil {
			failed(err)
		}
		opsDone <- err
	}()
	finish := func(err error) error {
		stopOps()
		if oerr := <-opsDone; oerr != nil && err == nil {
			err = fmt.Errorf("ops listener: %w", oerr)
		}
		return err
	}
	g, gctx := errgroup.WithContext(runCtx)
	running := &parts{}
	start := func(name string, run func(context.Context) error) {
		running.add(name)
		g.Go(func() error {
			defer running.done(name)
			if err := run(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	for _, tn := range a.running() {
		suffix := ""
		if !tn.cfg.Implicit {
			suffix = " of tenant " + tn.name()
		}
		start("engine"+suffix, tn.engine.Run)
		start("pubsub receive"+suffix, tn.receive)
		start("journal retention"+suffix, func(ctx context.Context) error {
			journal.Retain(ctx, tn.store, journal.RetainOptions{Retention: a.cfg.Journal.Retention, Interval: time.Hour, Logger: tn.log.Named("journal")})
			return nil
		})
	}
	if a.va != nil {
		start("verified access server", a.va.Run)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- g.Wait() }()

	var err error
	select {
	case err = <-stopped:
		return finish(err)
	case <-gctx.Done():
	}
	a.Ops.Stopping("the adapter is shutting down")
	grace := a.cfg.ShutdownGracePeriod
	inFlight := a.inFlight()
	a.log.Info(fmt.Sprintf("shutting down, waiting up to %s for %d in-flight steps", grace, inFlight),
		zap.Duration("grace_period", grace), zap.Int("in_flight_steps", inFlight))
	limit := time.NewTimer(grace + stopMargin)
	defer limit.Stop()
	select {
	case err = <-stopped:
	case <-limit.C:
		err = fmt.Errorf("still running %s after the grace period of %s: %s", stopMargin, grace, strings.Join(running.names(), ", "))
	case <-a.interrupt:
		err = ErrInterrupted
	}
	left := a.inFlight()
	if err != nil {
		a.log.Warn(fmt.Sprintf("stopped with %d steps still in flight; they resume from the journal on the next start", left),
			zap.Int("in_flight_steps", left), zap.Strings("still_running", running.names()), zap.Error(err))
		return finish(err)
	}
	a.log.Info("all in-flight steps finished; leases released", zap.Int("in_flight_steps", left))
	return finish(nil)
}

// Interrupt cuts a stop short: Run returns ErrInterrupted without waiting for in-flight steps,
// which resume from the journal on the next start. It is safe to call at any time, more than
// once.
func (a *Adapter) Interrupt() {
	a.interruptOnce.Do(func() { close(a.interrupt) })
}

// running lists the tenants that run (every one but those that could not be built).
func (a *Adapter) running() []*tenant {
	var out []*tenant
	for _, tn := range a.tenants {
		if tn.startErr == nil {
			out = append(out, tn)
		}
	}
	return out
}

// inFlight is the number of records the tenants' engines work now.
func (a *Adapter) inFlight() int {
	n := 0
	for _, tn := range a.running() {
		n += tn.engine.InFlight()
	}
	return n
}

// Receiving reports whether a stream to Pub/Sub is open for every tenant that runs, so that
// notifications can arrive, and when one is not, why the latest attempt to open it failed.
func (a *Adapter) Receiving() (open bool, lastErr error) {
	for _, tn := range a.running() {
		if open, err := tn.receiver.StreamOpen(); !open {
			return false, tenantError(tn.cfg, err)
		}
	}
	return true, nil
}

// Close releases the tenants' connections and journals, the ops listener and the audit log.
// It does not wait more than a few seconds for a Pub/Sub client, which may be stuck trying to
// reach Pub/Sub.
func (a *Adapter) Close() error {
	errs := make([]error, len(a.tenants))
	var wg sync.WaitGroup
	for i, tn := range a.tenants {
		wg.Go(func() { errs[i] = tn.close() }) // in parallel: each may wait closeTimeout
	}
	wg.Wait()
	return errors.Join(errors.Join(errs...), a.Ops.Close(), a.Audit.Close())
}

// parts tracks which parts of a running adapter have not returned yet.
type parts struct {
	mu  sync.Mutex
	set map[string]bool
}

func (p *parts) add(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set == nil {
		p.set = map[string]bool{}
	}
	p.set[name] = true
}

func (p *parts) done(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.set, name)
}

func (p *parts) names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Sorted(maps.Keys(p.set))
}
