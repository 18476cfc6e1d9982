package engine

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// A scepProfile process names no adapter profile: its certificate lifetime and signing deadline
// are a profile's defaults (docs/configuration.md).
const (
	scepValidity     = config.DefaultValidity
	scepSignDeadline = config.DefaultSignDeadline
)

// resolved is what a process's references point to in this adapter's configuration.
type resolved struct {
	journal.Resolution
	profileName  string
	signDeadline time.Duration
	caName       string
	ca           *CAConnection
	profile      *Profile // nil for a scepProfile process
}

// resolve finds what rec's process names in cat, without rendering anything; the error is the
// message to show the user.
func resolve(cat *catalog, rec *journal.Record) (*resolved, error) {
	p := rec.Process
	r := &resolved{caName: p.CAConnectionRef}
	if r.ca = cat.cas[p.CAConnectionRef]; r.ca == nil {
		return nil, noCAConnection(p.CAConnectionRef)
	}
	if p.SCEPProfile != nil {
		r.Validity, r.signDeadline, r.TemplateName = scepValidity, scepSignDeadline, p.SCEPProfile.TemplateName
		return r, nil
	}
	prof := cat.profiles[p.ProfileRef]
	if prof == nil {
		return nil, fmt.Errorf("the certificate adapter has no profile named %q (profileAdapterConfigReference); ask your administrator to configure it", p.ProfileRef)
	}
	r.profileName, r.profile = p.ProfileRef, prof
	r.Validity, r.signDeadline, r.TemplateName, r.Strict = prof.Validity, prof.SignDeadline, prof.TemplateName, prof.Strict
	return r, nil
}

func noCAConnection(name string) error {
	return fmt.Errorf("the certificate adapter has no CA connection named %q (caConnectionAdapterConfigReference); ask your administrator to configure it", name)
}

// render builds the certificate request r describes for rec's process from data (the process
// and its Directory records); the error is the message to show the user.
func (r *resolved) render(rec *journal.Record, data csr.TemplateData) (*csr.Request, error) {
	p := rec.Process
	if r.profile == nil {
		req, err := csr.FromSCEPProfile(p.SCEPProfile)
		if err != nil {
			return nil, fmt.Errorf("the SCEP profile of this request is invalid: %w", err)
		}
		return req, nil
	}
	req, err := r.profile.Template.RenderData(data)
	if err != nil {
		return nil, fmt.Errorf("profile %q cannot describe this request: %w", r.profileName, err)
	}
	req.TemplateName = r.TemplateName
	return req, nil
}

// forIssue is what issuing rec's certificate needs: what its request was built with, as
// journaled then (or, for a record journaled without it, looked up again), and the CA connection
// of that name now.
func forIssue(cat *catalog, rec *journal.Record) (journal.Resolution, *CAConnection, error) {
	if rec.Resolved == nil {
		r, err := resolve(cat, rec)
		if err != nil {
			return journal.Resolution{}, nil, err
		}
		return r.Resolution, r.ca, nil
	}
	conn := cat.cas[rec.CAName]
	if conn == nil {
		return journal.Resolution{}, nil, noCAConnection(rec.CAName)
	}
	return *rec.Resolved, conn, nil
}

// caRequest builds the connector request for rec.
func caRequest(rec *journal.Record, r journal.Resolution, parsed *x509.CertificateRequest) *ca.Request {
	return &ca.Request{
		Key:          rec.Name,
		CSR:          parsed,
		CSRDER:       rec.CSR,
		Process:      rec.Process,
		ProfileName:  rec.ProfileName,
		TemplateName: r.TemplateName,
		Validity:     r.Validity,
		Ticket:       rec.CATicket,
	}
}

