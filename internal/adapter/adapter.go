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
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
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

// Adapter is a running daemon's object graph.
type Adapter struct {
	cfg *config.Config
	log *zap.Logger
	// Registry holds every metric the adapter exports on /metrics (package metrics).
	Registry *prometheus.Registry
	// Ops is the ops listener (/metrics, /healthz, /readyz); Register adds pages to it, and
	// Readiness reads the checks' latest results.
	Ops      *ops.Server
	Engine   *engine.Engine
	Store    journal.Store
	receiver *intake.Receiver
	pubsub   *pubsub.Client
	// va is the Verified Access enrollment server; nil unless verifiedAccess.enabled.
	va *verifiedaccess.Server
	// Audit is the audit trail's sink (audit.path), shared by the engine and the enrollment
	// server.
	Audit *audit.Log
	// LogLevel, when set, is the handle through which a reload changes log.level.
	LogLevel *logging.Level

	// What a reload changes (reload.go); reloading serializes reloads.
	reloading sync.Mutex
	api       *chromeapi.Client
	directory engine.Directory // nil unless google.directory.enabled
	vaClient  *verifiedaccess.Client
	conns     map[string]*engine.CAConnection
	checks    readiness             // the readiness checks' inputs, for SetChecks after a reload
	certs     *metrics.Certificates // certificate expiry, re-pointed after a reload
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

// Profiles compiles every profile; the error is a *config.ProblemsError with every problem at
// its YAML path (profiles.wifi.subject.commonName).
func Profiles(cfg *config.Config) (map[string]*engine.Profile, error) {
	out := map[string]*engine.Profile{}
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(cfg.Profiles)) {
		p := cfg.Profiles[name]
		tmpl, err := csr.Compile(p.Spec())
		if err != nil {
			ps = append(ps, config.ProblemsAt("profiles."+name, err)...)
			continue
		}
		if tmpl.Needs().Any() && !cfg.Google.Directory.Enabled {
			ps = append(ps, config.Problem{Path: "profiles." + name,
				Message: "its templates use Directory data (.Device.Directory, .User.Directory): set google.directory.enabled (docs/directory.md)"})
			continue
		}
		prof := &engine.Profile{Template: tmpl, TemplateName: p.TemplateName, Validity: p.Validity, SignDeadline: p.SignDeadline, Strict: p.Strict,
			Routes: p.Routes}
		if r := p.RevokeSuperseded; r.Enabled {
			reason, err := ca.ParseReason(r.Reason)
			if err != nil {
				ps = append(ps, config.Problem{Path: "profiles." + name + ".revokeSuperseded.reason", Message: err.Error()})
				continue
			}
			prof.RevokeSuperseded = &engine.RevokePolicy{GracePeriod: r.GracePeriod, Reason: reason, CAConnections: r.CAConnections}
		}
		out[name] = prof
	}
	return out, problemsError(ps)
}

// CheckRevokers checks that every CA connection a profile's revokeSuperseded revokes through
// (its caConnections, or every connection when it lists none) can revoke (ca.Revoker); the
// error is a *config.ProblemsError at profiles.<name>.revokeSuperseded. Connections that failed
// to build, which Connectors reported, are not checked again.
func CheckRevokers(cfg *config.Config, conns map[string]*engine.CAConnection) error {
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(cfg.Profiles)) {
		r := cfg.Profiles[name].RevokeSuperseded
		if !r.Enabled {
			continue
		}
		through := r.CAConnections
		if len(through) == 0 {
			through = slices.Sorted(maps.Keys(cfg.CAConnections))
		}
		for _, c := range through {
			conn := conns[c]
			if conn == nil {
				continue
			}
			why := "its CA offers no revocation to the adapter"
			if _, ok := conn.Connector.(ca.Revoker); ok {
				why = ""
				if rc, ok := conn.Connector.(ca.RevokeChecker); ok {
					if err := rc.CanRevoke(); err != nil {
						why = err.Error()
					}
				}
			}
			if why == "" {
				continue
			}
			hint := "list the connections this profile's certificates come from in profiles." + name + ".revokeSuperseded.caConnections"
			if len(r.CAConnections) > 0 {
				hint = "remove it from the list, or turn revokeSuperseded off"
			}
			ps = append(ps, config.Problem{Path: "profiles." + name + ".revokeSuperseded",
				Message: fmt.Sprintf("caConnections.%s (type %s) cannot revoke (%s), so the certificates it issues cannot be revoked when superseded; %s",
					c, cfg.CAConnections[c].Type, why, hint)})
		}
	}
	return problemsError(ps)
}

// Connectors builds every CA connection; the error is a *config.ProblemsError with every
// problem at its YAML path (caConnections.corp.url).
func Connectors(cfg *config.Config, log *zap.Logger) (map[string]*engine.CAConnection, error) {
	out := map[string]*engine.CAConnection{}
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(cfg.CAConnections)) {
		conn, err := Connector(cfg, name, log)
		if err != nil {
			ps = append(ps, config.ProblemsAt("caConnections."+name, err)...)
			continue
		}
		out[name] = &engine.CAConnection{Connector: conn, Timeout: cfg.CAConnections[name].Timeout}
	}
	return out, problemsError(ps)
}

