package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"

	"github.com/certprov/certprov-adapter/internal/process"
)

// The wire contract, version 1. docs/ca-webhook.md is its description for server authors; a
// change here that an existing server could notice needs a new APIVersion.
const (
	// APIVersion is sent in every request body; servers refuse versions they do not speak.
	APIVersion = "certprov.webhook/v1"
	// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>"
	// when hmacSecretFile is set.
	SignatureHeader = "X-Certprov-Signature"
	// RequestIDHeader repeats the body's requestId, for proxies and access logs.
	RequestIDHeader = "X-Certprov-Request-Id"
)

// Response statuses.
const (
	StatusIssued   = "issued"
	StatusPending  = "pending"
	StatusError    = "error"
	StatusNotFound = "notFound" // lookup and revoke
	StatusOK       = "ok"       // ping only
	StatusRevoked  = "revoked"  // revoke only
)

// Limits on what a server may send back.
const (
	maxResponseBytes = 1 << 20
	maxTicketBytes   = 4096
	maxMessageBytes  = 300
	// maxRetryAfter keeps a server's hint from overflowing a Duration; the engine caps it anyway.
	maxRetryAfter = 24 * time.Hour
)

// issueRequest asks for a certificate. Every field is always present except ticket, so that a
// server can decode it strictly.
type issueRequest struct {
	APIVersion      string      `json:"apiVersion"`
	RequestID       string      `json:"requestId"`
	CSR             string      `json:"csr"`
	Profile         string      `json:"profile"`
	TemplateName    string      `json:"templateName"`
	ValiditySeconds int64       `json:"validitySeconds"`
	Ticket          string      `json:"ticket,omitempty"`
	Process         wireProcess `json:"process"`
}

// lookupRequest asks what was already issued for a requestId (ca.Recoverer).
type lookupRequest struct {
	APIVersion string `json:"apiVersion"`
	RequestID  string `json:"requestId"`
	Lookup     bool   `json:"lookup"`
}

// revokeRequest asks the server to revoke a certificate it issued (ca.Revoker). Every field is
// always present; requestId and certificate are "" when the caller knows only the serial.
type revokeRequest struct {
	APIVersion   string `json:"apiVersion"`
	Revoke       bool   `json:"revoke"`
	SerialNumber string `json:"serialNumber"` // lower-case hex, no leading zeros
	RequestID    string `json:"requestId"`
	Certificate  string `json:"certificate"` // PEM
	Reason       string `json:"reason"`      // RFC 5280 name, e.g. keyCompromise
	ReasonCode   int    `json:"reasonCode"`  // RFC 5280 CRLReason
}

// pingRequest asks the server to check itself without issuing (ca.Pinger).
type pingRequest struct {
	APIVersion string `json:"apiVersion"`
	Ping       bool   `json:"ping"`
}

type wireProcess struct {
	Name      string      `json:"name"`
	Customer  string      `json:"customer"`
	ID        string      `json:"id"`
	ProfileID string      `json:"profileId"`
	Scope     string      `json:"scope"` // "device" or "user"
	Device    *wireDevice `json:"device,omitempty"`
	User      *wireUser   `json:"user,omitempty"`
}

type wireDevice struct {
	SerialNumber string `json:"serialNumber"`
	DirectoryID  string `json:"directoryId"`
}

type wireUser struct {
	Email       string `json:"email"`
	DirectoryID string `json:"directoryId"`
}

// response is every answer the contract knows; unknown fields are ignored so that servers can
// add their own.
type response struct {
	Status            string   `json:"status"`
	Certificate       string   `json:"certificate"`
	Chain             []string `json:"chain"`
	Ticket            string   `json:"ticket"`
	RetryAfterSeconds *float64 `json:"retryAfterSeconds"`
	Message           string   `json:"message"`
	Retryable         *bool    `json:"retryable"`
}

func toWireProcess(p *process.Process) wireProcess {
	w := wireProcess{Name: p.Name, Customer: p.Customer, ID: p.ID, ProfileID: p.ProfileID, Scope: "device"}
	if p.UserScoped() {
		w.Scope = "user"
	}
	// A user session on an affiliated device carries both.
	if p.Device != nil {
		w.Device = &wireDevice{SerialNumber: p.Device.SerialNumber, DirectoryID: p.Device.DirectoryID}
	}
	if p.User != nil {
		w.User = &wireUser{Email: p.User.Email, DirectoryID: p.User.DirectoryID}
	}
	return w
}

// signature is the SignatureHeader value for body at t.
func signature(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}
