// Package config loads and validates the adapter's YAML configuration with environment overrides.
package config

import "time"

// Config is the whole adapter configuration. YAML keys are the camelCase field names.
type Config struct {
	// InstanceID is sent as callerInstanceId in claim; it must be stable across restarts of
	// the same replica, and differ between replicas that do not share a journal.
	InstanceID string `mapstructure:"instanceId"`
	// Customers are the customer ids served; notifications for others are acked and ignored.
	Customers []string `mapstructure:"customers"`

	PubSub  PubSub  `mapstructure:"pubsub"`
	Google  Google  `mapstructure:"google"`
	Engine  Engine  `mapstructure:"engine"`
	Journal Journal `mapstructure:"journal"`
	Log     Log     `mapstructure:"log"`

	// Profiles are keyed by profileAdapterConfigReference.
	Profiles map[string]Profile `mapstructure:"profiles"`
	// CAConnections are keyed by caConnectionAdapterConfigReference.
	CAConnections map[string]CAConnection `mapstructure:"caConnections"`

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
	// MaxOutstandingMessages bounds messages in hand at once (flow control).
	MaxOutstandingMessages int `mapstructure:"maxOutstandingMessages"`
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
	// RateLimit bounds calls per second to the API across this replica (the quota is per project).
	RateLimit RateLimit `mapstructure:"rateLimit"`
	// RequestTimeout bounds one HTTP call.
	RequestTimeout time.Duration `mapstructure:"requestTimeout"`
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
	// LeaseDuration is how long a replica may work a record before another may take it over; a
	// replica that dies has its processes resumed by others after this long.
	LeaseDuration time.Duration `mapstructure:"leaseDuration"`
	// Retention is how long finished records are kept for audit before they are deleted.
	Retention time.Duration `mapstructure:"retention"`
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
