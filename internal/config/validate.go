package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/logging"
)

// Key usage names accepted in profiles.<name>.keyUsage (RFC 5280 §4.2.1.3, camelCase as there).
const (
	KeyUsageDigitalSignature  = "digitalSignature"
	KeyUsageContentCommitment = "contentCommitment"
	KeyUsageKeyEncipherment   = "keyEncipherment"
	KeyUsageDataEncipherment  = "dataEncipherment"
	KeyUsageKeyAgreement      = "keyAgreement"
)

// Extended key usage names accepted in profiles.<name>.extendedKeyUsage; any other purpose is
// given as a dotted OID.
const (
	ExtKeyUsageClientAuth      = "clientAuth"
	ExtKeyUsageServerAuth      = "serverAuth"
	ExtKeyUsageEmailProtection = "emailProtection"
	ExtKeyUsageCodeSigning     = "codeSigning"
)

// CustomerMyCustomer stands for the customer that owns the service account.
const CustomerMyCustomer = "my_customer"

// Limits enforced by Validate.
const (
	MaxInstanceIDLength = 128
	MaxWorkers          = 1024
	// MaxStreams bounds pubsub.streams: each stream is a gRPC stream and a goroutine or two, and
	// beyond a few dozen the subscriber's own flow control is the bound.
	MaxStreams = 64
	// MaxValidity is ten years: beyond that a client certificate is a liability, and most CAs
	// refuse anyway.
	MaxValidity = 10 * 365 * 24 * time.Hour
	// maxCommonNameLength is ub-common-name from RFC 5280; CAs reject longer names.
	maxCommonNameLength = 64
)