// requestSignature builds the CertificationRequestInfo and asks the device to sign it.
func (e *Engine) requestSignature(ctx context.Context, cat *catalog, rec *journal.Record) {
	r, err := resolve(cat, rec)
	if err != nil {
		e.fail(rec, err.Error())
		return
	}
	data := csr.DataFor(rec.Process)
	if r.profile != nil {
		if !e.readDirectory(ctx, r, rec, &data) {
			return // failed, or to be tried again
		}
		if err := r.route(cat, rec, data); err != nil {
			e.fail(rec, err.Error())
			return
		}
	}
	request, err := r.render(rec, data)
	if err != nil {
		e.fail(rec, err.Error())
		return
	}
	// Kept with the request: the CA is asked with what the request was built with, however the
	// profiles change meanwhile.
	resolution := r.Resolution
	rec.ProfileName, rec.CAName, rec.Resolved = r.profileName, r.caName, &resolution
	alg, err := csr.AlgorithmFor(rec.Process.SPKI)
	if err != nil {
		e.fail(rec, fmt.Sprintf("the device key is not supported: %v", err))
		return
	}
	if contrib, ok := r.ca.Connector.(ca.AttributeContributor); ok {
		start := e.now()
		attrs, err := contrib.CSRAttributes(ctx, &ca.Request{Key: rec.Name, Process: rec.Process,
			ProfileName: r.profileName, TemplateName: r.TemplateName, Validity: r.Validity})
		e.cam.Observe(ctx, ctx, r.caName, metrics.CAAttributes, e.now().Sub(start), err)
		if err != nil {
			if ctx.Err() != nil {
				return // interrupted: nothing was decided
			}
			e.classifiedCAError(rec, "preparing the CA request", err)
			return
		}
		request.Attributes = append(request.Attributes, attrs...)
	}
	cri, err := csr.BuildCRI(request, rec.Process.SPKI)
	if err != nil {
		e.fail(rec, fmt.Sprintf("the certificate request could not be built: %v", err))
		return
	}
	rec.SignData, rec.Algorithm = cri, alg
	rec.SignDeadline = e.now().Add(r.signDeadline)
	e.sendSignData(ctx, rec)
}

// sendSignData journals the intent, then calls signData. Whatever happens afterwards, the
// record is in StateSignRequested: from there signData is only re-sent when Google's own view of
// the process shows it was never received.
func (e *Engine) sendSignData(ctx context.Context, rec *journal.Record) {
	e.enter(rec, journal.StateSignRequested)
	rec.Operation = ""
	// Without the intent on record, sending could lead to a second signData after a crash.
	if !e.journalIntent(ctx, rec, "recording the signing request") {
		return
	}
	e.m.SignRequests.Inc()
	op, err := e.o.API.SignData(ctx, rec.Name, rec.SignData, rec.Algorithm)
	if err != nil {
		if again, _ := retryable(err); again || ctx.Err() != nil {
			// The request may have landed; the next poll reads the process to find out.
			rec.LastError = err.Error()
			rec.NextDue = e.now().Add(e.o.PollInterval)
			e.log.Info("signData outcome unknown; will check the process", zap.String("process", rec.Name), zap.Error(err))
			return
		}
		e.googleRefused(ctx, rec, "asking the device to sign", err)
		return
	}
	rec.Operation = op
	rec.NextDue = e.now().Add(e.o.PollInterval)
	e.log.Info("asked the device to sign", zap.String("process", rec.Name), zap.String("operation", op),
		zap.String("algorithm", rec.Algorithm))
}

