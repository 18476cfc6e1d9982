package engine

import (
	"context"
	"sync"
	"time"

	"github.com/certprov/certprov-adapter/internal/errclass"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Bounds of the backoff between admissions of one process that keep failing.
const (
	// maxAdmitBackoff caps how long a notification is held before it comes again: Pub/Sub
	// extends its ack deadline meanwhile, and a process stays unrecorded no longer than needed.
	maxAdmitBackoff = time.Minute
	// admitMemory is how long a failed admission is remembered without another attempt.
	admitMemory = 10 * time.Minute
)

// admissions remembers, per process, the admissions that failed: how many in a row, and the
// claim that landed on Google's side when only the record of it failed (a journal that is down
// or full). The next attempt then skips get and claim, which Google already answered, and
// only records the claim; and each attempt waits longer than the last (RetryAfter), instead of
// Pub/Sub redelivering the notification at once, tens of times a second. The zero value is
// ready for use.
type admissions struct {
	mu     sync.Mutex
	m      map[string]*admission
	pruned time.Time
}

type admission struct {
	claimed  *process.Process // read and claimed by this instance, its record not written
	failures int
	last     time.Time
}

// claimedByUs returns the process as read before this instance claimed it, if an earlier
// admission got that far, and nil otherwise.
func (a *admissions) claimedByUs(name string) *process.Process {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ad := a.m[name]; ad != nil && ad.claimed != nil {
		return ad.claimed.Clone()
	}
	return nil
}

// claimed notes that this instance claimed p, whose record is about to be written.
func (a *admissions) claimed(name string, p *process.Process, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.entry(name, now).claimed = p.Clone()
}

// settled ends what is remembered of name: the admission succeeded or needs no more attempts.
func (a *admissions) settled(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, name)
}

// failed counts a failed admission of name and returns how many failed in a row.
func (a *admissions) failed(name string, now time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.pruned) > admitMemory {
		// Notifications that stopped coming (another replica recorded them, or Pub/Sub gave up)
		// are forgotten; forgetting a claim only costs a get and a claim, which Google allows
		// again for the instance that holds it.
		for n, ad := range a.m {
			if now.Sub(ad.last) > admitMemory {
				delete(a.m, n)
			}
		}
		a.pruned = now
	}
	ad := a.entry(name, now)
	ad.failures++
	return ad.failures
}

func (a *admissions) entry(name string, now time.Time) *admission {
	if a.m == nil {
		a.m = map[string]*admission{}
	}
	ad := a.m[name]
	if ad == nil {
		ad = &admission{}
		a.m[name] = ad
	}
	ad.last = now
	return ad
}

// settle records the outcome of an admission of name and returns err, which, when not nil,
// says when to try again (RetryAfter): a backoff growing with the failures in a row, from
// engine.retry.initialBackoff up to maxBackoff (at most maxAdmitBackoff), never shorter than
// Google's Retry-After. Each delay lies between its doubled floor and twice that, so that the
// attempts slow down however fast they fail. An admission cut short by ctx counts for nothing.
func (e *Engine) settle(ctx context.Context, name string, err error) error {
	if err == nil {
		e.admissions.settled(name)
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	e.m.AdmissionFailures.Inc()
	failures := e.admissions.failed(name, e.now())
	ceiling := min(e.o.Retry.MaxBackoff, maxAdmitBackoff)
	floor := min(e.o.Retry.InitialBackoff<<min(failures-1, 30), ceiling)
	if floor <= 0 {
		floor = ceiling
	}
	delay := jitter(floor, ceiling, 1)
	if _, hint := errclass.Of(err); hint > delay {
		delay = min(hint, ceiling)
	}
	return &admitError{err: err, after: delay}
}

// admitError is a failed admission that says when to try again.
type admitError struct {
	err   error
	after time.Duration
}

func (e *admitError) Error() string { return e.err.Error() }
func (e *admitError) Unwrap() error { return e.err }

// RetryAfter is how long the caller should wait before the admission is tried again; the
// intake holds the notification that long before handing it back to Pub/Sub.
func (e *admitError) RetryAfter() time.Duration { return e.after }