// Connector builds the one CA connection named, which must be in cfg, with its own logger and
// paths resolved against the configuration's directory. Its error is the connector's, with its
// problems at their keys (config.ProblemsAt under caConnections.<name>).
func Connector(cfg *config.Config, name string, log *zap.Logger) (ca.Connector, error) {
	c := cfg.CAConnections[name]
	return ca.New(c.Type, ca.Settings(c.Settings), ca.Env{Name: name, Logger: log.With(zap.String("ca_connection", name)), BaseDir: cfg.BaseDir})
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
// names the connections whose type has no offline check.
func CheckConnectors(cfg *config.Config) (unchecked []string, err error) {
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(cfg.CAConnections)) {
		c := cfg.CAConnections[name]
		checked, err := ca.CheckSettings(c.Type, ca.Settings(c.Settings))
		if err != nil {
			ps = append(ps, config.ProblemsAt("caConnections."+name, err)...)
		} else if !checked {
			unchecked = append(unchecked, name)
		}
	}
	return unchecked, problemsError(ps)
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
		Retry:           cfg.Engine.Retry,
		LeaseDuration:   cfg.Journal.LeaseDuration,
		// How long a stop lets in-flight steps finish (Run).
		ShutdownGracePeriod: cfg.ShutdownGracePeriod,
	}
}

// ReceiverOptions are the Pub/Sub intake's options from cfg, admitting to admitter.
func ReceiverOptions(cfg *config.Config, admitter intake.Admitter, log *zap.Logger, reg prometheus.Registerer) intake.ReceiverOptions {
	return intake.ReceiverOptions{
		Admitter: admitter, Customers: cfg.Customers, Logger: log, Registerer: reg,
		StopTimeout: cfg.ShutdownGracePeriod,
		Streams:     cfg.PubSub.Streams, MaxOutstandingMessages: cfg.PubSub.MaxOutstandingMessages,
	}
}

// New builds the adapter. It does not start anything.
func New(ctx context.Context, cfg *config.Config, log *zap.Logger) (*Adapter, error) {
	profiles, err := Profiles(cfg)
	if err != nil {
		return nil, err
	}
	cas, err := Connectors(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := CheckRevokers(cfg, cas); err != nil {
		_ = CloseConnectors(cas)
		return nil, err
	}
	reg := prometheus.NewRegistry()
	bi := buildinfo.Get()
	metrics.RegisterProcess(reg, metrics.Build{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion})
	api, err := chromeapi.New(ctx, APIOptions(cfg, log.Named("chromeapi"), reg))
	if err != nil {
		return nil, err
	}
	trail, err := audit.Open(cfg.Audit.Path, log.Named("audit"))
	if err != nil {
		return nil, err
	}
	store, err := OpenJournal(ctx, cfg.Journal, false, log.Named("journal"))
	if err != nil {
		_ = trail.Close()
		return nil, err
	}
	dir, dirClient, err := Directory(ctx, cfg, log.Named("directory"), reg)
	if err != nil {
		_ = store.Close()
		_ = trail.Close()
		return nil, err
	}
	vaServer, vaClient, err := verifiedAccessServer(ctx, cfg, cas, log, reg, trail, store)
	if err != nil {
		_ = store.Close()
		_ = trail.Close()
		return nil, err
	}
	eo := EngineOptions(cfg)
	eo.API, eo.Store, eo.Profiles, eo.CAs, eo.Audit = api, store, profiles, cas, trail
	eo.Directory = dir
	eo.Logger, eo.Registerer = log.Named("engine"), reg
	eng, err := engine.New(eo)
	if err != nil {
		_ = store.Close()
		_ = trail.Close()
		return nil, err
	}
	receiver := intake.NewReceiver(ReceiverOptions(cfg, eng, log.Named("intake"), reg))
	if c, ok := store.(interface{ CommitStats() (uint64, uint64) }); ok {
		metrics.RegisterJournalCommits(reg, c.CommitStats)
	}
	checks := readiness{cfg: cfg, store: store, records: metrics.NewJournal(reg), intake: receiver,
		google: api.TokenSource(), vaOn: vaClient != nil, cas: cas, calls: metrics.NewCA(reg)}
	certs := metrics.NewCertificates(reg)
	caCertificates(certs, cas)
	if dirClient != nil {
		checks.directoryOn, checks.directory = true, dirClient.TokenSource()
	}
	if vaServer != nil {
		checks.va = vaClient.TokenSource()
		certs.Add(metrics.KindVerifiedAccess, "server", heldCertificates(vaServer.Certificates))
	}
	opsServer, err := ops.New(ops.Options{
		Listen: cfg.Ops.Listen, Pprof: cfg.Ops.Pprof, Gatherer: reg, Registerer: reg,
		Checks: checks.checks(), CheckInterval: cfg.Ops.CheckInterval, CheckTimeout: cfg.Ops.CheckTimeout,
		Logger: log.Named("ops"),
	})
	if err == nil {
		err = registerStatusPage(opsServer, cfg, store, eng, bi, log)
	}
	if err == nil {
		err = opsServer.Listen() // a port in use stops the start
	}
	if err != nil {
		_ = store.Close()
		_ = trail.Close()
		return nil, err
	}
	psClient, err := PubSubClient(ctx, cfg, receiver.ClientOptions())
	if err != nil {
		_ = opsServer.Close()
		_ = store.Close()
		_ = trail.Close()
		return nil, err
	}
	return &Adapter{
		cfg: cfg, log: log, Registry: reg, Ops: opsServer, Engine: eng, Store: store, Audit: trail, pubsub: psClient, va: vaServer,
		api: api, directory: dir, vaClient: vaClient, conns: cas, checks: checks, certs: certs, m: metrics.NewAdapter(reg),
		receiver: receiver, interrupt: make(chan struct{}),
	}, nil
}

// registerStatusPage serves the operator's status page (package statuspage) on the ops listener.
func registerStatusPage(srv *ops.Server, cfg *config.Config, store journal.Store, eng *engine.Engine, bi buildinfo.Info, log *zap.Logger) error {
	page, err := statuspage.New(statuspage.Options{
		Journal: store, Readiness: srv, JournalType: cmp.Or(cfg.Journal.Type, config.JournalMemory),
		InstanceID: cfg.InstanceID, Build: bi, Started: time.Now(), StepsRunning: eng.InFlight,
		Logger: log.Named("status"),
	})
	if err != nil {
		return err
	}
	return srv.Register(ops.PathStatus, page)
}

// OpenJournal opens the configured journal. readOnly is for `inspect`, which may run beside a
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
		return postgres.Open(ctx, j.DSN, postgres.WithInsecureAllowCleartext(j.InsecureAllowCleartext), postgres.WithLogger(log))
	case config.JournalMemory, "":
		if readOnly {
			return nil, errors.New("the memory journal lives inside the running adapter and cannot be inspected")
		}
		return journal.NewMemory(), nil
	default:
		return nil, fmt.Errorf("journal type %q is not supported", j.Type)
	}
}