// awaitSignature polls until the device signed, the process failed, or the deadline passed.
func (e *Engine) awaitSignature(ctx context.Context, rec *journal.Record) {
	if rec.Operation != "" {
		op, err := e.o.API.GetOperation(ctx, rec.Operation)
		if err != nil {
			e.pollError(ctx, rec, err)
			return
		}
		if op.Done && op.Error != "" {
			// Google failed the process (e.g. the device reported an invalid signature); there is
			// nothing left to report.
			rec.LastError = "signing operation failed: " + op.Error
			e.finish(rec, journal.StateFailed, "failed_by_google")
			return
		}
		if op.Done && op.Process != nil && len(op.Process.Signature) > 0 {
			e.signed(rec, op.Process.Signature)
			return
		}
		if !op.Done {
			e.pollAgain(rec)
			return
		}
		// Done without a signature in the response: read the process itself.
	}
	p, err := e.o.API.Get(ctx, rec.Name)
	if err != nil {
		e.pollError(ctx, rec, err)
		return
	}
	switch {
	case p.FailureMessage != "":
		rec.LastError = "process failed on Google's side: " + p.FailureMessage
		e.finish(rec, journal.StateFailed, "failed_by_google")
	case p.IssuedCertificate != "":
		e.finish(rec, journal.StateUploaded, "issued_before")
	case len(p.Signature) > 0:
		if !bytes.Equal(p.SignData, rec.SignData) {
			e.fail(rec, "the signed data does not match the request this adapter sent")
			return
		}
		e.signed(rec, p.Signature)
	case p.SignRequested():
		e.pollAgain(rec)
	default:
		// Google never received signData: sending it now is the first request, not a second.
		e.log.Info("signData was not received by Google; sending it", zap.String("process", rec.Name))
		e.sendSignData(ctx, rec)
	}
}

func (e *Engine) signed(rec *journal.Record, sig []byte) {
	rec.Signature = sig
	e.enter(rec, journal.StateSigned)
	e.log.Info("device signed", zap.String("process", rec.Name))
}

// pollAgain schedules the next poll, doubling the interval up to MaxPollInterval and, once the
// device has not signed for LongWaitAfter, every LongWaitPollInterval — unless the device ran
// out of time.
func (e *Engine) pollAgain(rec *journal.Record) {
	now := e.now()
	if !rec.SignDeadline.IsZero() && now.After(rec.SignDeadline) {
		e.m.SignDeadlineExceeded.Inc()
		e.fail(rec, fmt.Sprintf("the device did not sign the certificate request within %s; it will retry later",
			rec.SignDeadline.Sub(rec.StepStarted).Round(time.Second)))
		return
	}
	rec.Attempts++
	interval := e.o.PollInterval << min(rec.Attempts-1, 20)
	if interval <= 0 || interval > e.o.MaxPollInterval {
		interval = e.o.MaxPollInterval
	}
	if now.Sub(rec.StepStarted) >= e.o.LongWaitAfter {
		interval = max(interval, e.o.LongWaitPollInterval)
	}
	next := now.Add(interval)
	if !rec.SignDeadline.IsZero() && next.After(rec.SignDeadline) {
		next = rec.SignDeadline.Add(time.Millisecond)
	}
	rec.NextDue = next
}

// pollError handles a failed poll: transient errors count against the signing deadline, others
// end the process. A poll cut short by the stop or a lost lease decides nothing.
func (e *Engine) pollError(ctx context.Context, rec *journal.Record, err error) {
	if ctx.Err() != nil {
		return
	}
	rec.LastError = err.Error()
	if again, _ := retryable(err); again {
		e.pollAgain(rec)
		return
	}
	e.fail(rec, fmt.Sprintf("waiting for the device signature failed: %v", err))
}

