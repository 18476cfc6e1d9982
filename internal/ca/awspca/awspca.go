// Package awspca connects the adapter to AWS Private CA (ACM PCA) through the AWS SDK for Go v2
// (github.com/aws/aws-sdk-go-v2/service/acmpca), with credentials from the SDK's default chain
// (environment, shared files, web identity / IRSA, ECS task role, EC2 instance profile).
//
// A request is IssueCertificate (the device's CSR, the CA's signing algorithm, the template, the
// validity, an idempotency token from the request key) followed by GetCertificate, which answers
// RequestInProgressException until PCA has signed: that is a pending answer whose ticket is the
// certificate ARN, so the engine journals it and asks for that certificate, never issues again.
//
// PCA remembers an idempotency token for five minutes only and has no call that lists what it
// issued for a request, so the connector cannot say after a restart what an interrupted request
// issued: it is no ca.Recoverer, and the engine fails such a request rather than risk a second
// certificate. Within one run it keeps each request's exact IssueCertificate input, so that the
// SDK's retries and the engine's repeats within the five minutes reuse the token, and a repeat
// after them asks for the certificate already issued instead of issuing again.
//
// It registers the connector type "awspca". Settings (under caConnections.<name>):
//
//	certificateAuthorityArn  arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID (required)
//	templateArn              optional: PCA template (default EndEntityClientAuthCertificate/V1);
//	                         a profile's templateName overrides it
//	signingAlgorithm         optional: the CA's signature algorithm (default: the CA's own, read
//	                         with DescribeCertificateAuthority)
//	maxValidity              optional: the longest validity asked for (default: the profile's)
//	region                   optional: default the ARN's region
//	endpoint                 optional: https URL of the API (a VPC endpoint)
//	caCertsFile              optional: PEM roots, instead of GetCertificateAuthorityCertificate
package awspca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/acmpca"
	"github.com/aws/aws-sdk-go-v2/service/acmpca/schemas"
	"github.com/aws/aws-sdk-go-v2/service/acmpca/types"
	"github.com/aws/smithy-go/transport/http/protocol/awsjson"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "awspca"

func init() {
	ca.RegisterNew(Type, func(s ca.Settings, env ca.Env) (*Connector, error) { return New(s, env, Options{}) })
	ca.RegisterCheck(Type, Check)
}

const (
	// DefaultTemplateArn is the PCA template for TLS client certificates: digitalSignature,
	// clientAuth, subject and SANs from the CSR.
	DefaultTemplateArn = "arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1"

	// tokenWindow is how long PCA honours an idempotency token (five minutes), less a margin
	// for the clocks and the call's own duration.
	tokenWindow = 4 * time.Minute
	// keepAttempts is how long a request's input and ARN are kept in memory.
	keepAttempts = time.Hour
	// callTimeout is a backstop for one call whose context has no deadline.
	callTimeout = 2 * time.Minute
	// pendingRetry is when to ask again for a certificate PCA is still signing; it normally
	// takes a second or two.
	pendingRetry = 2 * time.Second
	// maxMessage bounds the server's text inside an error (failure messages are at most 500 bytes).
	maxMessage = 300
)

var (
	caARN       = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):acm-pca:([a-z0-9-]+):([0-9]{12}):certificate-authority/[0-9a-f-]{36}$`)
	templateARN = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):acm-pca:::template/[A-Za-z0-9_]+/V[0-9]+$`)
	regionRE    = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]$`)
	certARNRE   = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):acm-pca:[a-z0-9-]+:[0-9]{12}:certificate-authority/[0-9a-f-]{36}/certificate/[0-9a-fA-F]+$`)
)

// settings is the decoded caConnections.<name> block.
type settings struct {
	CertificateAuthorityArn string        `mapstructure:"certificateAuthorityArn"`
	TemplateArn             string        `mapstructure:"templateArn"`
	SigningAlgorithm        string        `mapstructure:"signingAlgorithm"`
	MaxValidity             time.Duration `mapstructure:"maxValidity"`
	Region                  string        `mapstructure:"region"`
	Endpoint                string        `mapstructure:"endpoint"`
	CACertsFile             string        `mapstructure:"caCertsFile"`
}

// Options are the dependencies New takes besides the settings.
type Options struct {
	// ClientOptions adjust the SDK client after the settings (tests give the fake's HTTP client
	// and a retryer without backoff).
	ClientOptions []func(*acmpca.Options)
	// Now is the clock the token window is measured with; time.Now when nil.
	Now func() time.Time
}

