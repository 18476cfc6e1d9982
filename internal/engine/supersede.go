package engine

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Renewal hygiene (docs/renewal.md). Once a process of a profile with a RevokePolicy is
// uploaded, its record finds, in the journal, the certificates issued before it to the same
// identity and journals their revocations (Record.Revocations) — the decision is journaled
// before anything is revoked. When a revocation's grace period has passed, the record is leased
// again, and the CA is asked to revoke: at least once, since a crash between the CA's answer
// and the journal write asks again, which ca.Revoker's idempotency makes harmless. Everything
// happens under the record's lease, fenced like its other steps, so one replica revokes each.

// RevokePolicy is a profile's renewal hygiene (profiles.<name>.revokeSuperseded).
type RevokePolicy struct {
	// GracePeriod is how long after the new certificate was issued the old ones stay valid.
	GracePeriod time.Duration
	Reason      ca.Reason
	// CAConnections limits revocation to certificates issued through these connections;
	// empty: every connection.
	CAConnections []string
}

// markSupersede makes rec, just uploaded, look for the certificates it supersedes, if its
// profile asks for it.
func (e *Engine) markSupersede(cat *catalog, rec *journal.Record) {
	if rec.State != journal.StateUploaded || rec.CertificatePEM == "" || rec.Identity() == "" {
		return
	}
	if p := cat.profiles[rec.ProfileName]; p == nil || p.RevokeSuperseded == nil {
		return
	}
	rec.SupersedePending, rec.NextDue = true, e.now()
}

// afterFinal does what a record in a final state still owes, one thing per call: the decision
// on the certificates it supersedes, its audit event, then each revocation as it falls due.
// fresh says that this worker journaled the final state (see writeAudit).
func (e *Engine) afterFinal(ctx context.Context, rec *journal.Record, fresh bool) {
	switch {
	case rec.SupersedePending:
		e.supersede(ctx, rec)
	case rec.AuditPending:
		e.writeAudit(ctx, rec, fresh)
	default:
		e.revokeNext(ctx, rec)
	}
	if !rec.SupersedePending && !rec.AuditPending {
		if at, ok := rec.NextRevocation(); ok {
			rec.NextDue = at
		}
	}
}

// issuedAt is when r's certificate c was issued: as journaled, or, for a record journaled
// before that was kept, the certificate's own NotBefore.
func issuedAt(r *journal.Record, c *x509.Certificate) time.Time {
	if !r.IssuedAt.IsZero() {
		return r.IssuedAt
	}
	return c.NotBefore
}

// firstCertificate parses the leaf a record or revocation keeps.
func firstCertificate(pemText string) (*x509.Certificate, error) {
	certs, err := pemutil.ParseCertificates([]byte(pemText))
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in the PEM")
	}
	return certs[0], nil
}