// issue verifies the signed request and asks the CA for the certificate. The CA is asked at
// most once per process: the call is journaled as in flight first, and a call found in flight
// after a restart is resolved by asking the CA what it issued, never by asking again blindly.
func (e *Engine) issue(ctx context.Context, cat *catalog, rec *journal.Record) {
	parsed, err := e.assemble(rec)
	if err != nil {
		e.m.BadSignatures.Inc()
		e.fail(rec, err.Error())
		return
	}
	res, conn, err := forIssue(cat, rec)
	if err != nil {
		e.fail(rec, err.Error())
		return
	}
	cctx := ctx
	if conn.Timeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, conn.Timeout)
		defer cancel()
	}
	var issued *ca.Issued
	if rec.CAInFlight {
		// A previous run died while the CA was working on this request.
		recoverer, ok := conn.Connector.(ca.Recoverer)
		if !ok {
			e.fail(rec, "the certificate adapter restarted while the CA was processing this request; "+
				"it was stopped to avoid issuing two certificates")
			return
		}
		start := e.now()
		issued, err = recoverer.Recover(cctx, rec.Name)
		e.cam.Observe(ctx, cctx, rec.CAName, metrics.CARecover, e.now().Sub(start), err)
		if err != nil {
			if ctx.Err() == nil {
				e.classifiedCAError(rec, "the CA (recovering an interrupted request)", err)
			}
			return
		}
		if issued != nil {
			e.cam.Recovered.WithLabelValues(rec.CAName).Inc()
			e.log.Info("recovered the certificate of an interrupted CA request", zap.String("process", rec.Name))
		}
	}
	if issued == nil {
		rec.CAInFlight = true
		if !e.journalIntent(ctx, rec, "recording the CA request") {
			rec.CAInFlight = false
			return
		}
		start := e.now()
		issued, err = conn.Connector.Issue(cctx, caRequest(rec, res, parsed))
		e.cam.Observe(ctx, cctx, rec.CAName, metrics.CAIssue, e.now().Sub(start), err)
		if err != nil && ctx.Err() != nil {
			// Cut short (the grace period ended, or the lease was lost): the record stays in
			// flight, to be recovered by whoever works it next. A certificate that did arrive
			// is kept below, whatever happened meanwhile.
			return
		}
		if err != nil && cctx.Err() != nil {
			e.caTimedOut(rec, conn, err)
			return
		}
		// The connector answered: by contract an error means nothing was issued.
		rec.CAInFlight = false
		if err != nil {
			e.classifiedCAError(rec, "the CA", err)
			return
		}
	}
	rec.CAInFlight = false
	// What the device will check anyway (its key, validity, a leaf) and what it cannot: the chain
	// to the connection's roots, and the names and usages the request asked for. SCEP profiles
	// state no extended key usages and carry no strict setting (docs/configuration.md).
	mismatches, err := leafcheck.Check(issued, leafcheck.Expectations{
		SPKI: rec.Process.SPKI, Now: e.now(), CSR: parsed,
		CAChoosesUsages: rec.Process.SCEPProfile != nil,
		Strict:          res.Strict,
	})
	if err != nil {
		e.m.CertificatesRejected.WithLabelValues(rec.CAName, string(leafcheck.RuleOf(err))).Inc()
		e.log.Error("CA returned an unusable certificate", zap.String("process", rec.Name),
			zap.String("ca_connection", rec.CAName), zap.String("rule", string(leafcheck.RuleOf(err))), zap.Error(err))
		e.fail(rec, fmt.Sprintf("the CA returned an unusable certificate: %v", err))
		return
	}
	for _, m := range mismatches {
		e.m.CertificateMismatches.WithLabelValues(rec.CAName, m.Field).Inc()
		fields := []zap.Field{zap.String("process", rec.Name), zap.String("ca_connection", rec.CAName),
			zap.String("profile", rec.ProfileName), zap.String("field", m.Field), zap.Strings("asked", m.Asked), zap.Strings("got", m.Got)}
		if m.Intermediate != "" {
			fields = append(fields, zap.String("intermediate", m.Intermediate))
		}
		e.log.Warn("CA certificate differs from the request", fields...)
	}
	rec.CertificatePEM, rec.CATicket, rec.IssuedAt = string(pemutil.Encode(issued.Leaf)), "", e.now()
	e.enter(rec, journal.StateIssued)
	e.log.Info("certificate issued", zap.String("process", rec.Name), zap.String("subject", issued.Leaf.Subject.String()),
		zap.String("serial", issued.Leaf.SerialNumber.Text(16)), zap.Time("not_after", issued.Leaf.NotAfter))
}

