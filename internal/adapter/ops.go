package adapter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/ops"
)

// Names of the readiness checks (/readyz, certprov_readiness_check{check}).
const (
	checkConfig       = "config"
	checkJournal      = "journal"
	checkPubSub       = "pubsub"
	checkGoogleToken  = "google_token"
	checkVAToken      = "verified_access_token"
	checkDirToken     = "directory_token"
	checkCAPrefix     = "ca_connection:"
	maxCACheckTimeout = 30 * time.Second
)

// streamOpener is the part of the Pub/Sub intake the readiness check reads (*intake.Receiver).
type streamOpener interface {
	// StreamOpen reports whether a stream is open now and, when none is, why not.
	StreamOpen() (open bool, lastErr error)
}

// readiness are the inputs of the readiness checks.
type readiness struct {
	cfg     *config.Config
	store   journal.Store
	records *metrics.Journal
	intake  streamOpener
	google  oauth2.TokenSource // nil without credentials
	va      oauth2.TokenSource // nil without Verified Access or credentials
	vaOn    bool
	// directory is the Directory client's token source, when directoryOn.
	directory   oauth2.TokenSource
	directoryOn bool
	cas         map[string]*engine.CAConnection
	calls       *metrics.CA
}

// checks builds one readiness check per dependency: the configuration, the journal, the
// Pub/Sub stream, the Google access tokens, and every CA connection.
func (r readiness) checks() []ops.Check {
	out := []ops.Check{
		{Name: checkConfig, Run: func(context.Context) (string, error) {
			return fmt.Sprintf("loaded: %d profiles, %d CA connections, %d Verified Access profiles",
				len(r.cfg.Profiles), len(r.cfg.CAConnections), len(r.cfg.VerifiedAccess.Profiles)), nil
		}},
		{Name: checkJournal, Run: r.journal},
		{Name: checkPubSub, Run: r.pubsub},
		{Name: checkGoogleToken, Run: tokenCheck(r.google, "google.credentials.type is none: no token needed (emulator)")},
	}
	if r.vaOn {
		out = append(out, ops.Check{Name: checkVAToken, Run: tokenCheck(r.va, "google.credentials.type is none: no token needed (emulator)")})
	}
	if r.directoryOn {
		out = append(out, ops.Check{Name: checkDirToken, Run: tokenCheck(r.directory, "google.credentials.type is none: no token needed (emulator)")})
	}
	for _, name := range slices.Sorted(maps.Keys(r.cas)) {
		conn := r.cas[name]
		timeout := conn.Timeout
		if timeout <= 0 || timeout > maxCACheckTimeout {
			timeout = maxCACheckTimeout
		}
		out = append(out, ops.Check{Name: checkCAPrefix + name, Timeout: min(timeout, r.cfg.Ops.CheckTimeout), Run: r.caPing(name, conn.Connector)})
	}
	return out
}

// journal proves the journal accepts a write and samples its record counts.
func (r readiness) journal(ctx context.Context) (string, error) {
	detail := "no write check for this journal type"
	if p, ok := r.store.(journal.Pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return "", fmt.Errorf("journal (%s) cannot be written: %w", r.cfg.Journal.Type, err)
		}
		detail = "writable (" + r.cfg.Journal.Type + ")"
	}
	if c, ok := r.store.(journal.Counter); ok {
		counts, err := c.Count(ctx)
		if err != nil {
			// The metrics keep their last values; work goes on.
			return detail + "; records not counted: " + err.Error(), nil
		}
		states := journal.States()
		names := make([]string, len(states))
		byName := make(map[string]int, len(counts))
		for i, s := range states {
			names[i] = string(s)
		}
		total := 0
		for s, n := range counts {
			byName[string(s)] = n
			total += n
		}
		r.records.Observe(names, byName)
		detail += fmt.Sprintf("; %d records", total)
	}
	// Records that owe a revocation are unfinished until it is done.
	if recs, err := r.store.Unfinished(ctx); err == nil {
		n := journal.PendingRevocations(recs)
		r.records.RevocationsPending.Set(float64(n))
		if n > 0 {
			detail += fmt.Sprintf("; %d revocations pending", n)
		}
	}
	return detail, nil
}

