package emulator

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Snapshot is a copy of one process's state as the emulator sees it, for assertions.
type Snapshot struct {
	Name, Customer string
	State          string // StatePending, StateClaimed, StateSigning, StateSigned, StateIssued, StateFailed
	Scope, KeyType string // as in ProcessSpec, normalized
	ClaimedBy      string

	// Calls counts REST calls by method (MethodGet, MethodClaim, MethodSignData,
	// MethodOperationsGet, MethodUploadCertificate, MethodSetFailure), including calls that
	// failed or were answered by injected faults.
	Calls map[string]int
	// Injected counts, by method, the calls in Calls that an injected fault answered (Inject,
	// FailNext, LoseNextResponses): Calls[m] - Injected[m] is how many were answered truthfully.
	Injected map[string]int
	// SignDataCount counts the proof-of-possession requests that reached the device (valid
	// signData calls on a claimed, unfinished process); anything above 1 failed the process.
	SignDataCount int

	CertificatePEM string // the uploaded certificate, exactly as uploaded
	FailureMessage string

	PublicKey crypto.PublicKey // the device's public key
	SPKI      []byte           // DER SubjectPublicKeyInfo of PublicKey

	Created    time.Time // the process's startTime
	NotifiedAt time.Time // when its first notification was published; zero before (NoPublish)
	FinishedAt time.Time // when the certificate was uploaded or the process failed; zero before
}

// Finished reports whether the process ended (issued or failed).
func (s Snapshot) Finished() bool { return s.State == StateIssued || s.State == StateFailed }

// ID is the process id, the last segment of Name.
func (s Snapshot) ID() string {
	if i := strings.LastIndexByte(s.Name, '/'); i >= 0 {
		return s.Name[i+1:]
	}
	return s.Name
}

type snapshotJSON struct {
	Name           string         `json:"name"`
	Customer       string         `json:"customer"`
	State          string         `json:"state"`
	Scope          string         `json:"scope"`
	KeyType        string         `json:"keyType"`
	ClaimedBy      string         `json:"claimedBy,omitempty"`
	Calls          map[string]int `json:"calls"`
	Injected       map[string]int `json:"injected,omitempty"`
	SignDataCount  int            `json:"signDataCount"`
	CertificatePEM string         `json:"certificatePem,omitempty"`
	FailureMessage string         `json:"failureMessage,omitempty"`
	SPKI           []byte         `json:"spki"`
	Created        time.Time      `json:"created"`
	NotifiedAt     *time.Time     `json:"notifiedAt,omitempty"`
	FinishedAt     *time.Time     `json:"finishedAt,omitempty"`
}

// MarshalJSON encodes the snapshot for the control API: camelCase keys, spki in base64, the
// public key omitted (it is the spki).
func (s Snapshot) MarshalJSON() ([]byte, error) {
	w := snapshotJSON{
		Name: s.Name, Customer: s.Customer, State: s.State, Scope: s.Scope, KeyType: s.KeyType,
		ClaimedBy: s.ClaimedBy, Calls: s.Calls, Injected: s.Injected, SignDataCount: s.SignDataCount,
		CertificatePEM: s.CertificatePEM, FailureMessage: s.FailureMessage, SPKI: s.SPKI, Created: s.Created,
	}
	if !s.NotifiedAt.IsZero() {
		t := s.NotifiedAt
		w.NotifiedAt = &t
	}
	if !s.FinishedAt.IsZero() {
		t := s.FinishedAt
		w.FinishedAt = &t
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the control API form and restores PublicKey from the spki.
func (s *Snapshot) UnmarshalJSON(data []byte) error {
	var w snapshotJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	out := Snapshot{
		Name: w.Name, Customer: w.Customer, State: w.State, Scope: w.Scope, KeyType: w.KeyType,
		ClaimedBy: w.ClaimedBy, Calls: w.Calls, Injected: w.Injected, SignDataCount: w.SignDataCount,
		CertificatePEM: w.CertificatePEM, FailureMessage: w.FailureMessage, SPKI: w.SPKI, Created: w.Created,
	}
	if w.NotifiedAt != nil {
		out.NotifiedAt = *w.NotifiedAt
	}
	if w.FinishedAt != nil {
		out.FinishedAt = *w.FinishedAt
	}
	if len(w.SPKI) > 0 {
		pub, err := x509.ParsePKIXPublicKey(w.SPKI)
		if err != nil {
			return fmt.Errorf("snapshot %s: spki: %w", w.Name, err)
		}
		out.PublicKey = pub
	}
	*s = out
	return nil
}

// VerifyIssued checks an issued snapshot the way the device would, and more: the uploaded PEM
// holds exactly one CERTIFICATE, the certificate chains to roots (through intermediates, which may
// be nil) for any extended key usage, its SubjectPublicKeyInfo equals the device's byte for byte,
// and it is valid now. It returns the parsed certificate, or an error saying which check failed.
// roots must not be nil (the system pool is never used).
func VerifyIssued(s Snapshot, roots *x509.CertPool, intermediates *x509.CertPool) (*x509.Certificate, error) {
	if s.State != StateIssued {
		if s.FailureMessage != "" {
			return nil, fmt.Errorf("verify %s: state %s (%s), want %s", s.Name, s.State, s.FailureMessage, StateIssued)
		}
		return nil, fmt.Errorf("verify %s: state %s, want %s", s.Name, s.State, StateIssued)
	}
	if roots == nil {
		return nil, fmt.Errorf("verify %s: no root certificates given", s.Name)
	}
	cert, err := parseSingleCertificatePEM(s.CertificatePEM)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s.Name, err)
	}
	if len(s.SPKI) == 0 {
		return nil, fmt.Errorf("verify %s: snapshot has no device spki", s.Name)
	}
	if !bytes.Equal(cert.RawSubjectPublicKeyInfo, s.SPKI) {
		return nil, fmt.Errorf("verify %s: certificate public key differs from the device key", s.Name)
	}
	now := time.Now()
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("verify %s: certificate not valid before %s", s.Name, cert.NotBefore.Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("verify %s: certificate expired at %s", s.Name, cert.NotAfter.Format(time.RFC3339))
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("verify %s: chain: %w", s.Name, err)
	}
	return cert, nil
}

// CertPoolFromPEM splits a PEM bundle (for example a CA certificate file) into roots
// (self-signed certificates) and intermediates (the others). If the bundle has no self-signed
// certificate, every certificate is a root (trust anchored at an intermediate).
func CertPoolFromPEM(data []byte) (roots, intermediates *x509.CertPool, err error) {
	certs, err := pemutil.ParseCertificates(data)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificates: %w", err)
	}
	roots, intermediates = x509.NewCertPool(), x509.NewCertPool()
	selfSigned := 0
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			roots.AddCert(c)
			selfSigned++
		} else {
			intermediates.AddCert(c)
		}
	}
	if selfSigned == 0 {
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	return roots, intermediates, nil
}