// Connector issues certificates from one AWS Private CA. It is safe for concurrent use.
type Connector struct {
	name        string
	log         *zap.Logger
	arn         string
	template    string
	algorithm   types.SigningAlgorithm // "" until read from the CA, unless configured
	maxValidity time.Duration
	client      *acmpca.Client
	now         func() time.Time
	pinned      *x509.CertPool // from caCertsFile

	mu        sync.Mutex
	authority *authority          // nil until read
	attempts  map[string]*attempt // by request key
}

// attempt is one request's IssueCertificate, kept so that a repeat reuses its token while PCA
// honours it, and asks for its certificate after.
type attempt struct {
	input *acmpca.IssueCertificateInput
	sent  time.Time
	arn   string // "" until PCA answered
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)
	_ ca.Revoker   = (*Connector)(nil)
)

// New builds the connector. It loads the SDK's default configuration (which reads shared
// config files, not the network: credentials are fetched on the first call) and caCertsFile.
func New(raw ca.Settings, env ca.Env, o Options) (*Connector, error) {
	s, err := decodeSettings(raw)
	if err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Connector{
		name:        env.Name,
		log:         log,
		arn:         s.CertificateAuthorityArn,
		template:    templateFor(s.TemplateArn, DefaultTemplateArn),
		algorithm:   types.SigningAlgorithm(s.SigningAlgorithm),
		maxValidity: s.MaxValidity,
		now:         o.Now,
		attempts:    map[string]*attempt{},
	}
	if c.now == nil {
		c.now = time.Now
	}
	if s.CACertsFile != "" {
		certs, err := pemutil.ReadCertificates(env.Path(s.CACertsFile))
		if err != nil {
			return nil, ca.SettingErrorf("caCertsFile", "%q: %w", s.CACertsFile, err)
		}
		c.pinned = x509.NewCertPool()
		for _, cert := range certs {
			c.pinned.AddCert(cert)
		}
	}
	region := s.Region
	if region == "" {
		region = caARN.FindStringSubmatch(s.CertificateAuthorityArn)[2]
	}
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(region))
	if err != nil {
		return nil, ca.SettingErrorf("certificateAuthorityArn", "AWS configuration: %w", err)
	}
	opts := []func(*acmpca.Options){func(o *acmpca.Options) {
		// AWS JSON 1.1, the protocol of PCA's API reference that every PCA endpoint has always
		// served, rather than the SDK's newer default (Smithy RPC v2 CBOR, added to the service
		// in November 2026): one wire format that proxies, VPC endpoints and the tests' fake
		// all speak, with errors an operator can read in a packet capture.
		o.Protocol = awsjson.New11(schemas.ACMPrivateCA)
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
	}}
	c.client = acmpca.NewFromConfig(cfg, append(opts, o.ClientOptions...)...)
	return c, nil
}

// Check validates settings without reading any file or contacting AWS (ca.Check).
func Check(raw ca.Settings) error {
	_, err := decodeSettings(raw)
	return err
}

