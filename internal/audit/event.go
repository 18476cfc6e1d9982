// Package audit is the adapter's audit trail: one JSON line per finished provisioning process
// and per Verified Access enrollment, in one schema for both, written to a sink of its own (a
// file or standard output) so that it can be shipped and kept apart from the operational log.
//
// An event names what was decided for whom and which certificate came of it; it never carries
// a secret (no key, signature, challenge, CSR or credential), only public certificate fields
// and the failure message the user was shown. docs/audit.md describes the schema and the
// delivery guarantee.
package audit

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/url"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// SchemaVersion is the version of Event's JSON form. It grows when a field changes meaning or
// goes away; new optional fields keep it.
const SchemaVersion = 1

// Kinds of events.
const (
	// KindProvisioning is a Certificate Provisioning process that reached its final state.
	KindProvisioning = "provisioning"
	// KindEnrollment is a Verified Access enrollment request, issued or refused.
	KindEnrollment = "enrollment"
	// KindRevocation is a certificate an operator revoked (`certprov-adapter revoke`), or one
	// the adapter revoked because a newer certificate superseded it (SupersededBy set).
	KindRevocation = "revocation"
)

// Scopes of a provisioning process; an enrollment's scope is its request's (machine or user).
const (
	ScopeDevice = "device"
	ScopeUser   = "user"
)

// Event is one audit line. Its JSON form is the stable schema (docs/audit.md).
type Event struct {
	SchemaVersion int `json:"schemaVersion"`
	// ID is the process name (customers/…/certificateProvisioningProcesses/…) or the enrollment
	// id. It is unique per event, and the key to deduplicate on: an event written again after
	// a crash is the same line, byte for byte.
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Time is when the process reached its final state, or the enrollment was decided (UTC).
	Time       time.Time `json:"time"`
	InstanceID string    `json:"instanceId"`

	Customer     string `json:"customer,omitempty"`
	Scope        string `json:"scope,omitempty"`
	Profile      string `json:"profile,omitempty"`
	CAConnection string `json:"caConnection,omitempty"`

	// Outcome is "issued" or how it failed: for a process the engine's outcome (failed,
	// failed_by_google, failure_unreported, issued_before), for an enrollment its error code.
	Outcome string `json:"outcome"`
	// Failure is the message the user or the client was given.
	Failure     string   `json:"failure,omitempty"`
	FailedRules []string `json:"failedRules,omitempty"`
	// Reason is a revocation's RFC 5280 reason (keyCompromise, superseded, …).
	Reason string `json:"reason,omitempty"`
	// Process is, for a revocation by renewal hygiene, the process whose certificate was
	// revoked; SupersededBy the process whose newer certificate superseded it.
	Process      string `json:"process,omitempty"`
	SupersededBy string `json:"supersededBy,omitempty"`

	// SPKISHA256 is the hex SHA-256 of the DER SubjectPublicKeyInfo of the key the request was
	// for: the device's (the certificate carries exactly that key).
	SPKISHA256  string       `json:"spkiSha256,omitempty"`
	Certificate *Certificate `json:"certificate,omitempty"`

	// DurationMS is from the claim (or the request) to the decision, in milliseconds.
	DurationMS int64 `json:"durationMs"`
}

