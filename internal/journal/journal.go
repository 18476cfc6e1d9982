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

// Record is one claimed process.
type Record struct {
	Name    string
	Process *process.Process // as read from Google at claim time

	State State

	ProfileName string // the adapter profile used ("" for scepProfile processes)
	CAName      string // the adapter CA connection used

	SignData  []byte // the DER CertificationRequestInfo sent for signing
	Algorithm string
	Operation string // signData operation name; empty when the response was lost
	Signature []byte
	CSR       []byte // assembled and verified
	CATicket  string // connector handle while the CA reports pending

	CertificatePEM string // the leaf, stored before upload
	FailureMessage string // what the user will see, stored before setFailure

	Attempts     int       // failed attempts of the current step
	StepStarted  time.Time // when the current step began; bounds its retries
	NextDue      time.Time
	SignDeadline time.Time
	LastError    string

	Created, Updated time.Time
}

// Clone returns a deep copy, so callers never share a record with a store.
func (r *Record) Clone() *Record {
	c := *r
	if r.Process != nil {
		p := *r.Process
		c.Process = &p
	}
	c.SignData = append([]byte(nil), r.SignData...)
	c.Signature = append([]byte(nil), r.Signature...)
	c.CSR = append([]byte(nil), r.CSR...)
	return &c
}

// ErrNotFound is returned for a name with no record.
var ErrNotFound = errors.New("journal: no such record")

// ErrLeaseLost is returned by Update when the caller no longer holds the record's lease.
var ErrLeaseLost = errors.New("journal: lease lost")

// Store persists records.
//
// Implementations are safe for concurrent use. Records passed in and returned are copies.
type Store interface {
	// Create inserts rec unless a record with its name exists; created reports which.
	Create(ctx context.Context, rec *Record) (created bool, err error)
	// Get returns the record named name, or ErrNotFound.
	Get(ctx context.Context, name string) (*Record, error)
	// Lease hands out up to limit unfinished records due at now that no live lease holds, and
	// leases them to owner for the duration d.
	Lease(ctx context.Context, owner string, now time.Time, d time.Duration, limit int) ([]*Record, error)
	// Update writes rec, which owner must hold leased; release ends the lease.
	Update(ctx context.Context, owner string, rec *Record, release bool) error
	// NextDue returns the earliest NextDue among unfinished records (ok=false when none).
	NextDue(ctx context.Context) (t time.Time, ok bool, err error)
	// Unfinished lists every record not in a final state, for operators and tests.
	Unfinished(ctx context.Context) ([]*Record, error)
	Close() error
}