func decodeSettings(raw ca.Settings) (*settings, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, err
	}
	var errs []error
	switch {
	case s.CertificateAuthorityArn == "":
		errs = append(errs, ca.SettingErrorf("certificateAuthorityArn", "required: arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID"))
	case !caARN.MatchString(s.CertificateAuthorityArn):
		errs = append(errs, ca.SettingErrorf("certificateAuthorityArn", "%q is not a private CA's ARN (arn:aws:acm-pca:REGION:ACCOUNT:certificate-authority/ID)", s.CertificateAuthorityArn))
	}
	if s.TemplateArn != "" && !templateARN.MatchString(templateFor(s.TemplateArn, "")) {
		errs = append(errs, ca.SettingErrorf("templateArn", "%q: write a PCA template ARN (arn:aws:acm-pca:::template/EndEntityClientAuthCertificate/V1) or its name (EndEntityClientAuthCertificate/V1)", s.TemplateArn))
	}
	if s.SigningAlgorithm != "" && !knownAlgorithm(types.SigningAlgorithm(s.SigningAlgorithm)) {
		errs = append(errs, ca.SettingErrorf("signingAlgorithm", "%q: one of %v", s.SigningAlgorithm, types.SigningAlgorithm("").Values()))
	}
	if s.MaxValidity < 0 || (s.MaxValidity > 0 && s.MaxValidity < time.Second) {
		errs = append(errs, ca.SettingErrorf("maxValidity", "must be at least 1s"))
	}
	if s.Region != "" && !regionRE.MatchString(s.Region) {
		errs = append(errs, ca.SettingErrorf("region", "%q is not an AWS region (e.g. eu-west-1)", s.Region))
	}
	if s.Endpoint != "" {
		if u, err := ca.ParseURL(s.Endpoint); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
			errs = append(errs, ca.SettingErrorf("endpoint", "write an https URL without credentials (e.g. https://acm-pca.eu-west-1.amazonaws.com)"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &s, nil
}

func knownAlgorithm(a types.SigningAlgorithm) bool {
	for _, v := range a.Values() {
		if v == a {
			return true
		}
	}
	return false
}

// templateFor writes a template name as its ARN; "" gives def.
func templateFor(t, def string) string {
	switch {
	case t == "":
		return def
	case strings.HasPrefix(t, "arn:"):
		return t
	default:
		return "arn:aws:acm-pca:::template/" + t
	}
}

// Issue asks PCA to sign the request's CSR, or, resuming a pending request, for the
// certificate it is signing.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("%s: no request", c.label())
	}
	what := fmt.Sprintf("%s: issue %s", c.label(), req.Key)
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	csr, err := req.CheckedCSR()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.prepare(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if req.Ticket != "" {
		if !certARNRE.MatchString(req.Ticket) || !strings.HasPrefix(req.Ticket, c.arn+"/certificate/") {
			return nil, ca.Permanentf("%s: the pending ticket is not a certificate ARN of %s", what, c.arn)
		}
		return c.fetch(ctx, what, req.Ticket, req.Key, csr.RawSubjectPublicKeyInfo)
	}
	a, err := c.attemptFor(what, req, csr)
	if err != nil {
		return nil, err
	}
	arn := a.arn
	if arn == "" {
		cctx, cancel := withTimeout(ctx)
		out, err := c.client.IssueCertificate(cctx, a.input)
		cancel()
		if err != nil {
			if refused(err) {
				// PCA answered with a refusal: nothing was issued, and a repeat is a new request.
				c.mu.Lock()
				delete(c.attempts, req.Key)
				c.mu.Unlock()
			}
			return nil, classify(ctx, what, err)
		}
		arn = aws.ToString(out.CertificateArn)
		c.mu.Lock()
		a.arn = arn
		c.mu.Unlock()
		c.log.Info("PCA accepted the request", zap.String("connector", c.name), zap.String("key", req.Key), zap.String("certificate_arn", arn))
	}
	return c.fetch(ctx, what, arn, req.Key, csr.RawSubjectPublicKeyInfo)
}

// attemptFor returns the request's attempt: the one made before, while its token holds or once
// it has an ARN, or a new one. A request whose answer was lost longer ago than PCA keeps its
// token is refused: PCA may have issued, and cannot say so.
func (c *Connector) attemptFor(what string, req *ca.Request, csr *x509.CertificateRequest) (*attempt, error) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, a := range c.attempts {
		if now.Sub(a.sent) > keepAttempts {
			delete(c.attempts, k)
		}
	}
	if a, ok := c.attempts[req.Key]; ok {
		if a.arn != "" || now.Sub(a.sent) < tokenWindow {
			return a, nil
		}
		return nil, ca.Permanentf("%s: PCA's answer to this request was lost %s ago, longer than it honours the idempotency token; "+
			"not asking again, since PCA may have issued a certificate", what, now.Sub(a.sent).Truncate(time.Second))
	}
	validity, err := c.validity(req.Validity, now)
	if err != nil {
		return nil, ca.Permanentf("%s: %w", what, err)
	}
	template := c.template
	if req.TemplateName != "" {
		template = templateFor(req.TemplateName, "")
	}
	a := &attempt{sent: now, input: &acmpca.IssueCertificateInput{
		CertificateAuthorityArn: aws.String(c.arn),
		Csr:                     pemutil.EncodeCSR(csr.Raw),
		SigningAlgorithm:        c.algorithm,
		Validity:                validity,
		IdempotencyToken:        aws.String(idempotencyToken(req.Key)),
		TemplateArn:             aws.String(template),
	}}
	c.attempts[req.Key] = a
	return a, nil
}

