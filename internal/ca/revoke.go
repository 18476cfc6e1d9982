package ca

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
)

// Reason is an RFC 5280 CRLReason (section 5.3.1), the value a CA records with a revocation.
type Reason int

// The reasons an operator or the adapter may give. 7 is unused in RFC 5280; removeFromCRL (8) is
// not a reason one revokes with, so it is not offered.
const (
	ReasonUnspecified          Reason = 0
	ReasonKeyCompromise        Reason = 1
	ReasonCACompromise         Reason = 2
	ReasonAffiliationChanged   Reason = 3
	ReasonSuperseded           Reason = 4
	ReasonCessationOfOperation Reason = 5
	ReasonCertificateHold      Reason = 6
	ReasonPrivilegeWithdrawn   Reason = 9
	ReasonAACompromise         Reason = 10
)

var reasonNames = map[Reason]string{
	ReasonUnspecified:          "unspecified",
	ReasonKeyCompromise:        "keyCompromise",
	ReasonCACompromise:         "cACompromise",
	ReasonAffiliationChanged:   "affiliationChanged",
	ReasonSuperseded:           "superseded",
	ReasonCessationOfOperation: "cessationOfOperation",
	ReasonCertificateHold:      "certificateHold",
	ReasonPrivilegeWithdrawn:   "privilegeWithdrawn",
	ReasonAACompromise:         "aACompromise",
}

// String is the RFC 5280 ASN.1 name of the reason ("keyCompromise").
func (r Reason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// ParseReason reads a reason by its RFC 5280 name, case-insensitively and ignoring '-' and '_'
// ("key-compromise", "KEY_COMPROMISE" and "keyCompromise" are one reason).
func ParseReason(s string) (Reason, error) {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("-", "", "_", "", " ", "").Replace(s))
	}
	want := norm(s)
	for r, n := range reasonNames {
		if norm(n) == want {
			return r, nil
		}
	}
	names := make([]string, 0, len(reasonNames))
	for _, r := range slices.Sorted(maps.Keys(reasonNames)) {
		names = append(names, reasonNames[r])
	}
	return 0, fmt.Errorf("unknown revocation reason %q (one of %s)", s, strings.Join(names, ", "))
}

// RevokeRequest names a certificate this connection issued and why it is revoked.
type RevokeRequest struct {
	// Serial is the certificate's serial number; always set.
	Serial *big.Int
	// Certificate is the certificate itself when the caller has it (the journal and the audit
	// trail keep it). Connectors whose CA revokes by something else than the serial (a resource
	// name, the issuer and serial pair) derive it from here; nil when only the serial is known.
	Certificate *x509.Certificate
	// Key is the request key the certificate was issued for (the process name, or a Verified
	// Access enrollment key) when known, for CAs that index issuances by it.
	Key    string
	Reason Reason
}

// Revoker is implemented by connectors whose CA can revoke what it issued.
//
// Revoke must be idempotent: revoking a certificate that is already revoked returns nil (the
// caller may retry after a lost answer). A certificate the CA does not know, or one it did not
// issue through this connection, is a Permanent error. Errors are classified like Issue's
// (Permanent, Retryable); Revoke never returns a *PendingError: a CA that queues revocations for
// approval reports success once the request is accepted.
type Revoker interface {
	Revoke(ctx context.Context, req *RevokeRequest) error
}

// RevokeChecker is implemented by Revokers whose settings can leave them unable to revoke (the
// built-in CA without a CRL to publish): CanRevoke says why not, so that validation can refuse
// a configuration that relies on revoking through them, instead of every revocation failing.
type RevokeChecker interface {
	// CanRevoke returns nil when Revoke can succeed with these settings.
	CanRevoke() error
}
