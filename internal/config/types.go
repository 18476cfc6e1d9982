// Package config loads and validates the adapter's YAML configuration with environment overrides.
package config

import (
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/csr"
)

// Config is the whole adapter configuration. YAML keys are the camelCase field names.
type Config struct {
	// InstanceID is sent as callerInstanceId in claim; it must be stable across restarts of
	// the same replica, and differ between replicas that do not share a journal.
	InstanceID string `mapstructure:"instanceId"`
	// Customers are the customer ids served; notifications for others are acked and ignored.
	Customers []string `mapstructure:"customers"`
	// ShutdownGracePeriod is how long a stopping adapter (SIGTERM, SIGINT) lets in-flight CA
	// calls and uploads finish after it stopped taking new work. Keep it below the time the
	// supervisor waits before SIGKILL (Kubernetes: terminationGracePeriodSeconds, 30 s).
	ShutdownGracePeriod time.Duration `mapstructure:"shutdownGracePeriod"`

	PubSub  PubSub  `mapstructure:"pubsub"`
	Google  Google  `mapstructure:"google"`
	Engine  Engine  `mapstructure:"engine"`
	Journal Journal `mapstructure:"journal"`
	Log     Log     `mapstructure:"log"`
	Ops     Ops     `mapstructure:"ops"`
	Audit   Audit   `mapstructure:"audit"`

	// Profiles are keyed by profileAdapterConfigReference.
	Profiles map[string]Profile `mapstructure:"profiles"`
	// CAConnections are keyed by caConnectionAdapterConfigReference.
	CAConnections map[string]CAConnection `mapstructure:"caConnections"`

	// Tenants, when set, replace customers, pubsub, google, profiles and caConnections: each
	// tenant is a pipeline of its own (docs/tenants.md). Without them those top-level keys are
	// the one implicit tenant.
	Tenants []Tenant `mapstructure:"tenants"`

	// VerifiedAccess is the second intake path: the enrollment API for Chrome extensions
	// (docs/verified-access.md). Off unless enabled.
	VerifiedAccess VerifiedAccess `mapstructure:"verifiedAccess"`

	// BaseDir is the directory of the config file; relative paths resolve against it.
	BaseDir string `mapstructure:"-"`
}

// PubSub says where notifications come from.
type PubSub struct {
	Project      string `mapstructure:"project"`
	Subscription string `mapstructure:"subscription"`
	// Endpoint overrides the Pub/Sub gRPC endpoint (host:port); with Insecure it talks plaintext
	// without credentials, as to the emulator. PUBSUB_EMULATOR_HOST has the same effect.
	Endpoint string `mapstructure:"endpoint"`
	Insecure bool   `mapstructure:"insecure"`
	// MaxOutstandingMessages bounds messages in hand at once (flow control): the admissions
	// in progress, each a get, a claim and a journal write.
	MaxOutstandingMessages int `mapstructure:"maxOutstandingMessages"`
	// Streams is the number of StreamingPull streams the subscriber holds open (the client's
	// ReceiveSettings.NumGoroutines). Each stream is served separately, so more streams raise
	// the rate at which Pub/Sub can deliver; MaxOutstandingMessages applies across all of them.
	Streams int `mapstructure:"streams"`
}

// SubscriptionName is the full name of the subscription, projects/P/subscriptions/S: Subscription
// when it is one, else Subscription as an id in Project.
func (p PubSub) SubscriptionName() string {
	if strings.Contains(p.Subscription, "/") {
		return p.Subscription
	}
	return "projects/" + p.Project + "/subscriptions/" + p.Subscription
}

// Credential types for the Google APIs.
const (
	CredentialsADC               = "adc"               // Application Default Credentials
	CredentialsServiceAccountKey = "serviceAccountKey" // JSON key file, OAuth2 access tokens
	CredentialsSelfSignedJWT     = "selfSignedJWT"     // JSON key file, self-signed JWT, no token exchange
	CredentialsNone              = "none"              // emulator only
)

// Google configures the Certificate Provisioning API client.
type Google struct {
	Credentials Credentials `mapstructure:"credentials"`
	// Endpoint overrides https://chromemanagement.googleapis.com/ (the emulator's URL).
	Endpoint string `mapstructure:"endpoint"`
	// InsecureAllowCleartext accepts a plain-http Endpoint on a host that is not loopback, to
	// which the access token then travels in clear; refused without it (see EndpointCleartext).
	InsecureAllowCleartext bool `mapstructure:"insecureAllowCleartext"`
	// RateLimit bounds calls per second to the API across this replica (the quota is per project).
	RateLimit RateLimit `mapstructure:"rateLimit"`
	// RequestTimeout bounds one HTTP call.
	RequestTimeout time.Duration `mapstructure:"requestTimeout"`
	// Directory is the Admin SDK Directory lookups of profile templates and routes (directory.go).
	Directory Directory `mapstructure:"directory"`
}

