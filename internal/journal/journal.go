// Package journal records every process the adapter claimed, so that its work survives restarts:
// the request sent for signing, the operation to poll, the certificate before it is uploaded.
//
// The engine is the only writer. A Store hands records to workers through leases, so that a
// shared store can spread processes over replicas and a record is worked by one worker at a time.
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

// Final reports whether no more work is due in state s.
func (s State) Final() bool { return s == StateUploaded || s == StateFailed }

// NextStep says in words what the adapter will do next for a record in state s.
func (s State) NextStep() string {
	switch s {
	case StateClaimed:
		return "ask the device to sign"
	case StateSignRequested:
		return "wait for the device signature"
	case StateSigned:
		return "ask the CA"
	case StateCAPending:
		return "ask the CA again (pending)"
	case StateIssued:
		return "upload the certificate"
	case StateFailing:
		return "report the failure"
	case StateUploaded, StateFailed:
		return "none (finished)"
	}
	return "unknown"
}

// Record is one claimed process. It is stored as JSON; the tags are the stable format.
type Record struct {
	Name    string           `json:"name"`
	Process *process.Process `json:"process"` // as read from Google at claim time

	State State `json:"state"`

	ProfileName string `json:"profileName,omitempty"` // the adapter profile ("" for scepProfile processes)
	CAName      string `json:"caName,omitempty"`      // the adapter CA connection

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
	FailureMessage string `json:"failureMessage,omitempty"` // what the user will see, stored before setFailure

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

// Clone returns a deep copy, so callers never share a record with a store.
func (r *Record) Clone() *Record {
	c := *r
	c.Process = r.Process.Clone()
	c.SignData = cloneBytes(r.SignData)
	c.Signature = cloneBytes(r.Signature)
	c.CSR = cloneBytes(r.CSR)
	if r.History != nil {
		c.History = append([]Event(nil), r.History...)
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

// ErrLeaseLost is returned by Update when the caller no longer holds the record's lease.
var ErrLeaseLost = errors.New("journal: lease lost")

// Store persists records.
//
// Implementations are safe for concurrent use, and for use by several processes where the
// backend is shared (PostgreSQL). Records passed in and returned are copies. A record is worked
// only under a lease: Lease grants it, Update renews or releases it, and a lease that expires
// (its holder died) lets another owner lease the record again.
type Store interface {
	// Create inserts rec unless a record with its name exists; created reports which. A new
	// record is not leased.
	Create(ctx context.Context, rec *Record) (created bool, err error)
	// Get returns the record named name, or ErrNotFound.
	Get(ctx context.Context, name string) (*Record, error)
	// Lease hands out up to limit unfinished records whose NextDue is not after now and that no
	// unexpired lease holds, oldest NextDue first, and leases them to owner until now+d.
	Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*Record, error)
	// Update writes rec, which owner must hold leased (else ErrLeaseLost; ErrNotFound if absent).
	// With renew > 0 the lease is extended to now+renew, with renew == 0 it is released.
	Update(ctx context.Context, owner string, rec *Record, now time.Time, renew time.Duration) error
	// NextDue returns the earliest NextDue among unfinished, unleased records (ok=false when none).
	NextDue(ctx context.Context) (t time.Time, ok bool, err error)
	// Unfinished lists every record not in a final state, by name.
	Unfinished(ctx context.Context) ([]*Record, error)
	// Compact deletes records that reached a final state before the given time and returns how
	// many it deleted.
	Compact(ctx context.Context, finishedBefore time.Time) (int, error)
	Close() error
}
