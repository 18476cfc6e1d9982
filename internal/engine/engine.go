// Package engine runs the per-process state machine: claim, build the request, have the device
// sign it exactly once, wait for the signature, verify it, ask the CA, check the certificate and
// upload it — or tell the user why not with setFailure.
//
// Every transition is written to the journal before the side effect it leads to, so that a
// restart resumes each process from what is known to have happened, never repeating signData.
// A worker holds its record under a journal lease that a heartbeat renews while a step runs,
// and abandons the step if the lease is lost, so no step ever runs twice at once.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/process"
	"github.com/certprov/certprov-adapter/internal/swap"
)

// API is the Certificate Provisioning API as the engine drives it (*chromeapi.Client). It is
// safe for concurrent use.
//
// Every error is classified (errclass.Of). Retryable: the call failed in a way that may pass
// later (a timeout, HTTP 429 or 5xx, no connection), no sooner than its hint (Retry-After);
// the engine tries again within engine.retry.maxDuration, or, waiting for a signature, until
// the sign deadline. Permanent: Google refused the call and will refuse it again as is; the
// engine reads the process before it decides, since a refused mutation may have landed before
// (its answer lost) or the process may have ended meanwhile. An error that states no class
// counts as retryable. A mutation that failed retryably may have landed too: the engine reads
// the process before repeating it. A call cut short by ctx decides nothing: the engine checks
// ctx before it acts on the error.
type API interface {
	// Get reads a process; an error matching process.ErrNotFound (errors.Is) says it does not
	// exist.
	Get(ctx context.Context, name string) (*process.Process, error)
	// Claim claims the process for instanceID; an error matching process.ErrClaimedByOther says
	// another instance owns it, which this one must leave alone. Claiming again a process this
	// instance holds succeeds.
	Claim(ctx context.Context, name, instanceID string) error
	// SignData asks the device to sign data with algorithm and returns the operation's name.
	// It is sent at most once by the implementation (a second request makes the device fail
	// the process), so after any error the engine reads the process to learn whether it landed.
	SignData(ctx context.Context, name string, data []byte, algorithm string) (string, error)
	// GetOperation polls a signData operation.
	GetOperation(ctx context.Context, opName string) (*process.Operation, error)
	// UploadCertificate hands the leaf certificate (PEM) to the device.
	UploadCertificate(ctx context.Context, name, certPEM string) error
	// SetFailure ends the process with a message the device shows to the user.
	SetFailure(ctx context.Context, name, message string) error
}

// retryable reports whether err, from the API, may pass if tried again, and the server's hint of
// when.
func retryable(err error) (bool, time.Duration) {
	class, hint := errclass.Of(err)
	return class == errclass.Retryable, hint
}

// Auditor receives the audit event of every process that reaches its final state
// (*audit.Log). It is safe for concurrent use.
type Auditor interface {
	// Write stores ev; a nil error means it is durable (on a file: synced to disk). After an
	// error the event may or may not be stored.
	Write(ev *audit.Event) error
	// Written reports whether an event with id is stored already, so that a write retried after
	// a crash (or an error) is not doubled. A sink that cannot tell (a stream) says false.
	Written(id string) (bool, error)
}

// Directory reads the Admin SDK Directory records profile templates and routes use
// (*directory.Client). It is safe for concurrent use; the records it returns are shared and
// must not be modified.
//
// Every error is classified (errclass.Of): retryable ones (429, 5xx, timeouts) are tried again
// within engine.retry.maxDuration, no sooner than their hint; permanent ones fail the process.
// An error with a method NotFound() bool that says true means the Directory has no such record;
// one with a method Forbidden() bool that says true means the adapter may not read it (an
// operator must grant domain-wide delegation). A call cut short by ctx decides nothing.
type Directory interface {
	// Device reads the record of the ChromeOS device deviceID (deviceDirectoryApiId) of customer.
	Device(ctx context.Context, customer, deviceID string) (*csr.DeviceDirectory, error)
	// User reads the record of the user userKey (userDirectoryApiId, or the primary e-mail).
	User(ctx context.Context, customer, userKey string) (*csr.UserDirectory, error)
}