// Credentials selects how the adapter authenticates to Google.
type Credentials struct {
	Type string `mapstructure:"type"`
	File string `mapstructure:"file"` // key file for serviceAccountKey and selfSignedJWT
	// Subject, when set, is the user to impersonate through domain-wide delegation (optional,
	// undocumented for this API).
	Subject string `mapstructure:"subject"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	RequestsPerSecond float64 `mapstructure:"requestsPerSecond"`
	Burst             int     `mapstructure:"burst"`
}

// Engine tunes the state machine.
type Engine struct {
	Workers int `mapstructure:"workers"`
	// PollInterval is the first wait before polling a signData operation; it doubles up to
	// MaxPollInterval.
	PollInterval    time.Duration `mapstructure:"pollInterval"`
	MaxPollInterval time.Duration `mapstructure:"maxPollInterval"`
	// LongWaitAfter is how long after signData a device counts as offline; from then on the
	// operation is polled every LongWaitPollInterval (at least MaxPollInterval).
	LongWaitAfter        time.Duration `mapstructure:"longWaitAfter"`
	LongWaitPollInterval time.Duration `mapstructure:"longWaitPollInterval"`
	// Retry governs transient failures of every step other than waiting for the device.
	Retry Retry `mapstructure:"retry"`
}

// Retry is an exponential backoff with full jitter, bounded in time.
type Retry struct {
	InitialBackoff time.Duration `mapstructure:"initialBackoff"`
	MaxBackoff     time.Duration `mapstructure:"maxBackoff"`
	// MaxDuration is how long one step may keep failing transiently before the process fails.
	MaxDuration time.Duration `mapstructure:"maxDuration"`
}

// Journal selects where claimed processes are recorded (see docs/journal.md).
type Journal struct {
	// Type is sqlite (one file per replica, the default), postgres (shared by replicas) or
	// memory (tests and demos: a restart forgets every claimed process).
	Type string `mapstructure:"type"`
	// Path is the sqlite file.
	Path string `mapstructure:"path"`
	// DSN is the PostgreSQL connection string; it holds a password, so prefer the environment
	// variable CERTPROV_JOURNAL_DSN to the file.
	DSN string `mapstructure:"dsn"`
	// InsecureAllowCleartext accepts a DSN that reaches a host other than this machine without
	// TLS that verifies the server (sslmode other than verify-ca and verify-full); refused
	// without it (see DSNCleartext).
	InsecureAllowCleartext bool `mapstructure:"insecureAllowCleartext"`
	// LeaseDuration is how long a replica may work a record before another may take it over; a
	// replica that dies has its processes resumed by others after this long.
	LeaseDuration time.Duration `mapstructure:"leaseDuration"`
	// Retention is how long finished records are kept for audit before they are deleted.
	Retention time.Duration `mapstructure:"retention"`

	// Tenant names the tenant whose part of the journal this is (Config.TenantJournal); empty
	// for the single-customer form. Not a key of the file.
	Tenant string `mapstructure:"-"`
}

// Audit says where the audit trail goes: one JSON line per finished process and per
// Verified Access enrollment (docs/audit.md).
type Audit struct {
	// Path is a file, appended to (created 0600) and synced after every event, or "-" (the
	// default, as is empty) for standard output. Relative to the config file's directory.
	Path string `mapstructure:"path"`
}

// Log configures zap.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // json or console
}

// Profile says what certificate to request for processes naming it.
type Profile struct {
	Subject         Subject  `mapstructure:"subject"`
	SubjectAltNames SANs     `mapstructure:"subjectAltNames"`
	KeyUsage        []string `mapstructure:"keyUsage"`         // digitalSignature, keyEncipherment, …
	ExtKeyUsage     []string `mapstructure:"extendedKeyUsage"` // clientAuth, serverAuth, …
	// TemplateName is passed to the CA (e.g. an AD CS certificate template).
	TemplateName string `mapstructure:"templateName"`
	// Validity is the requested certificate lifetime.
	Validity time.Duration `mapstructure:"validity"`
	// SignDeadline is how long the device has to sign before the process fails.
	SignDeadline time.Duration `mapstructure:"signDeadline"`
	// Strict refuses a certificate whose subject alternative names or extended key usages differ
	// from what the profile asked for; otherwise the difference is logged and the certificate used.
	Strict bool `mapstructure:"strict"`
	// Routes pick a CA connection, validity or template name by org unit; the first match wins
	// (directory.go).
	Routes []Route `mapstructure:"routes"`
	// RevokeSuperseded revokes the certificates a new one of this profile replaces.
	RevokeSuperseded RevokeSuperseded `mapstructure:"revokeSuperseded"`
}

// RevokeSuperseded is renewal hygiene (docs/renewal.md): once a device or user has a new
// certificate of the profile, the ones issued to it before through the profile are revoked at
// their CA after a grace period.
type RevokeSuperseded struct {
	Enabled bool `mapstructure:"enabled"`
	// GracePeriod is how long the superseded certificate stays valid after the new one is
	// issued: the device keeps using it until the new one is in use.
	GracePeriod time.Duration `mapstructure:"gracePeriod"`
	// Reason is the RFC 5280 revocation reason the CA records (superseded).
	Reason string `mapstructure:"reason"`
	// CAConnections limits revocation to certificates issued through these connections; empty
	// means every connection, each of which must then be able to revoke.
	CAConnections []string `mapstructure:"caConnections"`
}

// Spec is what the profile asks of a certificate, as package csr compiles it.
func (p Profile) Spec() csr.Spec {
	return csr.Spec{Subject: csr.Subject(p.Subject), SubjectAltNames: csr.SANs(p.SubjectAltNames),
		KeyUsage: p.KeyUsage, ExtKeyUsage: p.ExtKeyUsage, TemplateName: p.TemplateName}
}

// Subject holds text/template strings rendered over the process (see csr.TemplateData).
type Subject struct {
	CommonName         string   `mapstructure:"commonName"`
	Organization       []string `mapstructure:"organization"`
	OrganizationalUnit []string `mapstructure:"organizationalUnit"`
	Locality           string   `mapstructure:"locality"`
	Province           string   `mapstructure:"province"`
	Country            string   `mapstructure:"country"`
}

// SANs holds text/template strings for subject alternative names.
type SANs struct {
	DNS   []string `mapstructure:"dns"`
	Email []string `mapstructure:"email"`
	URI   []string `mapstructure:"uri"`
	UPN   []string `mapstructure:"upn"`
}

// CAConnection is one CA the adapter can send requests to.
type CAConnection struct {
	Type string `mapstructure:"type"`
	// Timeout bounds one call to the CA.
	Timeout time.Duration `mapstructure:"timeout"`
	// Settings is the connector's own configuration, decoded by its factory.
	Settings map[string]any `mapstructure:",remain"`
}

// Verified Access API versions (verifiedAccess.apiVersion, verifiedAccess.profiles.<name>.apiVersion).
const (
	VAv1 = "v1"
	VAv2 = "v2"
)

// Verified Access key scopes (verifiedAccess.profiles.<name>.scopes).
const (
	// VAScopeMachine is the enterprise machine key (EMK): the expected identity is the enrolled domain.
	VAScopeMachine = "machine"
	// VAScopeUser is the enterprise user key (EUK): the expected identity is the user's e-mail.
	VAScopeUser = "user"
)

// VerifiedAccess configures the enrollment API through which a Chrome extension answers a
// Verified Access challenge and receives a certificate for the key it registered.
type VerifiedAccess struct {
	// Enabled starts the enrollment server with the adapter.
	Enabled bool `mapstructure:"enabled"`
	// Listen is the server's host:port.
	Listen string `mapstructure:"listen"`
	// TLS is the server certificate; required unless Insecure.
	TLS ServerTLS `mapstructure:"tls"`
	// Insecure serves plain HTTP, which is allowed only on a loopback address (demos, tests).
	Insecure bool `mapstructure:"insecure"`
	// Endpoint overrides https://verifiedaccess.googleapis.com/ (the emulator's URL). The
	// credentials are google.credentials, with the Verified Access scope.
	Endpoint string `mapstructure:"endpoint"`
	// InsecureAllowCleartext accepts a plain-http Endpoint on a host that is not loopback, as
	// google.insecureAllowCleartext does for google.endpoint. It says nothing about the
	// enrollment server's own listener (Insecure).
	InsecureAllowCleartext bool `mapstructure:"insecureAllowCleartext"`
	// APIVersion is the Verified Access API version of profiles that do not name one: v1 or v2.
	APIVersion string `mapstructure:"apiVersion"`
	// ChallengeLifetime is how long a challenge is good for: what the extension is told, how long
	// used responses are remembered, and the age past which a challenge this adapter issued is
	// refused. Google's challenges live about a minute.
	ChallengeLifetime time.Duration `mapstructure:"challengeLifetime"`
	// RateLimit is a token bucket per client address, over both endpoints, so that one client
	// cannot spend the google.rateLimit budget that every device shares.
	RateLimit RateLimit `mapstructure:"rateLimit"`
	// MaxConcurrentChallenges and MaxConcurrentEnrollments bound the /challenge and /enroll
	// requests at work at once; as many again may wait up to QueueTimeout for a slot.
	MaxConcurrentChallenges  int `mapstructure:"maxConcurrentChallenges"`
	MaxConcurrentEnrollments int `mapstructure:"maxConcurrentEnrollments"`
	// MaxConcurrentPerClient bounds the slots (held or waited for) of one client address per
	// endpoint, so that one client cannot take them all.
	MaxConcurrentPerClient int           `mapstructure:"maxConcurrentPerClient"`
	QueueTimeout           time.Duration `mapstructure:"queueTimeout"`
	// TrustedProxies are the addresses or CIDRs of reverse proxies whose X-Forwarded-For header
	// names the client; without them the header is ignored.
	TrustedProxies []string `mapstructure:"trustedProxies"`
	// Profiles are keyed by the name the extension sends.
	Profiles map[string]VerifiedAccessProfile `mapstructure:"profiles"`
}

// ServerTLS is a server certificate and key, PEM files.
type ServerTLS struct {
	CertFile string `mapstructure:"certFile"`
	KeyFile  string `mapstructure:"keyFile"`
}

// VerifiedAccessProfile says which devices may enroll under a name and what certificate they get.
type VerifiedAccessProfile struct {
	// APIVersion is v1 or v2; empty inherits verifiedAccess.apiVersion. Only v2 reports device
	// signals, key trust levels and customer ids.
	APIVersion string `mapstructure:"apiVersion"`
	// Scopes are the key scopes allowed: machine, user.
	Scopes []string `mapstructure:"scopes"`
	// EnrollmentDomain is the expected identity of machine keys: the domain the devices are
	// enrolled in. Google refuses a device enrolled elsewhere.
	EnrollmentDomain string `mapstructure:"enrollmentDomain"`
	// UserDomains are the e-mail domains a user key's identity may have; empty means
	// EnrollmentDomain only.
	UserDomains []string `mapstructure:"userDomains"`
	// CAConnection names the caConnections entry that issues; its connector must be able to issue
	// for a public key without a CSR (the built-in CA can).
	CAConnection string `mapstructure:"caConnection"`

	// Subject and SubjectAltNames are templates over the verify result (see docs/verified-access.md).
	Subject         Subject       `mapstructure:"subject"`
	SubjectAltNames SANs          `mapstructure:"subjectAltNames"`
	KeyUsage        []string      `mapstructure:"keyUsage"`
	ExtKeyUsage     []string      `mapstructure:"extendedKeyUsage"`
	TemplateName    string        `mapstructure:"templateName"`
	Validity        time.Duration `mapstructure:"validity"`

	// Policy is the device-trust policy every enrollment must pass.
	Policy VerifiedAccessPolicy `mapstructure:"policy"`
}

// VerifiedAccessPolicy is a device-trust policy over a verify result. Every rule that is set must
// hold; an empty policy admits every device Google verified for the expected identity.
type VerifiedAccessPolicy struct {
	// KeyTrustLevels lists the acceptable keyTrustLevel values (v2), e.g. CHROME_OS_VERIFIED_MODE.
	KeyTrustLevels []string `mapstructure:"keyTrustLevels"`
	// ProfileKeyTrustLevels is refused with its reason: Google reports a profile trust level
	// only for managed Chrome browser profiles, which cannot reach this endpoint.
	ProfileKeyTrustLevels []string `mapstructure:"profileKeyTrustLevels"`
	// Signals maps a device signal name (v2 DeviceSignals, e.g. diskEncryption) to its acceptable
	// values: enum names, true/false for boolean signals, identifiers or addresses for the list
	// and object signals (macAddresses, systemDnsServers, crowdStrikeAgent.agentId, …).
	Signals map[string][]string `mapstructure:"signals"`
	// MinOSVersion and MinBrowserVersion are compared per dotted numeric component with
	// deviceSignals.osVersion and deviceSignals.browserVersion (v2).
	MinOSVersion      string `mapstructure:"minOsVersion"`
	MinBrowserVersion string `mapstructure:"minBrowserVersion"`
	// CustomerIDs lists the acceptable customer ids (customerId) (v2).
	CustomerIDs []string `mapstructure:"customerIds"`
	// EnrollmentDomains lists the acceptable enrollment domains (deviceSignals.deviceEnrollmentDomain) (v2).
	EnrollmentDomains []string `mapstructure:"enrollmentDomains"`
}
