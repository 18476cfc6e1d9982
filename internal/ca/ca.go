// Package ca defines the contract between the provisioning engine and certificate authorities.
//
// A Connector receives a CSR that the device already signed (the adapter never holds the private
// key) and returns a leaf certificate for exactly that key, or an error classified as permanent,
// retryable or pending. Each CA lives in its own package and registers a factory under a type name;
// optional behaviours are small extra interfaces discovered by type assertion.
package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net/url"
	"time"

	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Request is what the engine asks a CA to sign.
type Request struct {
	// Key identifies the request across retries and restarts (the process name). Connectors whose
	// CA supports idempotency keys should pass it on, so that a repeated call never issues twice.
	Key string

	CSR    *x509.CertificateRequest // parsed and signature-verified by the engine
	CSRDER []byte

	Process *process.Process // metadata only: serial, directory ids, e-mail, customer

	// From the adapter profile (or the scepProfile of the process).
	ProfileName  string
	TemplateName string        // CA-side template, e.g. an AD CS certificate template
	Validity     time.Duration // requested lifetime; a CA may shorten it

	// Ticket is set when the engine resumes a request that a previous call left pending; it is
	// the value the connector returned in PendingError.Ticket.
	Ticket string
}

// CheckedCSR is the request's CSR — CSR, or CSRDER parsed when CSR is nil — with its signature
// checked: the engine verified it already, but a connector checks proof of possession itself
// before it asks its CA, so that a refusal names the CSR rather than coming back from the CA. The
// error is Permanent and says what is wrong ("no CSR", "parse CSR: …", "CSR signature: …");
// callers wrap it with what they were doing.
func (r *Request) CheckedCSR() (*x509.CertificateRequest, error) {
	csr := r.CSR
	if csr == nil {
		if len(r.CSRDER) == 0 {
			return nil, Permanentf("request has no CSR")
		}
		var err error
		if csr, err = x509.ParseCertificateRequest(r.CSRDER); err != nil {
			return nil, Permanentf("parse CSR: %w", err)
		}
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, Permanentf("CSR signature: %w", err)
	}
	return csr, nil
}

// Issued is a certificate issued for a Request.
type Issued struct {
	Leaf  *x509.Certificate
	Chain []*x509.Certificate // intermediates up to (not necessarily including) the root

	// Roots are the trust anchors of the CA connection that issued Leaf, when it knows them:
	// certificates from its configuration or pinned by it (the built-in CA's certificate, the
	// step-ca root matching rootFingerprint, an EST or webhook caCertsFile), or CA certificates it
	// fetched over the channel it trusts for that purpose (SCEP GetCACert, checked against
	// caCertFingerprint when set; EST /cacerts over the authenticated TLS connection). They must
	// never come from the issuance answer itself, which would then vouch for itself. A connector
	// sets Roots on every Issued it returns (Issue, Recover, IssueForKey), from what it already
	// holds, so that checking needs no further call to the CA once the certificate exists. nil
	// means the connection knows no roots: the chain is then not verified (package leafcheck).
	Roots *x509.CertPool
}

// MaxClockSkew is how far in the future a fresh certificate's notBefore may lie and still be
// accepted: a CA's clock may run a little ahead of the adapter's.
const MaxClockSkew = 5 * time.Minute

// Connector issues certificates from one configured CA connection.
//
// Issue must honour ctx cancellation and deadlines, must be safe for concurrent use, and must
// classify every error it returns with Permanent, Retryable or a *PendingError (an unclassified
// error is treated as retryable). An error promises that no certificate was issued for this
// call: a connector that cannot tell (a timeout after the request was sent) should resolve the
// doubt itself, or implement Recoverer. An error returned once ctx's deadline passed carries no
// such promise: the engine then asks Recover, or fails the request, and never calls Issue again. It must never return a certificate whose public key differs
// from the CSR's; the engine checks that anyway and treats it as a permanent failure.
type Connector interface {
	Issue(ctx context.Context, req *Request) (*Issued, error)
}