// PubSubClient connects to Pub/Sub with opts and the configured endpoint and credentials; an
// endpoint marked insecure is an emulator (plaintext gRPC, no credentials).
func PubSubClient(ctx context.Context, cfg *config.Config, opts []option.ClientOption) (*pubsub.Client, error) {
	ps := cfg.PubSub
	if ps.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(ps.Endpoint))
	}
	switch {
	case ps.Insecure:
		opts = append(opts, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	case cfg.Google.Credentials.Type == config.CredentialsServiceAccountKey || cfg.Google.Credentials.Type == config.CredentialsSelfSignedJWT:
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, cfg.Google.Credentials.File)) // resolved by config.Load
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
	sub := a.pubsub.Subscriber(a.cfg.PubSub.Subscription)
	a.log.Info("adapter running", zap.String("instance_id", a.cfg.InstanceID),
		zap.Strings("customers", a.cfg.Customers), zap.String("subscription", sub.String()),
		zap.Int("pubsub_streams", a.cfg.PubSub.Streams), zap.Int("max_outstanding_messages", a.cfg.PubSub.MaxOutstandingMessages),
		zap.Duration("shutdown_grace_period", a.cfg.ShutdownGracePeriod))
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
	start("engine", a.Engine.Run)
	start("pubsub receive", func(ctx context.Context) error { return a.receiver.Run(ctx, sub) })
	if a.va != nil {
		start("verified access server", a.va.Run)
	}
	start("journal retention", func(ctx context.Context) error {
		journal.Retain(ctx, a.Store, journal.RetainOptions{Retention: a.cfg.Journal.Retention, Interval: time.Hour, Logger: a.log.Named("journal")})
		return nil
	})
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
	a.log.Info(fmt.Sprintf("shutting down, waiting up to %s for %d in-flight steps", grace, a.Engine.InFlight()),
		zap.Duration("grace_period", grace), zap.Int("in_flight_steps", a.Engine.InFlight()))
	limit := time.NewTimer(grace + stopMargin)
	defer limit.Stop()
	select {
	case err = <-stopped:
	case <-limit.C:
		err = fmt.Errorf("still running %s after the grace period of %s: %s", stopMargin, grace, strings.Join(running.names(), ", "))
	case <-a.interrupt:
		err = ErrInterrupted
	}
	left := a.Engine.InFlight()
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

// Receiving reports whether a stream to Pub/Sub is open, so that notifications can arrive, and
// when none is, why the latest attempt to open one failed.
func (a *Adapter) Receiving() (open bool, lastErr error) {
	return a.receiver.StreamOpen()
}

// Close releases connections and the journal. It does not wait more than a few seconds for the
// Pub/Sub client, which may be stuck trying to reach Pub/Sub.
func (a *Adapter) Close() error {
	closed := make(chan error, 1)
	go func() { closed <- a.pubsub.Close() }()
	var psErr error
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case psErr = <-closed:
	case <-t.C:
		psErr = fmt.Errorf("pubsub client still closing after %s; left behind", closeTimeout)
	}
	return errors.Join(psErr, a.Ops.Close(), a.Store.Close(), a.Audit.Close())
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