// validity is the lifetime asked for: whole days relative to PCA's clock where it can, the
// exact end otherwise.
func (c *Connector) validity(v time.Duration, now time.Time) (*types.Validity, error) {
	if c.maxValidity > 0 && (v <= 0 || v > c.maxValidity) {
		v = c.maxValidity
	}
	switch {
	case v <= 0:
		return nil, errors.New("no validity: the profile states none and the connection no maxValidity")
	case v%(24*time.Hour) == 0:
		return &types.Validity{Type: types.ValidityPeriodTypeDays, Value: aws.Int64(int64(v / (24 * time.Hour)))}, nil
	default:
		return &types.Validity{Type: types.ValidityPeriodTypeAbsolute, Value: aws.Int64(now.Add(v).Unix())}, nil
	}
}

// fetch asks for the certificate arn names, which must carry spki; PCA still signing is a
// pending answer.
func (c *Connector) fetch(ctx context.Context, what, arn, key string, spki []byte) (*ca.Issued, error) {
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	out, err := c.client.GetCertificate(cctx, &acmpca.GetCertificateInput{
		CertificateArn:          aws.String(arn),
		CertificateAuthorityArn: aws.String(c.arn),
	})
	var inProgress *types.RequestInProgressException
	if errors.As(err, &inProgress) {
		return nil, &ca.PendingError{Ticket: arn, RetryAfter: pendingRetry, Reason: c.label() + " is still signing " + arn}
	}
	if err != nil {
		return nil, classify(ctx, what+": get "+arn, err)
	}
	leaf, err := pemutil.ParseCertificates([]byte(aws.ToString(out.Certificate)))
	if err != nil || len(leaf) != 1 {
		return nil, ca.Retryable(fmt.Errorf("%s: the certificate PCA returned for %s cannot be used: %v", what, arn, err), 0)
	}
	issued := &ca.Issued{Leaf: leaf[0]}
	if chain := aws.ToString(out.CertificateChain); chain != "" {
		if issued.Chain, err = pemutil.ParseCertificates([]byte(chain)); err != nil {
			return nil, ca.Retryable(fmt.Errorf("%s: the chain PCA returned for %s: %w", what, arn, err), 0)
		}
	}
	authority, err := c.prepare(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	issued.Roots = authority.roots
	if c.pinned != nil {
		issued.Roots = c.pinned
	}
	if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, spki) {
		return nil, ca.Permanentf("%s: PCA returned certificate %s for another key than the CSR's", what, arn)
	}
	c.log.Info("PCA issued certificate", zap.String("connector", c.name), zap.String("key", key), zap.String("certificate_arn", arn),
		zap.String("serial", issued.Leaf.SerialNumber.Text(16)), zap.Time("notAfter", issued.Leaf.NotAfter))
	return issued, nil
}

// authority is what the connector read from the CA: its certificate and the roots above it.
type authority struct {
	cert  *x509.Certificate
	roots *x509.CertPool
}

// prepare reads, once, what issuance needs from the CA: its signing algorithm (unless
// configured) and its certificate and roots (the certificate always, to tell its own
// certificates from others' when revoking).
func (c *Connector) prepare(ctx context.Context) (*authority, error) {
	c.mu.Lock()
	a := c.authority
	c.mu.Unlock()
	if a != nil {
		return a, nil
	}
	return c.readCA(ctx)
}

// readCA reads the signing algorithm (unless known) and the CA certificate and chain.
func (c *Connector) readCA(ctx context.Context) (*authority, error) {
	c.mu.Lock()
	alg := c.algorithm
	c.mu.Unlock()
	if alg == "" {
		cctx, cancel := withTimeout(ctx)
		out, err := c.client.DescribeCertificateAuthority(cctx, &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(c.arn)})
		cancel()
		if err != nil {
			return nil, classify(ctx, "describe the CA", err)
		}
		if cfg := out.CertificateAuthority.CertificateAuthorityConfiguration; cfg != nil {
			alg = cfg.SigningAlgorithm
		}
		if alg == "" {
			return nil, ca.Permanentf("the CA states no signing algorithm; set signingAlgorithm")
		}
		c.mu.Lock()
		c.algorithm = alg
		c.mu.Unlock()
	}
	cctx, cancel := withTimeout(ctx)
	out, err := c.client.GetCertificateAuthorityCertificate(cctx, &acmpca.GetCertificateAuthorityCertificateInput{CertificateAuthorityArn: aws.String(c.arn)})
	cancel()
	if err != nil {
		return nil, classify(ctx, "read the CA certificate", err)
	}
	caCert, err := pemutil.ParseCertificates([]byte(aws.ToString(out.Certificate)))
	if err != nil {
		return nil, ca.Retryable(fmt.Errorf("the CA certificate PCA returned: %w", err), 0)
	}
	// The chain "chains up to the root"; a root CA has none, and is its own root.
	top := caCert[0]
	if chain := aws.ToString(out.CertificateChain); chain != "" {
		certs, err := pemutil.ParseCertificates([]byte(chain))
		if err != nil {
			return nil, ca.Retryable(fmt.Errorf("the CA chain PCA returned: %w", err), 0)
		}
		top = certs[len(certs)-1]
	}
	a := &authority{cert: caCert[0], roots: x509.NewCertPool()}
	a.roots.AddCert(top)
	c.mu.Lock()
	c.authority = a
	c.mu.Unlock()
	return a, nil
}

