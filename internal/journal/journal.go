// Package journal records every process the adapter claimed, so that its work survives restarts:
// the request sent for signing, the operation to poll, the certificate before it is uploaded.
//
// The engine is the only writer. A Store hands records to workers through leases, so that a
// shared store can spread processes over replicas and a record is worked by one worker at a time.
// Every write is fenced by the lease's token: a holder whose lease expired, or was granted again
// since (even to the same owner), cannot write past the new holder.
package journal

import (
	"context"
	"errors"
	"time"

	"github.com/certprov/certprov-adapter/internal/process"
)

// State is where a process stands in the adapter's state machine.
type State string

const (
	// StateClaimed: the claim succeeded; next, build the request and ask the device to sign it.
	StateClaimed State = "claimed"
	// StateSignRequested: signData was (or may have been) sent; next, poll until signed.
	StateSignRequested State = "sign_requested"
	// StateSigned: the device's signature is in hand; next, verify it and ask the CA.
	StateSigned State = "signed"
	// StateCAPending: the CA accepted the request but has not issued; next, ask again.
	StateCAPending State = "ca_pending"
	// StateIssued: the certificate is recorded; next, upload it.
	StateIssued State = "issued"
	// StateFailing: a failure message was decided; next, setFailure.
	StateFailing State = "failing"
	// StateUploaded is final: the certificate reached Google.
	StateUploaded State = "uploaded"
	// StateFailed is final: the failure reached Google, or Google had already ended the process.
	StateFailed State = "failed"
)

// Final reports whether the process has ended in state s: nothing more is sent to Google or
// a CA. The record may still owe its audit event (Record.Done).
func (s State) Final() bool { return s == StateUploaded || s == StateFailed }

// FinalStates are the states a process ends in.
func FinalStates() []State { return []State{StateUploaded, StateFailed} }

// States lists every state, in the order a process goes through them.
func States() []State {
	return []State{StateClaimed, StateSignRequested, StateSigned, StateCAPending, StateIssued, StateFailing, StateUploaded, StateFailed}
}

// Record is one claimed process. It is stored as JSON; the tags are the stable format.
type Record struct {
	Name    string           `json:"name"`
	Process *process.Process `json:"process"` // as read from Google at claim time

	State State `json:"state"`

	ProfileName string `json:"profileName,omitempty"` // the adapter profile ("" for scepProfile processes)
	CAName      string `json:"caName,omitempty"`      // the adapter CA connection
	// Resolved is what the profile gave the request when it was built, which the CA is asked
	// with; nil until then (and in records journaled before it was kept).
	Resolved *Resolution `json:"resolved,omitempty"`

	SignData  []byte `json:"signData,omitempty"` // the DER CertificationRequestInfo sent for signing
	Algorithm string `json:"algorithm,omitempty"`
	Operation string `json:"operation,omitempty"` // signData operation; empty when the response was lost
	Signature []byte `json:"signature,omitempty"`
	CSR       []byte `json:"csr,omitempty"`      // assembled and verified
	CATicket  string `json:"caTicket,omitempty"` // connector handle while the CA reports pending
	// CAInFlight is set before the CA is asked and cleared when it answers; found set after a
	// restart, it means the CA may have issued without the answer being recorded.
	CAInFlight bool `json:"caInFlight,omitempty"`

	CertificatePEM string `json:"certificatePem,omitempty"` // the leaf, stored before upload
	// IssuedAt is when the certificate was recorded: what orders the certificates of one
	// identity, so that renewal hygiene never revokes a newer one (zero in records journaled
	// before it was kept, which are ordered by the certificate's NotBefore).
	IssuedAt       time.Time `json:"issuedAt,omitzero"`
	FailureMessage string    `json:"failureMessage,omitempty"` // what the user will see, stored before setFailure

	Attempts     int       `json:"attempts"`    // failed attempts of the current step
	StepStarted  time.Time `json:"stepStarted"` // when the current step began; bounds its retries
	NextDue      time.Time `json:"nextDue"`
	SignDeadline time.Time `json:"signDeadline,omitzero"`
	LastError    string    `json:"lastError,omitempty"`

	// History is the record's recent transitions, oldest first, at most MaxHistory of them.
	History []Event `json:"history,omitempty"`

	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	FinishedAt time.Time `json:"finishedAt,omitzero"` // set on entering a final state
	// Outcome says how the process ended (issued, failed, failed_by_google, …), set with
	// FinishedAt; the audit event reports it.
	Outcome string `json:"outcome,omitempty"`
	// AuditPending is set on entering a final state when the process's audit event is still to
	// be written, and cleared once it was: until then the record is not Done, so it is leased
	// again (after a crash too) until the event is written.
	AuditPending bool `json:"auditPending,omitempty"`
	// SupersedePending is set on reaching StateUploaded with a certificate of a profile that
	// revokes superseded certificates, and cleared once the certificates it supersedes are
	// found and their revocations journaled (Revocations): until then the record is not Done.
	SupersedePending bool `json:"supersedePending,omitempty"`
	// Revocations are the certificates this record's certificate superseded, each revoked
	// once its grace period passed (revocation.go); the record is not Done while one is open.
	Revocations []Revocation `json:"revocations,omitempty"`

	// LeaseToken names the grant of the lease under which Lease handed out this copy: it grows
	// with every grant of the record's lease, and Update and Renew are refused unless it is the
	// current one. It is not part of the stored record; copies from Get and Unfinished carry 0,
	// which no grant has.
	LeaseToken int64 `json:"-"`
}

// Done reports whether nothing more is due for r: it is in a final state, owes no audit event
// and no revocation of a certificate it superseded. Stores lease, schedule and list as
// unfinished every record that is not Done, and compact and list as finished only those that
// are — so a record with a pending revocation is never compacted.
func (r *Record) Done() bool {
	return r.State.Final() && !r.AuditPending && !r.SupersedePending && !r.RevocationsOpen()
}