// supersede finds the certificates issued to rec's identity before rec's and journals their
// revocations, due when the profile's grace period after rec's issuance ends. Never a
// certificate issued at the same time or later (that one supersedes rec's), never rec's own,
// never one whose revocation another record decided already, never one that expires before it
// would be revoked.
func (e *Engine) supersede(ctx context.Context, rec *journal.Record) {
	cat, release := e.catalog.Acquire()
	defer release()
	now := e.now()
	var policy *RevokePolicy
	if p := cat.profiles[rec.ProfileName]; p != nil {
		policy = p.RevokeSuperseded
	}
	cert, err := firstCertificate(rec.CertificatePEM)
	if policy == nil || err != nil {
		// The profile was reconfigured meanwhile, or the record is unreadable (never: the
		// certificate was checked before it was stored).
		rec.SupersedePending = false
		rec.Log(now, "superseded certificates not looked for: the profile no longer revokes them")
		return
	}
	found, err := e.o.Store.IssuedTo(ctx, rec.Identity())
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		rec.Attempts++
		delay := jitter(e.o.Retry.InitialBackoff, e.o.Retry.MaxBackoff, rec.Attempts)
		rec.NextDue = now.Add(delay)
		rec.Log(now, "superseded certificates not looked up: "+err.Error())
		e.log.Warn("looking up superseded certificates failed; will retry", zap.String("process", rec.Name),
			zap.Duration("in", delay), zap.Error(err))
		return
	}
	decided := map[string]bool{}
	for _, r := range found {
		for _, v := range r.Revocations {
			decided[v.Process] = true
		}
	}
	mine := issuedAt(rec, cert)
	due := mine.Add(policy.GracePeriod)
	added := 0
	for _, old := range found {
		if old.Name == rec.Name || decided[old.Name] || rec.Supersedes(old.Name) {
			continue
		}
		oc, err := firstCertificate(old.CertificatePEM)
		if err != nil {
			e.log.Warn("a certificate of the same identity cannot be read; not revoked", zap.String("process", rec.Name),
				zap.String("superseded", old.Name), zap.Error(err))
			continue
		}
		switch {
		case !issuedAt(old, oc).Before(mine):
			continue // issued with rec's or after: it is the newer one
		case oc.SerialNumber.Cmp(cert.SerialNumber) == 0 && old.CAName == rec.CAName:
			continue // the same certificate, recorded twice
		case !oc.NotAfter.After(due):
			continue // it expires before it would be revoked
		case len(policy.CAConnections) > 0 && !slices.Contains(policy.CAConnections, old.CAName):
			e.log.Info("superseded certificate not revoked: its CA connection is not in the profile's revokeSuperseded.caConnections",
				zap.String("process", rec.Name), zap.String("superseded", old.Name), zap.String("ca_connection", old.CAName))
			continue
		}
		rec.Revocations = append(rec.Revocations, journal.Revocation{
			Process: old.Name, CAName: old.CAName, Serial: oc.SerialNumber.Text(16), CertificatePEM: old.CertificatePEM,
			Reason: policy.Reason.String(), Due: due, NextDue: due, State: journal.RevocationPending,
		})
		added++
		e.rvm.Decided.WithLabelValues(rec.ProfileName).Inc()
		e.log.Info("certificate superseded; revocation journaled", zap.String("process", rec.Name),
			zap.String("superseded", old.Name), zap.String("serial", oc.SerialNumber.Text(16)),
			zap.String("ca_connection", old.CAName), zap.Time("due", due))
	}
	rec.SupersedePending, rec.Attempts = false, 0
	rec.Log(now, fmt.Sprintf("supersedes %d earlier certificate(s), revoked from %s", added, due.UTC().Format(time.RFC3339)))
}

// revokeNext works the first open revocation of rec that is due: its audit event, or the CA
// call.
func (e *Engine) revokeNext(ctx context.Context, rec *journal.Record) {
	now := e.now()
	for i := range rec.Revocations {
		v := &rec.Revocations[i]
		if !v.Open() || v.NextDue.After(now) {
			continue
		}
		if v.AuditPending {
			e.writeRevocationAudit(ctx, rec, v, false)
		} else {
			e.revoke(ctx, rec, v)
		}
		return
	}
}

// revoke asks the CA that issued v's certificate to revoke it. A call cut short (a stop, a lost
// lease) decides nothing: the revocation stays pending, and is asked again.
func (e *Engine) revoke(ctx context.Context, rec *journal.Record, v *journal.Revocation) {
	cat, release := e.catalog.Acquire()
	defer release()
	// Turning the option off (a reload) stops what it decided: an operator who turns it off
	// because devices keep using their old certificates must not see them revoked anyway.
	if p := cat.profiles[rec.ProfileName]; p == nil || p.RevokeSuperseded == nil {
		e.revocationEnded(ctx, rec, v, fmt.Errorf("not revoked: profiles.%s no longer revokes superseded certificates", rec.ProfileName))
		return
	}
	conn := cat.cas[v.CAName]
	if conn == nil {
		e.revocationEnded(ctx, rec, v, fmt.Errorf("the adapter has no CA connection named %q any more", v.CAName))
		return
	}
	rv, ok := conn.Connector.(ca.Revoker)
	if !ok {
		e.revocationEnded(ctx, rec, v, fmt.Errorf("caConnections.%s cannot revoke: its CA offers no revocation to the adapter", v.CAName))
		return
	}
	cert, err := firstCertificate(v.CertificatePEM)
	if err != nil {
		e.revocationEnded(ctx, rec, v, fmt.Errorf("the journaled certificate cannot be read: %w", err))
		return
	}
	reason, err := ca.ParseReason(v.Reason)
	if err != nil {
		e.revocationEnded(ctx, rec, v, err)
		return
	}
	cctx := ctx
	if conn.Timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, conn.Timeout)
		defer cancel()
	}
	start := e.now()
	err = rv.Revoke(cctx, &ca.RevokeRequest{Serial: cert.SerialNumber, Certificate: cert, Key: v.Process, Reason: reason})
	e.cam.Observe(ctx, cctx, v.CAName, metrics.CARevoke, e.now().Sub(start), err)
	if err != nil && ctx.Err() != nil {
		return
	}
	if err == nil {
		e.revocationEnded(ctx, rec, v, nil)
		return
	}
	now := e.now()
	class, hint := ca.Classify(err)
	if class == ca.ClassPermanent {
		e.revocationEnded(ctx, rec, v, fmt.Errorf("the CA refused: %w", err))
		return
	}
	if !cert.NotAfter.After(now) {
		e.revocationEnded(ctx, rec, v, fmt.Errorf("the certificate expired at %s while the CA kept failing: %w",
			cert.NotAfter.UTC().Format(time.RFC3339), err))
		return
	}
	v.Attempts++
	v.LastError = err.Error()
	delay := max(jitter(e.o.Retry.InitialBackoff, e.o.Retry.MaxBackoff, v.Attempts), min(hint, e.o.Retry.MaxBackoff))
	v.NextDue = now.Add(delay)
	e.rvm.Attempts.WithLabelValues(v.CAName, metrics.RevocationRetry).Inc()
	rec.Log(now, fmt.Sprintf("revoking serial %s failed, will retry: %v", v.Serial, err))
	e.log.Warn("revoking a superseded certificate failed; will retry", zap.String("process", rec.Name),
		zap.String("superseded", v.Process), zap.String("serial", v.Serial), zap.String("ca_connection", v.CAName),
		zap.Int("attempt", v.Attempts), zap.Duration("in", delay), zap.Error(err))
}