// pubsub passes while a StreamingPull stream is open, i.e. while notifications can arrive.
func (r readiness) pubsub(context.Context) (string, error) {
	open, lastErr := r.intake.StreamOpen()
	switch {
	case open:
		return "stream open to " + r.cfg.PubSub.Subscription, nil
	case lastErr != nil:
		return "", fmt.Errorf("no Pub/Sub stream open: %w", lastErr)
	default:
		return "", errors.New("no Pub/Sub stream open: none opened yet, or the last one closed and none reopened")
	}
}

// tokenCheck passes while ts yields a valid access token. The source caches the token until
// shortly before it expires, so the check asks Google only as often as the adapter itself
// would; while one request for a token is outstanding no other is made.
func tokenCheck(ts oauth2.TokenSource, without string) func(context.Context) (string, error) {
	if ts == nil {
		return func(context.Context) (string, error) { return without, nil }
	}
	var mu sync.Mutex
	var pending chan struct{} // closed when the outstanding request returns
	var tok *oauth2.Token
	var tokErr error
	return func(ctx context.Context) (string, error) {
		mu.Lock()
		if pending == nil {
			done := make(chan struct{})
			pending = done
			go func() {
				t, err := ts.Token() // oauth2 token sources take no context
				mu.Lock()
				tok, tokErr, pending = t, err, nil
				mu.Unlock()
				close(done)
			}()
		}
		wait := pending
		mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return "", errors.New("no access token yet: the token request is still outstanding")
		}
		mu.Lock()
		t, err := tok, tokErr
		mu.Unlock()
		if err != nil {
			// oauth2's errors carry the token endpoint's answer, never the key or a token.
			return "", fmt.Errorf("cannot obtain an access token: %w", err)
		}
		if !t.Valid() {
			return "", errors.New("the access token obtained is not valid")
		}
		if t.Expiry.IsZero() {
			return "access token obtained", nil
		}
		return "access token valid until " + t.Expiry.UTC().Format(time.RFC3339), nil
	}
}

// caPing passes while the CA connection answers its connector's ping.
func (r readiness) caPing(name string, conn ca.Connector) func(context.Context) (string, error) {
	p, ok := conn.(ca.Pinger)
	if !ok {
		return func(context.Context) (string, error) { return "no health check for this connector type", nil }
	}
	return func(ctx context.Context) (string, error) {
		start := time.Now()
		err := p.Ping(ctx)
		r.calls.Observe(context.WithoutCancel(ctx), ctx, name, metrics.CAPing, time.Since(start), err) // a cut ping is a timeout
		if err != nil {
			return "", err
		}
		return "reachable", nil
	}
}

// caCertificates exports the expiry of the certificates the CA connections conns hold,
// replacing those of the connections before (a reload).
func caCertificates(c *metrics.Certificates, conns map[string]*engine.CAConnection) {
	sources := map[string]metrics.CertificateSource{}
	for name, conn := range conns {
		if h, ok := conn.Connector.(ca.CertificateHolder); ok {
			sources[name] = heldCertificates(h.Certificates)
		}
	}
	c.SetKind(metrics.KindCAConnection, sources)
}

// heldCertificates is get as the certificate metrics read it.
func heldCertificates(get func() []ca.HeldCertificate) metrics.CertificateSource {
	return func() []metrics.HeldCertificate {
		held := get()
		out := make([]metrics.HeldCertificate, len(held))
		for i, h := range held {
			out[i] = metrics.HeldCertificate(h)
		}
		return out
	}
}

// opsReconfigured points the readiness checks and the certificate metrics at the CA
// connections a reload swapped in.
func (a *Adapter) opsReconfigured(conns map[string]*engine.CAConnection) {
	a.checks.cas = conns
	if err := a.Ops.SetChecks(a.checks.checks()); err != nil {
		a.log.Error("readiness checks not replaced", zap.Error(err)) // names come from a validated config
	}
	caCertificates(a.certs, conns)
}