// Certificate is what an event (and `inspect`) says about an issued certificate.
type Certificate struct {
	// Serial is the serial number in lower-case hex, as the CA connectors log it.
	Serial    string    `json:"serial"`
	Issuer    string    `json:"issuer"`
	Subject   string    `json:"subject"`
	SANs      *SANs     `json:"sans,omitempty"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// SPKISHA256 is the hex SHA-256 of the certificate's SubjectPublicKeyInfo.
	SPKISHA256 string `json:"spkiSha256"`
}

// SANs are a certificate's subject alternative names by type.
type SANs struct {
	DNS   []string `json:"dns,omitempty"`
	Email []string `json:"email,omitempty"`
	URI   []string `json:"uri,omitempty"`
	IP    []string `json:"ip,omitempty"`
}

// CertificateOf describes c.
func CertificateOf(c *x509.Certificate) *Certificate {
	out := &Certificate{
		Serial: c.SerialNumber.Text(16), Issuer: c.Issuer.String(), Subject: c.Subject.String(),
		NotBefore: c.NotBefore.UTC(), NotAfter: c.NotAfter.UTC(), SPKISHA256: SPKISHA256(c.RawSubjectPublicKeyInfo),
	}
	sans := &SANs{DNS: c.DNSNames, Email: c.EmailAddresses, URI: urls(c.URIs), IP: ips(c.IPAddresses)}
	if len(sans.DNS)+len(sans.Email)+len(sans.URI)+len(sans.IP) > 0 {
		out.SANs = sans
	}
	return out
}

func urls(us []*url.URL) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.String())
	}
	return out
}

func ips(as []net.IP) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// SPKISHA256 is the hex SHA-256 of a DER SubjectPublicKeyInfo; "" for none.
func SPKISHA256(spki []byte) string {
	if len(spki) == 0 {
		return ""
	}
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])
}

// Revocation is the event of a revocation through caConnection at t: outcome "revoked", or
// "failed" with the error. cert is nil when only the serial (lower-case hex) was known. Its id
// is revocation/<caConnection>/<serial>/<time>: each attempt is an event of its own.
func Revocation(t time.Time, instanceID, caConnection, serial string, cert *x509.Certificate, reason string, err error) *Event {
	t = t.UTC()
	ev := &Event{
		SchemaVersion: SchemaVersion, ID: "revocation/" + caConnection + "/" + serial + "/" + t.Format(time.RFC3339Nano),
		Kind: KindRevocation, Time: t, InstanceID: instanceID, CAConnection: caConnection, Outcome: "revoked", Reason: reason,
	}
	if err != nil {
		ev.Outcome, ev.Failure = "failed", err.Error()
	}
	if cert != nil {
		ev.Certificate = CertificateOf(cert)
		ev.SPKISHA256 = ev.Certificate.SPKISHA256
	}
	return ev
}

// Superseded is the event of v, a revocation that rec's certificate made due and that reached
// its final state (revoked or failed), written by instanceID. Its id is
// revocation/<caConnection>/<serial>/superseded-by/<rec.Name>, and it depends on rec and v alone,
// so that the event written after a crash is the one that would have been written before it.
func Superseded(rec *journal.Record, v *journal.Revocation, instanceID string) *Event {
	ev := &Event{
		SchemaVersion: SchemaVersion, ID: "revocation/" + v.CAName + "/" + v.Serial + "/superseded-by/" + rec.Name,
		Kind: KindRevocation, Time: v.At.UTC(), InstanceID: instanceID, CAConnection: v.CAName,
		Outcome: string(v.State), Reason: v.Reason, Profile: rec.ProfileName,
		Process: v.Process, SupersededBy: rec.Name,
	}
	if v.State != journal.RevocationRevoked {
		ev.Failure = v.LastError
	}
	if p := rec.Process; p != nil {
		ev.Customer, ev.Scope = p.Customer, ScopeDevice
		if p.UserScoped() {
			ev.Scope = ScopeUser
		}
	}
	if certs, err := pemutil.ParseCertificates([]byte(v.CertificatePEM)); err == nil && len(certs) > 0 {
		ev.Certificate = CertificateOf(certs[0])
		ev.SPKISHA256 = ev.Certificate.SPKISHA256
	}
	return ev
}

// Provisioning is the event of rec, a record in a final state, written by instanceID. It
// depends on rec alone, so that the event written after a crash is the one that would have
// been written before it.
func Provisioning(rec *journal.Record, instanceID string) *Event {
	ev := &Event{
		SchemaVersion: SchemaVersion, ID: rec.Name, Kind: KindProvisioning, Time: rec.FinishedAt.UTC(),
		InstanceID: instanceID, Outcome: rec.Outcome,
		DurationMS: max(rec.FinishedAt.Sub(rec.Created).Milliseconds(), 0),
	}
	if ev.Outcome == "" {
		ev.Outcome = string(rec.State)
	}
	if rec.State == journal.StateFailed {
		// What the user was told; when Google failed the process itself, why.
		ev.Failure = rec.FailureMessage
		if ev.Failure == "" {
			ev.Failure = rec.LastError
		}
	}
	if p := rec.Process; p != nil {
		// The references Google sent: they name the profile and connection even when this
		// adapter has none by that name (which is why such a process failed).
		ev.Customer, ev.Profile, ev.CAConnection = p.Customer, p.ProfileRef, p.CAConnectionRef
		ev.Scope = ScopeDevice
		if p.UserScoped() {
			ev.Scope = ScopeUser
		}
		ev.SPKISHA256 = SPKISHA256(p.SPKI)
	}
	// A certificate the CA issued is reported whatever became of it: one Google refused is
	// still a certificate that exists.
	if rec.CertificatePEM != "" {
		if certs, err := pemutil.ParseCertificates([]byte(rec.CertificatePEM)); err == nil && len(certs) > 0 {
			ev.Certificate = CertificateOf(certs[0])
			ev.SPKISHA256 = ev.Certificate.SPKISHA256
		}
	}
	return ev
}