// Recoverer is implemented by connectors whose CA can say what it already issued for a request
// key. The engine uses it after a restart that interrupted an Issue call, so that the request is
// completed without a second certificate.
type Recoverer interface {
	// Recover returns the certificate issued for key, or (nil, nil) when the CA issued none.
	Recover(ctx context.Context, key string) (*Issued, error)
}

// Pinger is implemented by connectors that can check their CA is reachable and correctly
// configured without issuing anything (used by health checks and `validate --check-connections`).
type Pinger interface {
	Ping(ctx context.Context) error
}

// AttributeContributor is implemented by connectors that need PKCS#10 attributes inside the
// CertificationRequestInfo, such as a SCEP challenge password. They must be there before the
// device signs, so the engine asks once per process, before signData, and journals the result
// with the request.
type AttributeContributor interface {
	CSRAttributes(ctx context.Context, req *Request) ([]csr.Attribute, error)
}

// KeyRequest asks a CA for a certificate for a public key when there is no PKCS#10 request to
// forward. It is used where proof of possession came from elsewhere: in Verified Access
// enrollment, Google checked that the device key signed the SPKAC (and the adapter verified that
// signature itself), so the adapter holds a verified public key but no CSR signed by it, and
// cannot make one because it never holds the private key.
type KeyRequest struct {
	// Key identifies the request in logs and ledgers (for Verified Access: the profile and a hash
	// of the SPKAC, which is single-use).
	Key string

	// PublicKey is the key to certify: *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
	// A connector must certify exactly this key and no other.
	PublicKey crypto.PublicKey

	Subject            pkix.Name
	DNSNames           []string
	EmailAddresses     []string
	URIs               []*url.URL
	KeyUsage           x509.KeyUsage
	ExtKeyUsage        []x509.ExtKeyUsage
	UnknownExtKeyUsage []asn1.ObjectIdentifier // extended key usages crypto/x509 has no constant for

	Validity     time.Duration // requested lifetime; a CA may shorten it
	ProfileName  string
	TemplateName string // CA-side template, e.g. an AD CS certificate template
}

// PublicKeyIssuer is implemented by connectors that can issue for a bare public key, without a
// CSR signed by that key. CAs that insist on a CSR signed by the subject key (SCEP, EST and most
// enrollment protocols) cannot implement it, and so cannot serve Verified Access profiles; the
// adapter checks that at validation.
//
// IssueForKey has Issue's contract: it honours ctx, is safe for concurrent use, classifies its
// errors, promises that an error means nothing was issued, and never returns a certificate for a
// key other than req.PublicKey.
type PublicKeyIssuer interface {
	IssueForKey(ctx context.Context, req *KeyRequest) (*Issued, error)
}

// CertificateHolder is implemented by connectors that hold certificates an operator must renew
// in time: the CA certificate, the roots leaves are checked against, a TLS client certificate.
// Certificates returns what the connector holds now, without contacting the CA; the metrics
// call it on every scrape, so it must be cheap and safe for concurrent use.
type CertificateHolder interface {
	Certificates() []HeldCertificate
}

// HeldCertificate is a certificate the adapter relies on, and what for.
type HeldCertificate struct {
	Role string // one of the Role constants
	Cert *x509.Certificate
}

// Roles of a HeldCertificate.
const (
	RoleIssuer       = "issuer"       // the CA certificate that signs the leaves
	RoleIntermediate = "intermediate" // a CA certificate between the issuer and a root
	RoleRoot         = "root"         // a trust anchor leaves are checked against
	RoleClient       = "client"       // a TLS client certificate the connector authenticates with
	RoleSigner       = "signer"       // a certificate that signs protocol messages (the SCEP signer)
	RoleRecipient    = "recipient"    // a certificate requests are encrypted to (a SCEP RA)
	RoleServer       = "server"       // a TLS server certificate the adapter serves with
)