var (
	instanceIDPattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)
	// Google customer ids are "C" followed by letters and digits, e.g. C01b2c3d4.
	customerIDPattern = regexp.MustCompile(`^C[0-9A-Za-z]{4,32}$`)
	oidPattern        = regexp.MustCompile(`^[0-2](\.(0|[1-9][0-9]*))+$`)
	fullSubscription  = regexp.MustCompile(`^projects/[^/]+/subscriptions/[^/]+$`)
	countryPattern    = regexp.MustCompile(`^[A-Z]{2}$`)
	dnsNamePattern    = regexp.MustCompile(`^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

// The enumerations below are functions rather than package variables so that nothing can
// change them at run time.

func knownKeyUsages() []string {
	return []string{KeyUsageDigitalSignature, KeyUsageContentCommitment, KeyUsageKeyEncipherment, KeyUsageDataEncipherment, KeyUsageKeyAgreement}
}

func knownExtKeyUsages() []string {
	return []string{ExtKeyUsageClientAuth, ExtKeyUsageServerAuth, ExtKeyUsageEmailProtection, ExtKeyUsageCodeSigning}
}

func knownCredentials() []string {
	return []string{CredentialsADC, CredentialsServiceAccountKey, CredentialsSelfSignedJWT, CredentialsNone}
}

// keyFileCredentials are the credential types that read google.credentials.file.
func keyFileCredentials() []string {
	return []string{CredentialsServiceAccountKey, CredentialsSelfSignedJWT}
}

func knownLogLevels() []string {
	return []string{logging.LevelDebug, logging.LevelInfo, logging.LevelWarn, logging.LevelError}
}

func knownLogFormats() []string { return []string{logging.FormatJSON, logging.FormatConsole} }

func knownJournalTypes() []string { return []string{JournalSQLite, JournalPostgres, JournalMemory} }

// Validate checks the decoded configuration and returns every problem found, each naming the
// YAML path at fault; nil means the configuration is usable. It checks what can be checked
// without the network: the connectors validate their own settings, and package csr compiles the
// templates (Validate checks only the literal parts of a profile, such as a fixed country code).
// Relative paths are resolved against BaseDir.
func (c *Config) Validate() []Problem { return append(c.ValidateOffline(), c.CheckFiles()...) }

// ValidateOffline is Validate without the checks that read the file system: it does not look
// at the files the configuration names (Files lists them, CheckFiles checks them), so that a
// production configuration can be checked where those files do not exist (CI).
func (c *Config) ValidateOffline() []Problem {
	var ps problems
	c.validateIdentity(&ps)
	if c.HasTenants() {
		c.validateTenants(&ps)
	} else {
		c.validateTenant(c.Implicit(), &ps)
	}
	c.validateEngine(&ps)
	c.validateJournalAndLog(&ps)
	c.validateOps(&ps)
	positive(&ps, keyShutdownGracePeriod, c.ShutdownGracePeriod)
	c.validateVerifiedAccess(&ps)
	return ps
}

// NamedFile is a file the configuration names, at its YAML path.
type NamedFile struct {
	Path string // e.g. google.credentials.file
	File string // resolved against BaseDir
}

// Files lists the files the configuration names outside the CA connections (whose files their
// connectors read) and that the adapter reads at start: the service account key and the
// enrollment server's certificate and key, when they are used.
func (c *Config) Files() []NamedFile {
	var out []NamedFile
	for _, t := range c.AllTenants() {
		if cred := t.Google.Credentials; slices.Contains(keyFileCredentials(), cred.Type) && cred.File != "" {
			out = append(out, NamedFile{t.key("google.credentials.file"), c.ResolvePath(cred.File)})
		}
	}
	if va := c.VerifiedAccess; va.Enabled && !va.Insecure {
		for _, f := range []struct{ key, file string }{{"certFile", va.TLS.CertFile}, {"keyFile", va.TLS.KeyFile}} {
			if f.file != "" {
				out = append(out, NamedFile{joinPath(joinPath(keyVerifiedAccess, "tls"), f.key), c.ResolvePath(f.file)})
			}
		}
	}
	return out
}

// CheckFiles makes the checks that read the file system: every file of Files must be a regular
// file this process can see, and journal.dsn must protect the connection (DSNCleartext), which
// pgx can only tell after reading sslrootcert and the PostgreSQL service and password files.
func (c *Config) CheckFiles() []Problem {
	var ps problems
	for _, f := range c.Files() {
		if err := regularFile(f.File); err != nil {
			ps.add(f.Path, "%v", err)
		}
	}
	if j := c.Journal; j.Type == JournalPostgres && j.DSN != "" {
		_, err := DSNCleartext(j.DSN, j.InsecureAllowCleartext)
		cleartextProblem(&ps, "journal.dsn", err)
	}
	return ps
}

// keyShutdownGracePeriod is the YAML path of Config.ShutdownGracePeriod.
const keyShutdownGracePeriod = "shutdownGracePeriod"

// KubernetesTerminationGrace is Kubernetes' default terminationGracePeriodSeconds: after it
// the kubelet sends SIGKILL, so a longer shutdown grace period is cut short there.
const KubernetesTerminationGrace = 30 * time.Second

// Warnings returns what is allowed but probably unintended, each naming its YAML path. Unlike
// Validate's problems they do not stop the adapter: `run` logs them and `validate` prints them.
func (c *Config) Warnings() []Problem {
	var ps problems
	c.warnLease(&ps)
	c.warnOps(&ps)
	c.warnRoutes(&ps)
	if c.ShutdownGracePeriod >= KubernetesTerminationGrace {
		ps.add(keyShutdownGracePeriod, "%s is not below Kubernetes' default terminationGracePeriodSeconds (%s): "+
			"raise that too, or the adapter is killed before in-flight steps finish", c.ShutdownGracePeriod, KubernetesTerminationGrace)
	}
	return ps
}

func (c *Config) validateIdentity(ps *problems) {
	switch {
	case c.InstanceID == "":
		ps.add("instanceId", "must not be empty: it is sent to Google as callerInstanceId when claiming")
	case len(c.InstanceID) > MaxInstanceIDLength:
		ps.add("instanceId", "must be at most %d characters", MaxInstanceIDLength)
	case !instanceIDPattern.MatchString(c.InstanceID):
		ps.add("instanceId", "%q may contain only letters, digits and - _ . :", c.InstanceID)
	}

}

// validateCustomers checks the tenant's customer ids.
func (t Tenant) validateCustomers(ps *problems) {
	if len(t.Customers) == 0 {
		ps.add(t.key("customers"), "at least one customer id is required (e.g. C01b2c3d4, or my_customer)")
	}
	seen := map[string]bool{}
	for i, id := range t.Customers {
		path := indexPath(t.key("customers"), i)
		switch {
		case id != CustomerMyCustomer && !customerIDPattern.MatchString(id):
			ps.add(path, "%q is not a customer id: expected C followed by letters and digits (Admin console > Account settings), or my_customer", id)
		case seen[id]:
			ps.add(path, "%q is listed twice", id)
		}
		seen[id] = true
	}
}

func (t Tenant) validatePubSub(ps *problems) {
	p := t.PubSub
	if strings.TrimSpace(p.Project) == "" {
		ps.add(t.key("pubsub.project"), "must not be empty: the Google Cloud project of the subscription")
	}
	switch {
	case strings.TrimSpace(p.Subscription) == "":
		ps.add(t.key("pubsub.subscription"), "must not be empty: the subscription to the customer's certificate provisioning topic")
	case strings.Contains(p.Subscription, "/") && !fullSubscription.MatchString(p.Subscription):
		ps.add(t.key("pubsub.subscription"), "%q must be a subscription id or projects/PROJECT/subscriptions/ID", p.Subscription)
	}
	if p.Endpoint != "" {
		if _, port, err := net.SplitHostPort(p.Endpoint); err != nil || port == "" {
			ps.add(t.key("pubsub.endpoint"), "%q must be host:port (gRPC, no scheme)", p.Endpoint)
		}
	} else if p.Insecure {
		ps.add(t.key("pubsub.insecure"), "only applies with pubsub.endpoint (or %s): the real Pub/Sub needs TLS", EmulatorHostEnv)
	}
	if p.MaxOutstandingMessages < 1 {
		ps.add(t.key("pubsub.maxOutstandingMessages"), "must be at least 1")
	}
	if p.Streams < 1 || p.Streams > MaxStreams {
		ps.add(t.key("pubsub.streams"), "must be between 1 and %d, got %d", MaxStreams, p.Streams)
	}
}

func (t Tenant) validateGoogle(ps *problems) {
	g := t.Google
	cred := g.Credentials
	switch {
	case !slices.Contains(knownCredentials(), cred.Type):
		ps.add(t.key("google.credentials.type"), "%q is not one of %s", cred.Type, strings.Join(knownCredentials(), ", "))
	case slices.Contains(keyFileCredentials(), cred.Type):
		if cred.File == "" {
			ps.add(t.key("google.credentials.file"), "is required with credentials type %s: the service account's JSON key", cred.Type)
		}
	case cred.File != "":
		ps.add(t.key("google.credentials.file"), "is only used with credentials types %s; %s does not read it",
			strings.Join(keyFileCredentials(), " and "), cred.Type)
	}
	if cred.Type == CredentialsNone && g.Endpoint == "" {
		ps.add(t.key("google.credentials.type"), "none is only allowed with google.endpoint set (an emulator): the real API needs credentials")
	}
	if cred.Subject != "" {
		if cred.Type == CredentialsNone {
			ps.add(t.key("google.credentials.subject"), "needs credentials to impersonate with")
		} else if !strings.Contains(cred.Subject, "@") {
			ps.add(t.key("google.credentials.subject"), "%q must be the e-mail address of the user to impersonate", cred.Subject)
		}
	}
	if g.Endpoint != "" {
		if err := httpURL(g.Endpoint); err != nil {
			ps.add(t.key("google.endpoint"), "%v", err)
		} else {
			_, err := EndpointCleartext(SectionGoogle, g.Endpoint, cred, g.InsecureAllowCleartext)
			cleartextProblem(ps, t.key("google.endpoint"), err)
		}
	}
	if r := g.RateLimit.RequestsPerSecond; r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		ps.add(t.key("google.rateLimit.requestsPerSecond"), "must be a positive number")
	}
	if g.RateLimit.Burst < 1 {
		ps.add(t.key("google.rateLimit.burst"), "must be at least 1")
	}
	positive(ps, t.key("google.requestTimeout"), g.RequestTimeout)
}

func (c *Config) validateEngine(ps *problems) {
	e := c.Engine
	if e.Workers < 1 || e.Workers > MaxWorkers {
		ps.add("engine.workers", "must be between 1 and %d, got %d", MaxWorkers, e.Workers)
	}
	okPoll := positive(ps, "engine.pollInterval", e.PollInterval)
	if positive(ps, "engine.maxPollInterval", e.MaxPollInterval) && okPoll && e.MaxPollInterval < e.PollInterval {
		ps.add("engine.maxPollInterval", "must not be shorter than engine.pollInterval (%s)", e.PollInterval)
	}
	positive(ps, "engine.longWaitAfter", e.LongWaitAfter)
	if positive(ps, "engine.longWaitPollInterval", e.LongWaitPollInterval) && e.MaxPollInterval > 0 && e.LongWaitPollInterval < e.MaxPollInterval {
		ps.add("engine.longWaitPollInterval", "must not be shorter than engine.maxPollInterval (%s)", e.MaxPollInterval)
	}
	r := e.Retry
	okInit := positive(ps, "engine.retry.initialBackoff", r.InitialBackoff)
	if positive(ps, "engine.retry.maxBackoff", r.MaxBackoff) && okInit && r.MaxBackoff < r.InitialBackoff {
		ps.add("engine.retry.maxBackoff", "must not be shorter than engine.retry.initialBackoff (%s)", r.InitialBackoff)
	}
	positive(ps, "engine.retry.maxDuration", r.MaxDuration)
}

func (c *Config) validateJournalAndLog(ps *problems) {
	j := c.Journal
	switch j.Type {
	case JournalSQLite:
		if j.Path == "" {
			ps.add("journal.path", "is required for the sqlite journal")
		}
		if j.DSN != "" {
			ps.add("journal.dsn", "is not used by the sqlite journal")
		}
	case JournalPostgres:
		if j.DSN == "" {
			ps.add("journal.dsn", "is required for the postgres journal (set CERTPROV_JOURNAL_DSN)")
		}
		// Whether the DSN protects the connection is checked by CheckFiles: pgx reads
		// sslrootcert and the PostgreSQL service and password files to tell.
	case JournalMemory:
		if j.Path != "" {
			ps.add("journal.path", "is not used by the memory journal, which keeps nothing across restarts")
		}
		if j.DSN != "" {
			ps.add("journal.dsn", "is not used by the memory journal")
		}
	default:
		ps.add("journal.type", "%q is not supported; supported: %s", j.Type, strings.Join(knownJournalTypes(), ", "))
	}
	positive(ps, "journal.leaseDuration", j.LeaseDuration)
	if j.Retention < 0 {
		ps.add("journal.retention", "must not be negative (0 keeps finished records forever)")
	}
	if c.Audit.Path != "" && c.Audit.Path != audit.Stdout && c.Audit.Path == j.Path {
		ps.add("audit.path", "must not be the journal's file (journal.path)")
	}
	if !slices.Contains(knownLogLevels(), c.Log.Level) {
		ps.add("log.level", "%q is not one of %s", c.Log.Level, strings.Join(knownLogLevels(), ", "))
	}
	if !slices.Contains(knownLogFormats(), c.Log.Format) {
		ps.add("log.format", "%q is not one of %s", c.Log.Format, strings.Join(knownLogFormats(), ", "))
	}
}

// warnLease warns about calls that may outlast journal.leaseDuration. A worker's lease is
// renewed before each such call and then by a heartbeat every third of the lease, so a longer
// call still completes while the journal accepts renewals; but it then depends on them: if the
// journal cannot be written for about a lease, the call is abandoned, and a CA connector that
// cannot look up what it issued (est, scep, stepca, vault) fails the process. The rule: one call fits
// in one lease. A CA call is bounded by its connection's timeout; a Google call by
// google.requestTimeout plus its wait for the rate limit, up to engine.workers calls queued
// ahead of it at google.rateLimit.requestsPerSecond.
func (c *Config) warnLease(ps *problems) {
	lease := c.Journal.LeaseDuration
	if lease <= 0 {
		return // an error already
	}
	for _, t := range c.AllTenants() {
		c.warnTenantLease(t, lease, ps)
	}
}

// warnTenantLease is warnLease for the CA connections and the Google API client of tenant t.
func (c *Config) warnTenantLease(t Tenant, lease time.Duration, ps *problems) {
	for _, name := range slices.Sorted(maps.Keys(t.CAConnections)) {
		if to := t.CAConnections[name].Timeout; to > lease {
			ps.add(joinPath(t.key(keyCAConnections), name)+".timeout",
				"%s is longer than journal.leaseDuration (%s): such a CA call holds its process only while the journal accepts lease renewals (every %s); if it cannot be written for about %s, the call is abandoned and a connector that cannot look up what it issued fails the process. Raise journal.leaseDuration to at least %s, or lower the timeout",
				to, lease, lease/3, lease, to)
		}
	}
	g := t.Google
	if rps := g.RateLimit.RequestsPerSecond; rps > 0 && c.Engine.Workers > 0 && g.RequestTimeout > 0 {
		queued := time.Duration(float64(c.Engine.Workers) / rps * float64(time.Second))
		if worst := g.RequestTimeout + queued; worst > lease {
			ps.add(t.key("google.requestTimeout"),
				"%s plus up to %s waiting for the rate limit (engine.workers %d at google.rateLimit.requestsPerSecond %g) is longer than journal.leaseDuration (%s): such a Google API call holds its process only while the journal accepts lease renewals (every %s). Raise journal.leaseDuration to at least %s",
				g.RequestTimeout, queued.Round(time.Millisecond), c.Engine.Workers, rps, lease, lease/3, worst.Round(time.Second))
		}
	}
}

// validate checks one profile found at path.
func (p *Profile) validate(path string, ps *problems) {
	validateCertificate(ps, path, p.Subject, p.SubjectAltNames, p.KeyUsage, p.ExtKeyUsage, p.Validity)
	positive(ps, joinPath(path, "signDeadline"), p.SignDeadline)
}

// validateRevokeSuperseded checks a profile's renewal hygiene; the reason and whether the
// connections can revoke are checked where the connectors are known (package adapter).
func (t Tenant) validateRevokeSuperseded(path string, r RevokeSuperseded, ps *problems) {
	if r.GracePeriod < 0 {
		ps.add(joinPath(path, "gracePeriod"), "must not be negative (0 revokes as soon as the new certificate is issued), got %s", r.GracePeriod)
	}
	if r.Enabled && strings.TrimSpace(r.Reason) == "" {
		ps.add(joinPath(path, "reason"), "must not be empty (default %s)", DefaultRevokeReason)
	}
	checkList(ps, joinPath(path, "caConnections"), r.CAConnections, func(name string) string {
		if _, ok := t.CAConnections[name]; !ok && t.CAConnections != nil {
			return fmt.Sprintf("%q is not in %s (known: %s)", name, t.key(keyCAConnections), strings.Join(slices.Sorted(maps.Keys(t.CAConnections)), ", "))
		}
		return ""
	})
}

// validateCertificate checks what a profile says about the certificate (adapter profiles and
// Verified Access profiles alike): the literal parts of the subject and SAN templates, key
// usages and validity.
func validateCertificate(ps *problems, path string, s Subject, san SANs, keyUsage, extKeyUsage []string, validity time.Duration) {
	if positive(ps, joinPath(path, "validity"), validity) && validity > MaxValidity {
		ps.add(joinPath(path, "validity"), "must be at most ten years (%s), got %s", MaxValidity, validity)
	}
	checkList(ps, joinPath(path, "keyUsage"), keyUsage, func(s string) string {
		if !slices.Contains(knownKeyUsages(), s) {
			return fmt.Sprintf("%q is not one of %s", s, strings.Join(knownKeyUsages(), ", "))
		}
		return ""
	})
	checkList(ps, joinPath(path, "extendedKeyUsage"), extKeyUsage, func(s string) string {
		if !slices.Contains(knownExtKeyUsages(), s) && !oidPattern.MatchString(s) {
			return fmt.Sprintf("%q is neither one of %s nor a dotted OID such as 1.3.6.1.5.5.7.3.2",
				s, strings.Join(knownExtKeyUsages(), ", "))
		}
		return ""
	})

	subj := joinPath(path, "subject")
	if cn := s.CommonName; cn != "" && !isTemplate(cn) && len(cn) > maxCommonNameLength {
		ps.add(joinPath(subj, "commonName"), "must be at most %d characters", maxCommonNameLength)
	}
	if s.Country != "" && !isTemplate(s.Country) && !countryPattern.MatchString(s.Country) {
		ps.add(joinPath(subj, "country"), "%q must be a two-letter ISO 3166 code in capitals, e.g. DE", s.Country)
	}
	checkList(ps, joinPath(subj, "organization"), s.Organization, nil)
	checkList(ps, joinPath(subj, "organizationalUnit"), s.OrganizationalUnit, nil)

	sans := joinPath(path, "subjectAltNames")
	checkList(ps, joinPath(sans, "dns"), san.DNS, literal(func(v string) string {
		if !dnsNamePattern.MatchString(v) {
			return fmt.Sprintf("%q is not a DNS name", v)
		}
		return ""
	}))
	checkList(ps, joinPath(sans, "email"), san.Email, literal(func(v string) string {
		// Only what is plainly no address: the full RFC 5321 syntax, quoted local parts
		// ("john doe"@example.com) included, is package csr's, which checks literal values when
		// it compiles the profile.
		if at := strings.LastIndexByte(v, '@'); at <= 0 || at == len(v)-1 {
			return fmt.Sprintf("%q is not an e-mail address", v)
		}
		return ""
	}))
	checkList(ps, joinPath(sans, "uri"), san.URI, literal(func(v string) string {
		if u, err := url.Parse(v); err != nil || u.Scheme == "" {
			return fmt.Sprintf("%q is not an absolute URI", v)
		}
		return ""
	}))
	checkList(ps, joinPath(sans, "upn"), san.UPN, literal(func(v string) string {
		if !strings.Contains(v, "@") {
			return fmt.Sprintf("%q is not a user principal name (user@domain)", v)
		}
		return ""
	}))

	if strings.TrimSpace(s.CommonName) == "" && len(san.DNS)+len(san.Email)+len(san.URI)+len(san.UPN) == 0 {
		ps.add(path, "needs a subject.commonName or at least one subjectAltNames entry: a certificate must name someone")
	}
}

// checkList reports empty and duplicate entries of a list, and whatever check says of the others.
func checkList(ps *problems, path string, list []string, check func(string) string) {
	seen := map[string]bool{}
	for i, v := range list {
		p := indexPath(path, i)
		switch {
		case strings.TrimSpace(v) == "":
			ps.add(p, "must not be empty")
		case seen[v]:
			ps.add(p, "%q is listed twice", v)
		case check != nil:
			if msg := check(v); msg != "" {
				ps.add(p, "%s", msg)
			}
		}
		seen[v] = true
	}
}

// literal applies check only to values without template actions: what a template renders to is
// known only per process.
func literal(check func(string) string) func(string) string {
	return func(v string) string {
		if isTemplate(v) {
			return ""
		}
		return check(v)
	}
}

func isTemplate(s string) bool { return strings.Contains(s, "{{") }

// positive reports a non-positive duration at path and says whether d was positive.
func positive(ps *problems, path string, d time.Duration) bool {
	if d <= 0 {
		ps.add(path, "must be a positive duration such as 30s, 90m or 24h")
		return false
	}
	return true
}

// regularFile checks that p names a readable regular file.
func regularFile(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("cannot use %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", p)
	}
	return nil
}

// httpURL checks that s is an absolute http or https URL.
func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q must be an absolute http(s) URL, e.g. http://127.0.0.1:8480/", s)
	}
	return nil
}