// Event is one entry of a record's history.
type Event struct {
	At    time.Time `json:"at"`
	State State     `json:"state"`
	Note  string    `json:"note,omitempty"`
}

// MaxHistory bounds Record.History so a process that retries for hours stays small.
const MaxHistory = 64

// Log appends an event to the record's history, dropping the oldest beyond MaxHistory.
func (r *Record) Log(at time.Time, note string) {
	r.History = append(r.History, Event{At: at, State: r.State, Note: note})
	if n := len(r.History); n > MaxHistory {
		r.History = append([]Event(nil), r.History[n-MaxHistory:]...)
	}
}

// Resolution is what a process's profile (or its scepProfile) gave its certificate request.
type Resolution struct {
	TemplateName string        `json:"templateName,omitempty"`
	Validity     time.Duration `json:"validity"`
	// Strict refuses a certificate whose names or extended key usages differ from the request.
	Strict bool `json:"strict,omitempty"`
}

// Clone returns a deep copy, so callers never share a record with a store.
func (r *Record) Clone() *Record {
	c := *r
	c.Process = r.Process.Clone()
	if r.Resolved != nil {
		res := *r.Resolved
		c.Resolved = &res
	}
	c.SignData = cloneBytes(r.SignData)
	c.Signature = cloneBytes(r.Signature)
	c.CSR = cloneBytes(r.CSR)
	if r.History != nil {
		c.History = append([]Event(nil), r.History...)
	}
	if r.Revocations != nil {
		c.Revocations = append([]Revocation(nil), r.Revocations...)
	}
	return &c
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// ErrNotFound is returned for a name with no record.
var ErrNotFound = errors.New("journal: no such record")

// ErrClosed is returned by every method of a closed store.
var ErrClosed = errors.New("journal: store is closed")

// ErrLeaseLost is returned by Update and Renew when the caller no longer holds the record's
// lease: it expired, it was released, or it was granted again (to anyone, the caller included)
// after the grant the caller has.
var ErrLeaseLost = errors.New("journal: lease lost")

// Store persists records.
//
// Implementations are safe for concurrent use, and for use by several processes where the
// backend is shared (PostgreSQL). Records passed in and returned are copies. A record is worked
// only under a lease: Lease grants it with a new token, Update and Renew extend it, Update
// releases it, and a lease that expires (its holder died or stalled) lets another owner lease
// the record again. A holder writes only while its lease is unexpired (lease until > now) and
// its token is the record's latest grant: a compare-and-set, so two holders never both write.
// Every time is the caller's clock, never the backend's.
//
// "Unfinished" below means not Done: a record in a final state whose audit event is pending is
// leased, scheduled and listed like any unfinished one, so that the event is written even if
// the adapter dies right after the final state was journaled.
type Store interface {
	// Create inserts rec unless a record with its name exists; created reports which. A new
	// record is not leased.
	Create(ctx context.Context, rec *Record) (created bool, err error)
	// Get returns the record named name, or ErrNotFound.
	Get(ctx context.Context, name string) (*Record, error)
	// Lease hands out up to limit unfinished records whose NextDue is not after now and that no
	// unexpired lease holds (whoever holds it, owner included), oldest NextDue first, and leases
	// them to owner until now+d, each under a new LeaseToken.
	Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*Record, error)
	// Update writes rec if owner holds its lease under rec.LeaseToken and the lease is unexpired
	// at now (else ErrLeaseLost, and nothing is written; ErrNotFound if absent). With renew > 0
	// the lease is extended to now+renew, with renew == 0 it is released.
	Update(ctx context.Context, owner string, rec *Record, now time.Time, renew time.Duration) error
	// Renew extends the lease on the record named name to now+d (d > 0) without writing the
	// record, under the same conditions as Update: owner holds it under token, unexpired at now
	// (else ErrLeaseLost; ErrNotFound if absent). It is the heartbeat of a long step.
	Renew(ctx context.Context, owner, name string, token int64, now time.Time, d time.Duration) error
	// NextDue returns the earliest NextDue among unfinished, unleased records (ok=false when none).
	NextDue(ctx context.Context) (t time.Time, ok bool, err error)
	// Unfinished lists every unfinished record, by name.
	Unfinished(ctx context.Context) ([]*Record, error)
	// Finished lists up to limit Done records, most recently finished first (FinishedAt
	// descending, then by name); only those in state when state is not empty. A limit below 1
	// lists nothing. It is `inspect`'s view of what the adapter completed.
	Finished(ctx context.Context, state State, limit int) ([]*Record, error)
	// IssuedTo lists every record, Done or not, that holds a certificate issued to identity
	// (Record.IssuedIdentity; a non-empty identity), by name. It is how renewal hygiene finds
	// the certificates a new one supersedes; records Compact deleted are not found.
	IssuedTo(ctx context.Context, identity string) ([]*Record, error)
	// Compact deletes Done records that reached a final state before the given time and returns
	// how many it deleted.
	Compact(ctx context.Context, finishedBefore time.Time) (int, error)
	Close() error
}

// Pinger is implemented by stores that can prove cheaply that they accept writes now, for the
// readiness check: the journal is written before every side effect, so a journal that cannot be
// written stops all work.
type Pinger interface {
	// Ping returns nil when a write would succeed now, without changing any record.
	Ping(ctx context.Context) error
}

// Counter is implemented by stores that count their records by state without reading them,
// for the journal metrics.
type Counter interface {
	// Count returns how many records are in each state; states without records may be absent.
	Count(ctx context.Context) (map[State]int, error)
}