// caTimedOut handles a CA call that the connection's timeout cut: the CA may have issued, its
// answer lost on the way. Asking again could issue a second certificate, so the request stays in
// flight: the next attempt asks a CA that can say what it issued (ca.Recoverer), and with one
// that cannot the process fails now.
func (e *Engine) caTimedOut(rec *journal.Record, conn *CAConnection, err error) {
	if _, ok := conn.Connector.(ca.Recoverer); ok {
		e.retryLater(rec, "the CA", err, 0)
		return
	}
	rec.CAInFlight = false
	e.fail(rec, fmt.Sprintf("the CA did not answer within %s; it may have issued a certificate, so the request "+
		"was stopped to avoid issuing two", conn.Timeout))
}

// journalIntent writes rec before a side effect that must not happen unrecorded, and reports
// whether the caller may go ahead. The write is fenced by the lease, so it also proves the
// record is still this worker's: after a refusal (or an interruption) the step must act on
// nothing, and the work loop's own write is refused likewise.
func (e *Engine) journalIntent(ctx context.Context, rec *journal.Record, what string) bool {
	err := e.o.Store.Update(ctx, e.owner, rec, e.now(), e.o.LeaseDuration)
	switch {
	case err == nil:
		return true
	case ctx.Err() != nil, errors.Is(err, journal.ErrLeaseLost), errors.Is(err, journal.ErrNotFound):
		return false
	default:
		e.retryLater(rec, what, err, 0)
		return false
	}
}

// assemble completes and verifies the CSR from the device's signature.
func (e *Engine) assemble(rec *journal.Record) (*x509.CertificateRequest, error) {
	if len(rec.CSR) == 0 {
		der, err := csr.Assemble(rec.SignData, rec.Algorithm, rec.Signature)
		if err != nil {
			return nil, fmt.Errorf("the device returned a malformed signature: %v", err)
		}
		rec.CSR = der
	}
	parsed, err := csr.Verify(rec.CSR, rec.Process.SPKI)
	if err != nil {
		return nil, fmt.Errorf("the device signature does not verify against the device key: %v", err)
	}
	return parsed, nil
}

// classifiedCAError applies a connector error's class to rec.
func (e *Engine) classifiedCAError(rec *journal.Record, what string, err error) {
	class, hint := ca.Classify(err)
	switch class {
	case ca.ClassPermanent:
		e.fail(rec, fmt.Sprintf("%s refused the request: %v", what, err))
	case ca.ClassPending:
		var p *ca.PendingError
		if errors.As(err, &p) {
			rec.CATicket = p.Ticket
		}
		if rec.State != journal.StateCAPending {
			e.enter(rec, journal.StateCAPending)
		}
		if e.now().Sub(rec.StepStarted) >= e.o.Retry.MaxDuration {
			e.fail(rec, fmt.Sprintf("%s did not issue the certificate within %s", what, e.o.Retry.MaxDuration))
			return
		}
		if hint <= 0 {
			hint = e.o.MaxPollInterval
		}
		rec.LastError = err.Error()
		rec.NextDue = e.now().Add(min(hint, e.o.Retry.MaxBackoff))
	default:
		e.retryLater(rec, what, err, hint)
	}
}

// upload hands the stored certificate to Google.
func (e *Engine) upload(ctx context.Context, rec *journal.Record, resumed bool) {
	if ctx.Err() != nil {
		return // the lease is gone or the stop cut the step: act on nothing
	}
	if (resumed || rec.Attempts > 0) && e.endedOnGoogle(ctx, rec, "uploading the certificate") {
		return
	}
	err := e.o.API.UploadCertificate(ctx, rec.Name, rec.CertificatePEM)
	if err == nil {
		e.finish(rec, journal.StateUploaded, "issued")
		return
	}
	if ctx.Err() != nil {
		return // the upload may have landed; the next attempt finds out
	}
	if again, hint := retryable(err); again {
		e.retryLater(rec, "uploading the certificate", err, hint)
		return
	}
	e.googleRefused(ctx, rec, "uploading the certificate", err)
}

