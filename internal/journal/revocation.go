package journal

import (
	"net/url"
	"strings"
	"time"
)

// Renewal hygiene (docs/renewal.md): when a process of a profile that revokes superseded
// certificates is issued, the certificates issued before it to the same identity are revoked
// once a grace period has passed. The decision and every revocation's progress live in the
// superseding process's record, so that they are leased, fenced, retried after a crash and kept
// from compaction exactly as the record's own steps are: no second lease model.

// RevocationState is where one revocation stands.
type RevocationState string

const (
	// RevocationPending: decided and journaled; the CA is asked once Revocation.NextDue passed.
	RevocationPending RevocationState = "pending"
	// RevocationRevoked is final: the CA confirmed the revocation (an idempotent repeat included).
	RevocationRevoked RevocationState = "revoked"
	// RevocationFailed is final: the CA refused it, cannot revoke, or the certificate expired
	// while the CA was unreachable. Nothing is tried again.
	RevocationFailed RevocationState = "failed"
)

// Revocation is one certificate a record's certificate superseded. It carries what revoking it
// needs, copied when it was decided, so that it does not depend on the superseded record, which
// retention may delete meanwhile.
type Revocation struct {
	// Process is the name of the record whose certificate this is.
	Process        string `json:"process"`
	CAName         string `json:"caName"`         // the CA connection that issued it
	Serial         string `json:"serial"`         // hexadecimal, as inspect and the audit trail print it
	CertificatePEM string `json:"certificatePem"` // the leaf
	Reason         string `json:"reason"`         // RFC 5280 name (ca.Reason.String)
	// Due is when the grace period ends: the superseding certificate's issuance plus the
	// profile's grace period.
	Due time.Time `json:"due"`
	// NextDue is when the CA is asked next: Due, later after a retryable error.
	NextDue   time.Time       `json:"nextDue"`
	State     RevocationState `json:"state"`
	Attempts  int             `json:"attempts,omitempty"`
	LastError string          `json:"lastError,omitempty"`
	At        time.Time       `json:"at,omitzero"` // when it reached its final state
	// AuditPending is set with the final state when the audit event is still to be written.
	AuditPending bool `json:"auditPending,omitempty"`
}

// Open reports whether something is still due for v: the CA call or its audit event.
func (v *Revocation) Open() bool { return v.State == RevocationPending || v.AuditPending }

// Identity names whom a record's certificate is for: the customer, the adapter profile, the
// scope and the Directory API id of the device (deviceDirectoryApiId) or, for a user-scoped
// process, of the user (userDirectoryApiId). Two records of one identity hold certificates that
// replace each other. It is "" when the record names no adapter profile (a scepProfile process)
// or no directory id: such a record supersedes nothing and is superseded by nothing.
func (r *Record) Identity() string {
	p := r.Process
	if p == nil || r.ProfileName == "" {
		return ""
	}
	scope, id := "device", ""
	if p.UserScoped() {
		scope, id = "user", p.User.DirectoryID
	} else if p.Device != nil {
		id = p.Device.DirectoryID
	}
	if id == "" || p.Customer == "" {
		return ""
	}
	// Each part escaped, so that "/" inside one cannot make two identities one; readable, and
	// a PostgreSQL text value (which cannot hold NUL).
	parts := []string{p.Customer, r.ProfileName, scope, id}
	for i := range parts {
		parts[i] = url.PathEscape(parts[i])
	}
	return strings.Join(parts, "/")
}

// IssuedIdentity is the identity under which stores index r for IssuedTo: Identity for a record
// that holds a certificate, "" otherwise.
func (r *Record) IssuedIdentity() string {
	if r.CertificatePEM == "" {
		return ""
	}
	return r.Identity()
}

// RevocationsOpen reports whether any of r's revocations is still due.
func (r *Record) RevocationsOpen() bool {
	for i := range r.Revocations {
		if r.Revocations[i].Open() {
			return true
		}
	}
	return false
}

// NextRevocation is the earliest NextDue among r's pending revocations and those whose audit
// event is pending (due at once); ok is false when none is open.
func (r *Record) NextRevocation() (at time.Time, ok bool) {
	for i := range r.Revocations {
		v := &r.Revocations[i]
		if !v.Open() {
			continue
		}
		t := v.NextDue
		if v.State != RevocationPending {
			t = v.At
		}
		if !ok || t.Before(at) {
			at, ok = t, true
		}
	}
	return at, ok
}

// Supersedes reports whether r decided to revoke the certificate of the record named name.
func (r *Record) Supersedes(name string) bool {
	for i := range r.Revocations {
		if r.Revocations[i].Process == name {
			return true
		}
	}
	return false
}

// PendingRevocations counts the revocations among recs still to be asked of a CA.
func PendingRevocations(recs []*Record) int {
	n := 0
	for _, r := range recs {
		for i := range r.Revocations {
			if r.Revocations[i].State == RevocationPending {
				n++
			}
		}
	}
	return n
}
