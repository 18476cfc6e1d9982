// Package adapter assembles the daemon from its configuration: the API client, the CA
// connectors, the compiled profiles, the journal, the engine and the Pub/Sub intake, and, when
// enabled, the Verified Access enrollment server.
package adapter

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/intake"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/sqlite"
	"github.com/certprov/certprov-adapter/internal/telemetry"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess"
)

// Adapter is a running daemon's object graph.
type Adapter struct {
	cfg      *config.Config
	log      *zap.Logger
	Metrics  *telemetry.Counters
	Engine   *engine.Engine
	Store    journal.Store
	receiver *intake.Receiver
	pubsub   *pubsub.Client
	// va is the Verified Access enrollment server; nil unless verifiedAccess.enabled.
	va *verifiedaccess.Server
}

// Profiles compiles every profile; the error joins every problem, each naming its YAML path.
func Profiles(cfg *config.Config) (map[string]*engine.Profile, error) {
	out := map[string]*engine.Profile{}
	var errs []error
	for _, name := range sortedKeys(cfg.Profiles) {
		p := cfg.Profiles[name]
		tmpl, err := csr.Compile(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("profiles.%s: %w", name, err))
			continue
		}
		out[name] = &engine.Profile{Template: tmpl, TemplateName: p.TemplateName, Validity: p.Validity, SignDeadline: p.SignDeadline, Strict: p.Strict}
	}
	return out, errors.Join(errs...)
}

// Connectors builds every CA connection.
func Connectors(cfg *config.Config, log *zap.Logger) (map[string]*engine.CAConnection, error) {
	out := map[string]*engine.CAConnection{}
	var errs []error
	for _, name := range sortedKeys(cfg.CAConnections) {
		c := cfg.CAConnections[name]
		conn, err := ca.New(c.Type, ca.Settings(c.Settings), ca.Env{Name: name, Logger: log.With(zap.String("ca_connection", name)), BaseDir: cfg.BaseDir})
		if err != nil {
			errs = append(errs, fmt.Errorf("caConnections.%s: %w", name, err))
			continue
		}
		out[name] = &engine.CAConnection{Connector: conn, Timeout: c.Timeout}
	}
	return out, errors.Join(errs...)
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

// verifiedAccessServer builds the enrollment server, or nil when the section is off.
func verifiedAccessServer(ctx context.Context, cfg *config.Config, conns map[string]*engine.CAConnection, log *zap.Logger, metrics *telemetry.Counters) (*verifiedaccess.Server, error) {
	va := cfg.VerifiedAccess
	if !va.Enabled {
		return nil, nil
	}
	profiles, err := VerifiedAccessProfiles(cfg, conns)
	if err != nil {
		return nil, err
	}
	client, err := verifiedaccess.NewClient(ctx, verifiedaccess.ClientOptions{
		Endpoint:       va.Endpoint,
		Credentials:    cfg.Google.Credentials,
		BaseDir:        cfg.BaseDir,
		RequestTimeout: cfg.Google.RequestTimeout,
		RateLimit:      cfg.Google.RateLimit,
		Logger:         log.Named("verifiedaccess"),

		InsecureAllowCleartext: va.InsecureAllowCleartext,
	})
	if err != nil {
		return nil, err
	}
	return verifiedaccess.NewServer(verifiedaccess.ServerOptions{
		Config:   va,
		Profiles: profiles,
		Google:   client,
		Logger:   log.Named("verifiedaccess"),
		Metrics:  metrics,
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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
	api, err := chromeapi.New(ctx, chromeapi.Options{Google: cfg.Google, BaseDir: cfg.BaseDir, Logger: log.Named("chromeapi")})
	if err != nil {
		return nil, err
	}
	metrics := &telemetry.Counters{}
	vaServer, err := verifiedAccessServer(ctx, cfg, cas, log, metrics)
	if err != nil {
		return nil, err
	}
	store, err := OpenJournal(ctx, cfg.Journal, false, log.Named("journal"))
	if err != nil {
		return nil, err
	}
	eng, err := engine.New(engine.Options{
		InstanceID:      cfg.InstanceID,
		API:             api,
		Store:           store,
		Profiles:        profiles,
		CAs:             cas,
		Workers:         cfg.Engine.Workers,
		PollInterval:    cfg.Engine.PollInterval,
		MaxPollInterval: cfg.Engine.MaxPollInterval,
		Retry:           cfg.Engine.Retry,
		LeaseDuration:   cfg.Journal.LeaseDuration,
		Logger:          log.Named("engine"),
		Metrics:         metrics,
	})
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	psClient, err := pubsubClient(ctx, cfg)
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	return &Adapter{
		cfg: cfg, log: log, Metrics: metrics, Engine: eng, Store: store, pubsub: psClient, va: vaServer,
		receiver: intake.NewReceiver(eng, cfg.Customers, log.Named("intake"), metrics),
	}, nil
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

// pubsubClient connects to Pub/Sub; an endpoint marked insecure is an emulator (plaintext gRPC,
// no credentials).
func pubsubClient(ctx context.Context, cfg *config.Config) (*pubsub.Client, error) {
	ps := cfg.PubSub
	var opts []option.ClientOption
	if ps.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(ps.Endpoint))
	}
	switch {
	case ps.Insecure:
		opts = append(opts, option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	case cfg.Google.Credentials.Type == config.CredentialsServiceAccountKey || cfg.Google.Credentials.Type == config.CredentialsSelfSignedJWT:
		opts = append(opts, option.WithAuthCredentialsFile(option.ServiceAccount, resolvePath(cfg.BaseDir, cfg.Google.Credentials.File)))
	}
	c, err := pubsub.NewClient(ctx, ps.Project, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub client for project %s: %w", ps.Project, err)
	}
	return c, nil
}

// Run receives notifications and works processes until ctx ends; with Verified Access enabled it
// also serves the enrollment API. Any part failing stops the others.
func (a *Adapter) Run(ctx context.Context) error {
	sub := a.pubsub.Subscriber(a.cfg.PubSub.Subscription)
	if n := a.cfg.PubSub.MaxOutstandingMessages; n > 0 {
		sub.ReceiveSettings.MaxOutstandingMessages = n
	}
	a.log.Info("adapter running", zap.String("instance_id", a.cfg.InstanceID),
		zap.Strings("customers", a.cfg.Customers), zap.String("subscription", sub.String()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Engine.Run(gctx) })
	g.Go(func() error { return a.receiver.Run(gctx, sub) })
	if a.va != nil {
		g.Go(func() error { return a.va.Run(gctx) })
	}
	g.Go(func() error {
		journal.Retain(gctx, a.Store, a.cfg.Journal.Retention, time.Hour, a.log.Named("journal"))
		return nil
	})
	return g.Wait()
}

// Close releases connections and the journal.
func (a *Adapter) Close() error {
	return errors.Join(a.pubsub.Close(), a.Store.Close())
}

func resolvePath(base, p string) string {
	if p == "" || base == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(base, p)
}
