package adapter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/directory"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/intake"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
)

// tenant is one customer pipeline (docs/tenants.md): its own Certificate Provisioning API client
// (credentials, rate limit), Pub/Sub client and receiver on its own subscription, profiles, CA
// connectors, journal part and engine with its own workers. Nothing of it is shared with another
// tenant but the journal's database, the audit log and the ops listener, so that one tenant's
// failures (a CA that hangs, Google's 429s, credentials Google refuses, a subscription that does
// not exist) hold up only its own processes. The single-customer form is one implicit tenant,
// built by the same code.
type tenant struct {
	cfg config.Tenant
	log *zap.Logger
	// reg is the registry with the tenant's label (tenant="<name>") on every series; the
	// implicit tenant's is the registry itself, so that its series are those of an adapter
	// without tenants.
	reg prometheus.Registerer

	api *chromeapi.Client
	// directory is the tenant's Directory client (google.directory), nil unless enabled;
	// dirClient is the same client, for its token.
	directory engine.Directory
	dirClient *directory.Client
	store     journal.Store
	journal   config.Journal
	engine    *engine.Engine
	receiver  *intake.Receiver
	pubsub    *pubsub.Client
	conns     map[string]*engine.CAConnection
	certs     *metrics.Certificates
	records   *metrics.Journal
	calls     *metrics.CA

	// startErr is why a named tenant could not be built: the others run, and its readiness
	// check reports this. Nil for a tenant that runs.
	startErr error
}

// name is the tenant's name in logs, checks and the status page.
func (t *tenant) name() string { return t.cfg.Name }

// checkName is the name of one of the tenant's readiness checks: the implicit tenant's keep the
// names of an adapter without tenants.
func (t *tenant) checkName(check string) string {
	if t.cfg.Implicit {
		return check
	}
	return t.cfg.Name + "/" + check
}

// tenantRegisterer is reg with the tenant label on every series, or reg itself for the implicit
// tenant.
func tenantRegisterer(reg prometheus.Registerer, t config.Tenant) prometheus.Registerer {
	if t.Implicit {
		return reg
	}
	return prometheus.WrapRegistererWith(prometheus.Labels{metrics.LabelTenant: t.Name}, reg)
}

// tenantLogger is log with the tenant's name on every entry, or log itself for the implicit
// tenant.
func tenantLogger(log *zap.Logger, t config.Tenant) *zap.Logger {
	if t.Implicit {
		return log
	}
	return log.With(zap.String("tenant", t.Name))
}

// newTenant builds tenant t of cfg, starting nothing: its profiles and CA connections, API client,
// journal part, engine, receiver and Pub/Sub client. trail is the audit log the tenants share.
// On an error nothing it built is left open.
func newTenant(ctx context.Context, cfg *config.Config, t config.Tenant, reg prometheus.Registerer, trail *audit.Log, log *zap.Logger) (_ *tenant, err error) {
	tn := &tenant{cfg: t, log: tenantLogger(log, t), reg: tenantRegisterer(reg, t), journal: cfg.TenantJournal(t)}
	defer func() {
		if err != nil {
			_ = tn.close()
		}
	}()
	profiles, err := TenantProfiles(t)
	if err != nil {
		return nil, err
	}
	if tn.conns, err = TenantConnectors(t, cfg.BaseDir, tn.log); err != nil {
		return nil, err
	}
	if err := TenantCheckRevokers(t, tn.conns); err != nil {
		return nil, err
	}
	if tn.api, err = chromeapi.New(ctx, TenantAPIOptions(t, tn.log.Named("chromeapi"), tn.reg)); err != nil {
		return nil, tenantError(t, err)
	}
	if tn.directory, tn.dirClient, err = TenantDirectory(ctx, t, tn.log.Named("directory"), tn.reg); err != nil {
		return nil, tenantError(t, err)
	}
	if tn.store, err = OpenJournal(ctx, tn.journal, false, tn.log.Named("journal")); err != nil {
		return nil, tenantError(t, err)
	}
	eo := EngineOptions(cfg)
	eo.Tenant = tenantLabel(t)
	eo.API, eo.Store, eo.Profiles, eo.CAs, eo.Audit = tn.api, tn.store, profiles, tn.conns, trail
	eo.Directory = tn.directory
	eo.Logger, eo.Registerer = tn.log.Named("engine"), tn.reg
	if tn.engine, err = engine.New(eo); err != nil {
		return nil, tenantError(t, err)
	}
	tn.receiver = intake.NewReceiver(TenantReceiverOptions(cfg, t, tn.engine, tn.log.Named("intake"), tn.reg))
	if c, ok := tn.store.(interface{ CommitStats() (uint64, uint64) }); ok {
		metrics.RegisterJournalCommits(tn.reg, c.CommitStats)
	}
	tn.records, tn.calls, tn.certs = metrics.NewJournal(tn.reg), metrics.NewCA(tn.reg), metrics.NewCertificates(tn.reg)
	caCertificates(tn.certs, tn.conns)
	if tn.pubsub, err = TenantPubSubClient(ctx, t, tn.receiver.ClientOptions()); err != nil {
		return nil, tenantError(t, err)
	}
	return tn, nil
}