// endedOnGoogle is asked before repeating an upload or setFailure that may have landed (an
// earlier attempt's answer was lost, or its holder died before journaling it): it reads the
// process and ends rec when Google already holds its outcome, so the mutation is sent once. It
// reports whether rec needs nothing more now (ended, or the read failed and was rescheduled).
func (e *Engine) endedOnGoogle(ctx context.Context, rec *journal.Record, what string) bool {
	p, err := e.o.API.Get(ctx, rec.Name)
	switch {
	case ctx.Err() != nil:
		return true // act on nothing; the next holder reads again
	case err != nil:
		again, hint := retryable(err)
		if !again {
			return false // the mutation's own answer will say more
		}
		e.retryLater(rec, what+" (reading the process first)", err, hint)
		return true
	case p.IssuedCertificate != "":
		e.finish(rec, journal.StateUploaded, "issued")
		return true
	case p.FailureMessage != "":
		rec.LastError = "process failed on Google's side: " + p.FailureMessage
		if rec.State == journal.StateFailing {
			e.finish(rec, journal.StateFailed, "failed")
		} else {
			e.finish(rec, journal.StateFailed, "failed_by_google")
		}
		return true
	}
	return false
}

// reportFailure tells Google (and so the user) why the process failed.
func (e *Engine) reportFailure(ctx context.Context, rec *journal.Record, resumed bool) {
	if ctx.Err() != nil {
		return // the lease is gone or the stop cut the step: act on nothing
	}
	if (resumed || rec.Attempts > 0) && e.endedOnGoogle(ctx, rec, "reporting the failure") {
		return
	}
	err := e.o.API.SetFailure(ctx, rec.Name, rec.FailureMessage)
	if err == nil {
		e.finish(rec, journal.StateFailed, "failed")
		return
	}
	if ctx.Err() != nil {
		return // setFailure may have landed; the next attempt finds out
	}
	if again, hint := retryable(err); again {
		e.retryLater(rec, "reporting the failure", err, hint)
		return
	}
	e.googleRefused(ctx, rec, "reporting the failure", err)
}

// googleRefused handles a permanent API error during a mutation. A refusal often means the
// change already happened (its response was lost) or the process ended meanwhile, so the
// process is read before deciding.
func (e *Engine) googleRefused(ctx context.Context, rec *journal.Record, what string, err error) {
	p, gerr := e.o.API.Get(ctx, rec.Name)
	if gerr != nil {
		if ctx.Err() != nil {
			return
		}
		_, hint := retryable(gerr)
		e.retryLater(rec, what, fmt.Errorf("%w (and reading the process: %v)", err, gerr), hint)
		return
	}
	switch {
	case p.IssuedCertificate != "":
		e.finish(rec, journal.StateUploaded, "issued")
	case p.FailureMessage != "":
		rec.LastError = err.Error()
		e.finish(rec, journal.StateFailed, "failed_by_google")
	case rec.State == journal.StateSignRequested && p.SignRequested():
		// signData landed although the call reported an error; wait for the signature.
		rec.LastError = err.Error()
		rec.NextDue = e.now().Add(e.o.PollInterval)
	case rec.State == journal.StateFailing:
		e.log.Error("Google refused setFailure", zap.String("process", rec.Name), zap.Error(err))
		rec.LastError = err.Error()
		e.finish(rec, journal.StateFailed, "failure_unreported")
	default:
		e.fail(rec, fmt.Sprintf("Google refused %s: %v", what, err))
	}
}

// jitter is exponential backoff with full jitter: a random delay in [base, base·2^attempt],
// capped, so that many processes failing together do not retry together.
func jitter(base, ceiling time.Duration, attempt int) time.Duration {
	d := base << min(attempt, 30)
	if d <= 0 || d > ceiling {
		d = ceiling
	}
	if d <= base {
		return d
	}
	return base + time.Duration(rand.Int64N(int64(d-base)))
}