// revocationEnded puts v in its final state: revoked (err nil) or failed, never tried again.
// With an audit trail, the outcome is journaled first and the event written after, so that a
// crash in between leaves the event to be written once, after a look in the sink.
func (e *Engine) revocationEnded(ctx context.Context, rec *journal.Record, v *journal.Revocation, err error) {
	now := e.now()
	v.State, v.At, v.NextDue, v.LastError = journal.RevocationRevoked, now, now, ""
	result := metrics.RevocationRevoked
	if err != nil {
		v.State, v.LastError, result = journal.RevocationFailed, err.Error(), metrics.RevocationFailed
	}
	e.rvm.Attempts.WithLabelValues(v.CAName, result).Inc()
	fields := []zap.Field{zap.String("process", rec.Name), zap.String("superseded", v.Process),
		zap.String("serial", v.Serial), zap.String("ca_connection", v.CAName), zap.String("reason", v.Reason)}
	if err != nil {
		rec.Log(now, fmt.Sprintf("revoking serial %s failed for good: %v", v.Serial, err))
		e.log.Error("superseded certificate not revoked; not tried again", append(fields, zap.Error(err))...)
	} else {
		rec.Log(now, fmt.Sprintf("revoked serial %s (%s), superseded by this process's certificate", v.Serial, v.Reason))
		e.log.Info("superseded certificate revoked", fields...)
	}
	if e.o.Audit == nil {
		return
	}
	v.AuditPending = true
	if werr := e.o.Store.Update(ctx, e.owner, rec, now, e.o.LeaseDuration); werr != nil {
		return // the work loop journals it; the event follows from there, after a look in the sink
	}
	e.writeRevocationAudit(ctx, rec, v, true)
}

// writeRevocationAudit writes v's audit event and clears its AuditPending; unless fresh (this
// worker journaled v's outcome just now), it first looks whether the event is in the sink. A
// failure is retried with backoff, without limit, like a process's event.
func (e *Engine) writeRevocationAudit(ctx context.Context, rec *journal.Record, v *journal.Revocation, fresh bool) {
	if ctx.Err() != nil {
		return
	}
	ev := audit.Superseded(rec, v, e.o.InstanceID)
	if !fresh {
		written, err := e.o.Audit.Written(ev.ID)
		if err != nil {
			e.revocationAuditFailed(rec, v, err)
			return
		}
		if written {
			v.AuditPending = false
			rec.Log(e.now(), "audit event of the revocation of serial "+v.Serial+" found written")
			return
		}
	}
	if err := e.o.Audit.Write(ev); err != nil {
		e.revocationAuditFailed(rec, v, err)
		return
	}
	v.AuditPending = false
}

func (e *Engine) revocationAuditFailed(rec *journal.Record, v *journal.Revocation, err error) {
	v.Attempts++
	delay := jitter(e.o.Retry.InitialBackoff, e.o.Retry.MaxBackoff, v.Attempts)
	v.NextDue = e.now().Add(delay)
	e.aud.WriteErrors.WithLabelValues(metrics.AuditRevocation).Inc()
	e.log.Error("audit event of a revocation not written; will retry", zap.String("process", rec.Name),
		zap.String("serial", v.Serial), zap.Duration("in", delay), zap.Error(err))
}