// tenantLabel is the tenant as audit events name it: empty for the implicit tenant, whose
// events stay as they were.
func tenantLabel(t config.Tenant) string {
	if t.Implicit {
		return ""
	}
	return t.Name
}

// tenantError names a named tenant in err; nil stays nil.
func tenantError(t config.Tenant, err error) error {
	if t.Implicit || err == nil {
		return err
	}
	return fmt.Errorf("tenant %s: %w", t.Name, err)
}

// subscriber is the tenant's subscription; the receiver applies its streams and flow control
// (TenantReceiverOptions).
func (t *tenant) subscriber() *pubsub.Subscriber {
	return t.pubsub.Subscriber(t.cfg.PubSub.Subscription)
}

// Backoff of a named tenant's receive after Pub/Sub refused its subscription.
const (
	receiveRetryMin = time.Second
	receiveRetryMax = 5 * time.Minute
)

// receive runs the tenant's Pub/Sub receiver until ctx ends. The implicit tenant returns the
// error when Pub/Sub refuses its subscription, which stops the adapter as it always did (its
// supervisor restarts it). A named tenant must not stop the others: it logs the refusal, which
// its pubsub readiness check reports, and tries again after a growing pause.
func (t *tenant) receive(ctx context.Context) error {
	wait := receiveRetryMin
	for {
		err := t.receiver.Run(ctx, t.subscriber())
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if t.cfg.Implicit {
			return err
		}
		t.log.Error("Pub/Sub receive failed; this tenant's other work goes on, and the receive is tried again",
			zap.Duration("in", wait), zap.Error(err))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		wait = min(2*wait, receiveRetryMax)
	}
}

// close releases what the tenant holds: its Pub/Sub client (bounded by closeTimeout) and
// journal.
func (t *tenant) close() error {
	var errs []error
	if t.pubsub != nil {
		closed := make(chan error, 1)
		go func() { closed <- t.pubsub.Close() }()
		timer := time.NewTimer(closeTimeout)
		select {
		case err := <-closed:
			errs = append(errs, err)
		case <-timer.C:
			errs = append(errs, fmt.Errorf("pubsub client still closing after %s; left behind", closeTimeout))
		}
		timer.Stop()
	}
	if t.store != nil {
		errs = append(errs, t.store.Close())
	}
	if t.engine == nil && t.conns != nil {
		// Never handed to an engine: the connectors are this tenant's alone to close.
		errs = append(errs, CloseConnectors(t.conns))
	}
	return tenantError(t.cfg, errors.Join(errs...))
}