// Ping reads the CA and its certificate: ACTIVE, and every permission but the one to issue.
func (c *Connector) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: ping: %w", c.label(), err), 0)
	}
	cctx, cancel := withTimeout(ctx)
	out, err := c.client.DescribeCertificateAuthority(cctx, &acmpca.DescribeCertificateAuthorityInput{CertificateAuthorityArn: aws.String(c.arn)})
	cancel()
	if err != nil {
		return classify(ctx, c.label()+": describe the CA", err)
	}
	if st := out.CertificateAuthority.Status; st != types.CertificateAuthorityStatusActive {
		return ca.Permanentf("%s: the CA is %s, not ACTIVE: it cannot issue", c.label(), st)
	}
	if _, err := c.readCA(ctx); err != nil { // afresh: a renewed CA certificate shows here
		return fmt.Errorf("%s: %w", c.label(), err)
	}
	return nil
}

// reasons maps RFC 5280 reasons onto PCA's; PCA has no certificateHold.
var reasons = map[ca.Reason]types.RevocationReason{
	ca.ReasonUnspecified:          types.RevocationReasonUnspecified,
	ca.ReasonKeyCompromise:        types.RevocationReasonKeyCompromise,
	ca.ReasonCACompromise:         types.RevocationReasonCertificateAuthorityCompromise,
	ca.ReasonAffiliationChanged:   types.RevocationReasonAffiliationChanged,
	ca.ReasonSuperseded:           types.RevocationReasonSuperseded,
	ca.ReasonCessationOfOperation: types.RevocationReasonCessationOfOperation,
	ca.ReasonPrivilegeWithdrawn:   types.RevocationReasonPrivilegeWithdrawn,
	ca.ReasonAACompromise:         types.RevocationReasonAACompromise,
}

// Revoke revokes a certificate of this CA by its serial number. A certificate given with the
// request must have been signed by this CA; one already revoked is left as it is.
func (c *Connector) Revoke(ctx context.Context, req *ca.RevokeRequest) error {
	if req == nil || req.Serial == nil {
		return ca.Permanentf("%s: revoke: no serial number", c.label())
	}
	what := fmt.Sprintf("%s: revoke serial %s", c.label(), req.Serial.Text(16))
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	reason, ok := reasons[req.Reason]
	if !ok {
		return ca.Permanentf("%s: AWS Private CA has no revocation reason %s", what, req.Reason)
	}
	if req.Certificate != nil {
		authority, err := c.prepare(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if req.Certificate.CheckSignatureFrom(authority.cert) != nil || req.Certificate.SerialNumber.Cmp(req.Serial) != 0 {
			return ca.Permanentf("%s: the certificate was not issued by %s", what, c.arn)
		}
	}
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := c.client.RevokeCertificate(cctx, &acmpca.RevokeCertificateInput{
		CertificateAuthorityArn: aws.String(c.arn),
		CertificateSerial:       aws.String(colonHex(req.Serial)),
		RevocationReason:        reason,
	})
	var done *types.RequestAlreadyProcessedException
	if errors.As(err, &done) {
		return nil // revoked before: a retry after a lost answer
	}
	if err != nil {
		return classify(ctx, what, err)
	}
	c.log.Info("PCA revoked certificate", zap.String("connector", c.name), zap.String("serial", req.Serial.Text(16)),
		zap.Stringer("reason", req.Reason))
	return nil
}

// colonHex writes a serial number as openssl prints it and PCA's examples take it: the bytes
// of its encoding in lower-case hex, separated by colons.
func colonHex(n *big.Int) string {
	b := n.Bytes()
	if len(b) == 0 {
		b = []byte{0}
	}
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}

// idempotencyToken is the token for a request key: one token per key, in the 36 characters
// PCA allows.
func idempotencyToken(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, callTimeout)
}

// label names the connector in messages.
func (c *Connector) label() string {
	if c.name == "" {
		return "AWS Private CA"
	}
	return "AWS Private CA " + c.name
}