// Profile is a compiled adapter profile.
type Profile struct {
	Template     *csr.Template
	TemplateName string
	Validity     time.Duration
	SignDeadline time.Duration
	// Strict refuses a certificate whose names or extended key usages differ from the request.
	Strict bool
	// Routes pick the CA connection, validity or template name by the org unit of the process's
	// subject (the device's, or the user's for a user process); the first that matches wins,
	// and none matching leaves the profile's settings and the process's CA connection.
	Routes []config.Route
	// RevokeSuperseded, when set, revokes the certificates a new one of this profile
	// supersedes (supersede.go).
	RevokeSuperseded *RevokePolicy
}

// CAConnection is a configured CA connector.
type CAConnection struct {
	Connector ca.Connector
	Timeout   time.Duration // bounds one Issue call
}

// Options configures an Engine. Zero values take the defaults of package config (Default*).
type Options struct {
	InstanceID string
	// Tenant names the tenant this engine works for in its audit events (docs/tenants.md);
	// empty for the single-customer form.
	Tenant string
	API    API
	Store  journal.Store
	// Profiles and CAs are what processes' references resolve to, until Reconfigure.
	Profiles map[string]*Profile      // by profileAdapterConfigReference
	CAs      map[string]*CAConnection // by caConnectionAdapterConfigReference

	Workers         int
	PollInterval    time.Duration
	MaxPollInterval time.Duration
	// LongWaitAfter and LongWaitPollInterval: once a device has not signed for LongWaitAfter
	// since signData, its operation is polled every LongWaitPollInterval (if longer than the
	// doubling schedule's interval), to spare the quota while it is offline.
	LongWaitAfter        time.Duration
	LongWaitPollInterval time.Duration
	Retry                config.Retry
	// LeaseDuration is how long a worker holds a record without renewing its lease before
	// others may take it. While a step runs, a heartbeat renews the lease every third of it;
	// a step whose lease is lost is abandoned before its next side effect.
	LeaseDuration time.Duration
	// ShutdownGracePeriod is how long, once Run's ctx ends, the steps in flight may take to
	// finish and be journaled (default 25s). Steps still running then are cancelled, and their
	// records stay as last journaled.
	ShutdownGracePeriod time.Duration

	// Directory reads the Directory records of profiles whose templates or routes use them;
	// nil fails the processes of such profiles (adapter refuses them when google.directory is off).
	Directory Directory

	// Audit receives one event per process that reaches a final state, written after the final
	// state is journaled and journaled as written (Record.AuditPending) in turn; nil writes none.
	Audit Auditor

	Logger *zap.Logger
	// Registerer receives the engine's metrics (metrics.Engine, metrics.CA); nil exports none.
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Engine advances claimed processes. Admit is safe to call concurrently with Run.
type Engine struct {
	o     Options
	owner string // lease owner: this instance and this run
	log   *zap.Logger
	m     *metrics.Engine
	cam   *metrics.CA
	aud   *metrics.Audit
	rvm   *metrics.Revocations
	wake  chan struct{}
	// admitting coalesces concurrent admissions of one process (Pub/Sub may deliver a message
	// twice at once), so that a duplicate waits for the first instead of claiming again.
	admitting singleflight.Group
	// admissions remembers failed admissions: their backoff, and claims not yet recorded.
	admissions admissions

	// active maps a record to the done channel of the worker on it. Should a lease lapse while
	// its worker still winds down, the next worker on that record waits for it: within one
	// engine a record's steps never overlap, whatever the journal does.
	mu     sync.Mutex
	active map[string]chan struct{}

	// catalog is Profiles and CAs, replaced by Reconfigure; each step uses one throughout.
	catalog *swap.Value[*catalog]
}

// catalog is what processes' references resolve to.
type catalog struct {
	profiles map[string]*Profile
	cas      map[string]*CAConnection
}

// Reconfigure makes profiles and cas what the steps that start from now on resolve processes'
// references to; a step in flight finishes with what it started with. The channel is closed
// once no step uses the previous set any more, when its connectors may be closed.
func (e *Engine) Reconfigure(profiles map[string]*Profile, cas map[string]*CAConnection) <-chan struct{} {
	return e.catalog.Replace(&catalog{profiles: profiles, cas: cas})
}

// New validates o and returns an Engine.
func New(o Options) (*Engine, error) {
	switch {
	case o.InstanceID == "":
		return nil, errors.New("engine: instance id is required")
	case o.API == nil:
		return nil, errors.New("engine: API client is required")
	case o.Store == nil:
		return nil, errors.New("engine: journal store is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.PollInterval, config.DefaultPollInterval)
	def(&o.MaxPollInterval, config.DefaultMaxPollInterval)
	def(&o.LongWaitAfter, config.DefaultLongWaitAfter)
	def(&o.LongWaitPollInterval, config.DefaultLongWaitPollInterval)
	def(&o.Retry.InitialBackoff, config.DefaultInitialBackoff)
	def(&o.Retry.MaxBackoff, config.DefaultMaxBackoff)
	def(&o.Retry.MaxDuration, config.DefaultRetryMaxDuration)
	def(&o.LeaseDuration, config.DefaultLeaseDuration)
	def(&o.ShutdownGracePeriod, config.DefaultShutdownGracePeriod)
	if o.Workers <= 0 {
		o.Workers = config.DefaultWorkers
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	return &Engine{
		o:      o,
		owner:  o.InstanceID + "/" + hex.EncodeToString(suffix[:]),
		log:    o.Logger,
		m:      metrics.NewEngine(o.Registerer),
		cam:    metrics.NewCA(o.Registerer),
		aud:    metrics.NewAudit(o.Registerer),
		rvm:    metrics.NewRevocations(o.Registerer),
		wake:   make(chan struct{}, 1),
		active: map[string]chan struct{}{},

		catalog: swap.New(&catalog{profiles: o.Profiles, cas: o.CAs}),
	}, nil
}

func (e *Engine) now() time.Time { return e.o.Now() }

// InFlight is the number of records being worked now, each in the middle of a step or between
// two steps of one run.
func (e *Engine) InFlight() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.active)
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Admit takes responsibility for a notified process: it reads it, claims it and records the
// claim. It returns nil when the process is recorded or needs no work from this instance, and an
// error when the caller should try again later (the notification must not be acked). The error
// has a method RetryAfter() time.Duration, how long to wait first, which grows with the failed
// admissions of the process in a row. After a failure to record a claim that landed, the next
// admission of the process records it without reading and claiming it again.
func (e *Engine) Admit(ctx context.Context, name string) error {
	ran := false
	_, err, _ := e.admitting.Do(name, func() (any, error) { ran = true; return nil, e.settle(ctx, name, e.admit(ctx, name)) })
	if !ran {
		e.m.Admissions.WithLabelValues("coalesced").Inc()
	}
	return err
}

func (e *Engine) admit(ctx context.Context, name string) error {
	start := e.now()
	if _, err := e.o.Store.Get(ctx, name); err == nil {
		e.m.Admissions.WithLabelValues("duplicate").Inc()
		e.log.Debug("notification for a process already recorded", zap.String("process", name))
		return nil
	} else if !errors.Is(err, journal.ErrNotFound) {
		return fmt.Errorf("admit %s: %w", name, err)
	}
	p := e.admissions.claimedByUs(name)
	if p != nil {
		// Only the record failed last time: Google knows the claim is ours.
		e.m.AdmissionClaimsReused.Inc()
		e.log.Debug("recording a claim made before, without claiming again", zap.String("process", name))
	} else {
		var done bool
		var err error
		if p, done, err = e.readAndClaim(ctx, name); done || err != nil {
			return err
		}
	}
	now := e.now()
	rec := &journal.Record{
		Name: name, Process: p, State: journal.StateClaimed,
		StepStarted: now, NextDue: now, Created: now, Updated: now,
	}
	rec.Log(now, "claimed as "+e.o.InstanceID)
	if p.SignRequested() {
		// Our claim survived but our record did not (a lost journal): signData went out already
		// and must not go out again. Wait for the signature over the bytes Google holds, for as
		// long as a profile waits by default: the profile is resolved only when a request is built.
		rec.State, rec.SignData, rec.Algorithm = journal.StateSignRequested, p.SignData, p.SignatureAlgorithm
		rec.SignDeadline = now.Add(config.DefaultSignDeadline)
	}
	created, err := e.o.Store.Create(ctx, rec)
	if err != nil {
		e.admissions.claimed(name, p, now)
		return fmt.Errorf("admit %s: record claim: %w", name, err)
	}
	if created {
		e.m.Admissions.WithLabelValues("claimed").Inc()
		e.m.Step(metrics.StepClaim, e.now().Sub(start))
		e.log.Info("claimed process", zap.String("process", name), zap.String("profile", p.ProfileRef),
			zap.String("ca_connection", p.CAConnectionRef), zap.Bool("user_scope", p.UserScoped()))
		e.poke()
	} else {
		e.m.Admissions.WithLabelValues("duplicate").Inc()
	}
	return nil
}

// readAndClaim reads the process and claims it. done reports that it needs no work from this
// instance (gone, ended, another instance's).
func (e *Engine) readAndClaim(ctx context.Context, name string) (p *process.Process, done bool, err error) {
	p, err = e.o.API.Get(ctx, name)
	if errors.Is(err, process.ErrNotFound) {
		e.m.Admissions.WithLabelValues("not_found").Inc()
		e.log.Warn("notified process does not exist", zap.String("process", name))
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("admit %s: %w", name, err)
	}
	if p.Finished() {
		e.m.Admissions.WithLabelValues("already_finished").Inc()
		e.log.Info("notified process already ended", zap.String("process", name))
		return nil, true, nil
	}
	if err := e.o.API.Claim(ctx, name, e.o.InstanceID); err != nil {
		if errors.Is(err, process.ErrClaimedByOther) {
			e.m.Admissions.WithLabelValues("claimed_by_other").Inc()
			e.log.Info("process is owned by another adapter instance", zap.String("process", name), zap.Error(err))
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("admit %s: %w", name, err)
	}
	return p, false, nil
}

// Run works due records until ctx ends. Then it leases nothing more, lets the steps in flight
// finish and be journaled for up to ShutdownGracePeriod, cancels those still running, and
// returns once every worker has released its lease.
func (e *Engine) Run(ctx context.Context) error {
	// Steps run under their own context, which outlives ctx by the grace period, so that a stop
	// does not cut a CA call or an upload that is about to finish.
	steps, cut := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cut(nil)
	var wg sync.WaitGroup
	slots := make(chan struct{}, e.o.Workers)
	// The owner names this run's leases in the journal: what an operator (or a test) looks for
	// to see what a replica held when it died.
	e.log.Info("engine running", zap.String("lease_owner", e.owner), zap.Int("workers", e.o.Workers),
		zap.Duration("lease_duration", e.o.LeaseDuration))
	for ctx.Err() == nil {
		if free := cap(slots) - len(slots); free > 0 {
			// Not cancelled by ctx: a lease granted as the stop begins is still handed to a
			// worker, which releases it, instead of being left to expire.
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.o.LeaseDuration)
			leasedAt := e.now()
			recs, err := e.o.Store.Lease(lctx, e.owner, leasedAt, e.o.LeaseDuration, free)
			cancel()
			if err != nil && ctx.Err() == nil {
				e.log.Error("lease due records", zap.Error(err))
			}
			for _, rec := range recs {
				slots <- struct{}{}
				prev, done := e.activate(rec.Name)
				wg.Go(func() {
					defer func() { e.deactivate(rec.Name, done); <-slots; e.poke() }()
					e.work(ctx, steps, rec, leasedAt, prev)
				})
			}
		}
		wait := time.Second
		if len(slots) < cap(slots) {
			if next, ok, err := e.o.Store.NextDue(ctx); err == nil && ok {
				wait = min(wait, max(next.Sub(e.now()), 5*time.Millisecond))
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-e.wake:
		case <-t.C:
		}
		t.Stop()
	}
	e.drain(&wg, len(slots), cut)
	return nil
}

// drain waits for the workers in flight after a stop, for up to the grace period.
func (e *Engine) drain(wg *sync.WaitGroup, inFlight int, cut context.CancelCauseFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if inFlight > 0 {
		e.log.Info("stopping: letting the steps in flight finish", zap.Int("in_flight", inFlight),
			zap.Duration("grace_period", e.o.ShutdownGracePeriod))
	}
	t := time.NewTimer(e.o.ShutdownGracePeriod)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		e.log.Warn("shutdown grace period over; cancelling the steps still running (their records stay as journaled)",
			zap.Duration("grace_period", e.o.ShutdownGracePeriod))
		e.m.ShutdownStepsCut.Inc()
		cut(errGraceOver)
		<-done
	}
}

// activate registers a worker for name and returns the done channel of the worker before it,
// if one is still running.
func (e *Engine) activate(name string) (prev, done chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	prev, done = e.active[name], make(chan struct{})
	e.active[name] = done
	return prev, done
}

func (e *Engine) deactivate(name string, done chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	close(done)
	if e.active[name] == done {
		delete(e.active, name)
	}
}

// work advances rec, leased at leasedAt, while steps are due and the engine is not stopping,
// then releases it. Each step's outcome is written before the next begins; every write is
// fenced by the lease token, so a worker that lost its lease writes nothing. prev, when not nil,
// is closed once the previous worker on this record has finished.
func (e *Engine) work(run, steps context.Context, rec *journal.Record, leasedAt time.Time, prev <-chan struct{}) {
	h := e.hold(steps, rec, leasedAt)
	if prev != nil {
		select {
		case <-prev:
		case <-h.ctx.Done():
		}
	}
	release := true
	defer func() {
		h.stop()
		defer h.cancel(nil) // after the release, which retries only while h.ctx lives
		if !release {
			return
		}
		if _, err := e.commit(h, rec, 0); err != nil && !errors.Is(err, journal.ErrLeaseLost) {
			e.log.Error("journal release", zap.String("process", rec.Name), zap.Error(err))
		}
	}()
	// fresh: this worker journaled the record's final state, so its audit event cannot have been
	// written yet; a record leased in a final state may have had it written by a holder that
	// died before journaling that.
	fresh := false
	resumed := true // the first step of a lease may repeat a side effect a previous holder made
	// unjournaled is a step whose outcome was carried on to the next step's write (see below):
	// rec as it ended, and the state and start it had. It counts once that write landed.
	var unjournaled struct {
		rec     *journal.Record
		before  journal.State
		started time.Time
	}
	for h.ctx.Err() == nil && e.due(run, rec, e.now()) {
		before, attempts, started := rec.State, rec.Attempts, rec.StepStarted
		if rec.State.Final() {
			e.afterFinal(h.ctx, rec, fresh)
		} else {
			running := e.m.InFlight.WithLabelValues(string(before))
			running.Inc()
			e.step(h.ctx, rec, resumed)
			running.Dec()
		}
		resumed = false
		now := e.now()
		rec.Updated = now
		switch {
		case before.Final(): // the audit step notes its own outcome
		case rec.State != before:
			rec.Log(now, transitionNote(rec))
		case rec.Attempts > attempts && rec.LastError != "":
			rec.Log(now, "retry: "+rec.LastError)
		}
		// One write journals the outcome and either keeps the lease for the next step or
		// releases it. A step that was interrupted (stop, lost lease) left rec as journaled,
		// plus what it learned for certain; the fence refuses the write if the lease is gone.
		more := h.ctx.Err() == nil && e.due(run, rec, now)
		if more && before == journal.StateSignRequested && rec.State == journal.StateSigned {
			// The signature came from a poll, a read: the CA step, due now, journals it with
			// its intent before it asks the CA, which saves a write per certificate. Should
			// the adapter die in between, the next holder polls again and gets it again.
			signed := *rec
			unjournaled.rec, unjournaled.before, unjournaled.started = &signed, before, started
			continue
		}
		renew := time.Duration(0)
		if more {
			renew = e.o.LeaseDuration
		} else {
			h.stop() // this write releases the lease
		}
		at, err := e.commit(h, rec, renew) // retried while the lease holds: rec may carry a side effect's outcome
		if err != nil {
			release = false
			if errors.Is(err, journal.ErrLeaseLost) {
				e.m.StepsAbandoned.WithLabelValues("lease_lost").Inc()
				e.log.Warn("journal lease lost; the outcome of the last step is dropped, the new holder carries on",
					zap.String("process", rec.Name), zap.String("state", string(rec.State)), zap.Error(err))
				return
			}
			return // commit logged it; the lease is left to run out
		}
		if unjournaled.rec != nil { // journaled now, with what followed it
			e.committed(unjournaled.rec, unjournaled.before, unjournaled.started)
			unjournaled.rec = nil
		}
		e.committed(rec, before, started)
		fresh = fresh || (rec.State.Final() && !before.Final())
		if cause := context.Cause(h.ctx); cause != nil {
			e.m.StepsInterrupted.Inc()
			e.log.Info("step interrupted; the record stays as journaled", zap.String("process", rec.Name),
				zap.String("state", string(rec.State)), zap.String("cause", cause.Error()))
		}
		if !more {
			release = false // the write released it
			return
		}
		h.extended(at)
	}
}

// due reports whether rec has a step due at now for a worker of run: its audit event and the
// decision on the certificates it supersedes even when the engine is stopping, since they are
// written in a moment and would otherwise wait for the next start; not a revocation, which asks
// a CA.
func (e *Engine) due(run context.Context, rec *journal.Record, now time.Time) bool {
	if rec.Done() || rec.NextDue.After(now) {
		return false
	}
	return run.Err() == nil || (rec.State.Final() && (rec.AuditPending || rec.SupersedePending))
}

// writeAudit writes the audit event of rec, which is in a final state, and clears AuditPending.
// The event is written only once the final state is journaled, and AuditPending is cleared only
// once the event is durable: a crash between the two leaves the record pending, and whoever
// takes it next first looks for the event in the sink (Auditor.Written), unless fresh says this
// worker journaled the final state itself. A failure is retried with backoff, without limit:
// the process is over, but its event must not be lost.
func (e *Engine) writeAudit(ctx context.Context, rec *journal.Record, fresh bool) {
	if ctx.Err() != nil {
		return // the lease is gone: the next holder writes it
	}
	ev := audit.Provisioning(rec, e.o.InstanceID)
	ev.Tenant = e.o.Tenant
	if !fresh {
		written, err := e.o.Audit.Written(ev.ID)
		if err != nil {
			e.auditFailed(rec, err)
			return
		}
		if written {
			e.log.Info("audit event already written before a restart", zap.String("process", rec.Name))
			rec.AuditPending = false
			rec.Log(e.now(), "audit event found written")
			return
		}
	}
	if err := e.o.Audit.Write(ev); err != nil {
		e.auditFailed(rec, err)
		return
	}
	rec.AuditPending = false
	rec.Log(e.now(), "audit event written")
}

// auditFailed schedules another try at rec's audit event. LastError is left alone: it holds why
// the process failed, which the event reports.
func (e *Engine) auditFailed(rec *journal.Record, err error) {
	rec.Attempts++
	delay := jitter(e.o.Retry.InitialBackoff, e.o.Retry.MaxBackoff, rec.Attempts)
	rec.NextDue = e.now().Add(delay)
	rec.Log(e.now(), "audit event not written: "+err.Error())
	e.aud.WriteErrors.WithLabelValues(metrics.AuditProvisioning).Inc()
	e.log.Error("audit event not written; will retry", zap.String("process", rec.Name),
		zap.Int("attempt", rec.Attempts), zap.Duration("in", delay), zap.Error(err))
}

// committed reports what a journaled step decided: only once written does a decision count.
// started is when the step began (the record's StepStarted before it).
func (e *Engine) committed(rec *journal.Record, before journal.State, started time.Time) {
	if rec.State == before {
		return
	}
	e.m.Transitions.WithLabelValues(string(before), string(rec.State)).Inc()
	if rec.State.Final() && !before.Final() {
		e.m.Finished(rec.Outcome, rec.ProfileName, rec.CAName, rec.FinishedAt.Sub(rec.Created))
	}
	if step := succeeded(before, rec.State); step != "" {
		e.m.Step(step, rec.Updated.Sub(started))
	}
	if rec.State == journal.StateFailing {
		e.log.Warn("process will fail", zap.String("process", rec.Name), zap.String("reason", rec.FailureMessage))
	}
}

// succeeded names the step that a move from state before to after completes, or "" when the
// move is no success (a failure decided, a process Google ended).
func succeeded(before, after journal.State) string {
	switch {
	case before == journal.StateClaimed && after == journal.StateSignRequested:
		return metrics.StepSignRequest
	case before == journal.StateSignRequested && after == journal.StateSigned:
		return metrics.StepSignWait
	case (before == journal.StateSigned || before == journal.StateCAPending) && after == journal.StateIssued:
		return metrics.StepCAIssue
	case before == journal.StateIssued && after == journal.StateUploaded:
		return metrics.StepUpload
	case before == journal.StateFailing && after == journal.StateFailed:
		return metrics.StepReportFailure
	}
	return ""
}

// transitionNote says in a few words why rec entered its state, for `inspect`.
func transitionNote(rec *journal.Record) string {
	switch rec.State {
	case journal.StateFailing, journal.StateFailed:
		if rec.FailureMessage != "" {
			return rec.FailureMessage
		}
		return rec.LastError
	case journal.StateSignRequested:
		if rec.Operation != "" {
			return "operation " + rec.Operation
		}
	case journal.StateCAPending:
		return rec.LastError
	}
	return ""
}

// step performs the next action for rec's state and updates rec in place, with the profiles
// and CA connections current when it starts. resumed says that rec was just leased in its
// state, so the step may have been taken before (its holder died or was stopped before
// journaling the outcome).
func (e *Engine) step(ctx context.Context, rec *journal.Record, resumed bool) {
	cat, release := e.catalog.Acquire()
	defer release()
	switch rec.State {
	case journal.StateClaimed:
		e.requestSignature(ctx, cat, rec)
	case journal.StateSignRequested:
		e.awaitSignature(ctx, rec)
	case journal.StateSigned, journal.StateCAPending:
		e.issue(ctx, cat, rec)
	case journal.StateIssued:
		e.upload(ctx, rec, resumed)
	case journal.StateFailing:
		e.reportFailure(ctx, rec, resumed)
	default:
		e.log.Error("record in unknown state", zap.String("process", rec.Name), zap.String("state", string(rec.State)))
		e.fail(rec, "internal error in the certificate adapter (unknown state)")
	}
	e.markSupersede(cat, rec)
}

// enter moves rec to state, due now, with a fresh retry budget.
func (e *Engine) enter(rec *journal.Record, state journal.State) {
	now := e.now()
	rec.State, rec.Attempts, rec.StepStarted, rec.NextDue, rec.LastError = state, 0, now, now, ""
}

// fail decides that the process fails with a message the user will see; the decision is
// logged once journaled (committed).
func (e *Engine) fail(rec *journal.Record, message string) {
	rec.FailureMessage = userMessage(message)
	e.enter(rec, journal.StateFailing)
}

// finish ends rec in a final state, due at once for its audit event (work writes it once the
// final state is journaled).
func (e *Engine) finish(rec *journal.Record, state journal.State, how string) {
	now := e.now()
	rec.State, rec.NextDue, rec.FinishedAt, rec.Outcome, rec.Attempts = state, time.Time{}, now, how, 0
	if e.o.Audit != nil {
		rec.AuditPending, rec.NextDue = true, now
	}
	fields := []zap.Field{
		zap.String("process", rec.Name), zap.String("outcome", how), zap.String("profile", rec.ProfileName),
		zap.String("ca_connection", rec.CAName), zap.Duration("age", e.now().Sub(rec.Created)),
	}
	if rec.FailureMessage != "" {
		fields = append(fields, zap.String("failure", rec.FailureMessage))
	}
	e.log.Info("process finished", fields...)
}

// retryLater schedules another try of the current step after a transient error, or fails the
// process once the step has been failing for longer than the retry budget.
func (e *Engine) retryLater(rec *journal.Record, what string, err error, hint time.Duration) {
	now := e.now()
	rec.Attempts++
	rec.LastError = err.Error()
	if now.Sub(rec.StepStarted) >= e.o.Retry.MaxDuration {
		e.m.RetriesExhausted.WithLabelValues(string(rec.State)).Inc()
		if rec.State == journal.StateFailing {
			// Nothing more can be done: keep the reason in the record and stop.
			e.log.Error("could not report failure to Google; giving up", zap.String("process", rec.Name), zap.Error(err))
			e.finish(rec, journal.StateFailed, "failure_unreported")
			return
		}
		e.fail(rec, fmt.Sprintf("%s kept failing for %s: %v", what, e.o.Retry.MaxDuration, err))
		return
	}
	delay := jitter(e.o.Retry.InitialBackoff, e.o.Retry.MaxBackoff, rec.Attempts)
	if hint > delay {
		delay = min(hint, e.o.Retry.MaxBackoff)
	}
	rec.NextDue = now.Add(delay)
	e.m.Retries.WithLabelValues(string(rec.State)).Inc()
	e.log.Info("step failed, will retry", zap.String("process", rec.Name), zap.String("step", what),
		zap.Int("attempt", rec.Attempts), zap.Duration("in", delay), zap.Error(err))
}

// maxMessageLen keeps failure messages readable on the device's settings page.
const maxMessageLen = 500

// userMessage is s within maxMessageLen bytes, never with a character cut in half.
func userMessage(s string) string { return ca.Truncate(s, maxMessageLen, "...") }