// TenantProfiles compiles every profile of tenant t; the error is a *config.ProblemsError with
// every problem at its YAML path (tenants[1].profiles.wifi.subject.commonName).
func TenantProfiles(t config.Tenant) (map[string]*engine.Profile, error) {
	out := map[string]*engine.Profile{}
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(t.Profiles)) {
		p := t.Profiles[name]
		tmpl, err := csr.Compile(p.Spec())
		if err != nil {
			ps = append(ps, config.ProblemsAt(t.Key("profiles."+name), err)...)
			continue
		}
		if tmpl.Needs().Any() && !t.Google.Directory.Enabled {
			ps = append(ps, config.Problem{Path: t.Key("profiles." + name),
				Message: "its templates use Directory data (.Device.Directory, .User.Directory): set " + t.Key("google.directory.enabled") + " (docs/directory.md)"})
			continue
		}
		prof := &engine.Profile{Template: tmpl, TemplateName: p.TemplateName, Validity: p.Validity, SignDeadline: p.SignDeadline, Strict: p.Strict,
			Routes: p.Routes}
		if r := p.RevokeSuperseded; r.Enabled {
			reason, err := ca.ParseReason(r.Reason)
			if err != nil {
				ps = append(ps, config.Problem{Path: t.Key("profiles." + name + ".revokeSuperseded.reason"), Message: err.Error()})
				continue
			}
			prof.RevokeSuperseded = &engine.RevokePolicy{GracePeriod: r.GracePeriod, Reason: reason, CAConnections: r.CAConnections}
		}
		out[name] = prof
	}
	return out, problemsError(ps)
}

// TenantConnectors builds every CA connection of tenant t; the error is a *config.ProblemsError
// with every problem at its YAML path (tenants[1].caConnections.corp.url). baseDir is the
// configuration's directory.
func TenantConnectors(t config.Tenant, baseDir string, log *zap.Logger) (map[string]*engine.CAConnection, error) {
	out := map[string]*engine.CAConnection{}
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(t.CAConnections)) {
		c := t.CAConnections[name]
		conn, err := newConnector(name, c, baseDir, log)
		if err != nil {
			ps = append(ps, config.ProblemsAt(t.Key("caConnections."+name), err)...)
			continue
		}
		out[name] = &engine.CAConnection{Connector: conn, Timeout: c.Timeout}
	}
	return out, problemsError(ps)
}

// TenantCheckRevokers is CheckRevokers for tenant t and its connections conns.
func TenantCheckRevokers(t config.Tenant, conns map[string]*engine.CAConnection) error {
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(t.Profiles)) {
		r := t.Profiles[name].RevokeSuperseded
		if !r.Enabled {
			continue
		}
		through := r.CAConnections
		if len(through) == 0 {
			through = slices.Sorted(maps.Keys(t.CAConnections))
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
			path := t.Key("profiles." + name + ".revokeSuperseded")
			hint := "list the connections this profile's certificates come from in " + path + ".caConnections"
			if len(r.CAConnections) > 0 {
				hint = "remove it from the list, or turn revokeSuperseded off"
			}
			ps = append(ps, config.Problem{Path: path,
				Message: fmt.Sprintf("%s (type %s) cannot revoke (%s), so the certificates it issues cannot be revoked when superseded; %s",
					t.Key("caConnections."+c), t.CAConnections[c].Type, why, hint)})
		}
	}
	return problemsError(ps)
}

// TenantCheckConnectors is CheckConnectors for tenant t.
func TenantCheckConnectors(t config.Tenant) (unchecked []string, err error) {
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(t.CAConnections)) {
		c := t.CAConnections[name]
		checked, err := ca.CheckSettings(c.Type, ca.Settings(c.Settings))
		if err != nil {
			ps = append(ps, config.ProblemsAt(t.Key("caConnections."+name), err)...)
		} else if !checked {
			unchecked = append(unchecked, name)
		}
	}
	return unchecked, problemsError(ps)
}

// TenantReceiverOptions are the Pub/Sub intake's options for tenant t of cfg, admitting to
// admitter.
func TenantReceiverOptions(cfg *config.Config, t config.Tenant, admitter intake.Admitter, log *zap.Logger, reg prometheus.Registerer) intake.ReceiverOptions {
	return intake.ReceiverOptions{
		Admitter: admitter, Customers: t.Customers, Logger: log, Registerer: reg,
		StopTimeout: cfg.ShutdownGracePeriod,
		Streams:     t.PubSub.Streams, MaxOutstandingMessages: t.PubSub.MaxOutstandingMessages,
	}
}
