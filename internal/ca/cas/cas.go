// Package cas connects the adapter to Google Cloud Certificate Authority Service (CAS) through
// Google's Go SDK (cloud.google.com/go/security/privateca/apiv1).
//
// Each request becomes one CreateCertificate call on a CA pool: the device's CSR as pem_csr, or,
// for Verified Access, a certificate config around the bare public key. Both identifiers come
// from the request key (the process name): request_id, a UUID, makes a retried call return the
// first call's certificate for the 60 minutes CAS remembers it, and certificate_id names the
// certificate resource, so that Recover, a repeat after that window and Revoke find what this
// connection issued for the key. DevOps-tier pools keep no certificates: there the connector
// issues, but can neither recover nor revoke.
//
// It registers the connector type "cas". Settings (under caConnections.<name>):
//
//	caPool                projects/P/locations/L/caPools/POOL (required)
//	certificateAuthority  optional: the ID of the CA in the pool that issues
//	certificateTemplate   optional: a template ID in the pool's project and location, or its
//	                      full name; a profile's templateName overrides it
//	maxLifetime           optional: the longest lifetime asked for (default: the profile's validity)
//	credentialsFile       optional: a service-account key; default Application Default Credentials
//	endpoint              optional: host:port of the API (Private Service Connect)
//	caCertsFile           optional: PEM roots the certificates chain to, instead of FetchCaCerts
//
// Nothing is fetched at construction. The first call reads the pool (its tier) and, without
// caCertsFile, its CA certificates, which are the roots the engine checks every certificate
// against; a certificate from a CA added to the pool later makes the connector read them again.
package cas

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	privateca "cloud.google.com/go/security/privateca/apiv1"
	"cloud.google.com/go/security/privateca/apiv1/privatecapb"
	"github.com/google/uuid"
	"go.uber.org/zap"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "cas"

func init() {
	ca.RegisterNew(Type, func(s ca.Settings, env ca.Env) (*Connector, error) { return New(s, env, Options{}) })
	ca.RegisterCheck(Type, Check)
}

// callTimeout is a backstop for one RPC. The engine bounds each call with the connection's own
// caConnections.<name>.timeout through the context, which is normally shorter.
const callTimeout = 2 * time.Minute

// maxMessage bounds the server's text inside an error: failure messages reach a user's device
// and are at most 500 bytes in all.
const maxMessage = 300

// settings is the decoded caConnections.<name> block.
type settings struct {
	CAPool               string        `mapstructure:"caPool"`
	CertificateAuthority string        `mapstructure:"certificateAuthority"`
	CertificateTemplate  string        `mapstructure:"certificateTemplate"`
	MaxLifetime          time.Duration `mapstructure:"maxLifetime"`
	CredentialsFile      string        `mapstructure:"credentialsFile"`
	Endpoint             string        `mapstructure:"endpoint"`
	CACertsFile          string        `mapstructure:"caCertsFile"`
}

// Options are the dependencies New takes besides the settings.
type Options struct {
	// ClientOptions are added after those the settings imply (tests reach a fake server with
	// an endpoint, a TLS root and a token source of their own).
	ClientOptions []option.ClientOption
}

// Connector issues certificates from one CAS CA pool. It is safe for concurrent use.
type Connector struct {
	name     string
	log      *zap.Logger
	pool     string // projects/P/locations/L/caPools/POOL
	location string // projects/P/locations/L
	issuer   string // issuing CA ID, "" to let CAS choose
	template string // full template name, "" for none
	lifetime time.Duration
	client   *privateca.CertificateAuthorityClient

	pinned *x509.CertPool // from caCertsFile; nil to fetch the pool's

	mu    sync.Mutex
	tier  privatecapb.CaPool_Tier // TIER_UNSPECIFIED until the pool was read
	roots *x509.CertPool          // the pool's CA roots as last fetched
}

var (
	_ ca.Connector       = (*Connector)(nil)
	_ ca.Recoverer       = (*Connector)(nil)
	_ ca.Pinger          = (*Connector)(nil)
	_ ca.Revoker         = (*Connector)(nil)
	_ ca.PublicKeyIssuer = (*Connector)(nil)
)

var (
	poolName     = regexp.MustCompile(`^projects/([^/]+)/locations/([^/]+)/caPools/([a-zA-Z0-9_-]{1,63})$`)
	resourceID   = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	templateName = regexp.MustCompile(`^projects/[^/]+/locations/[^/]+/certificateTemplates/[a-zA-Z0-9_-]{1,63}$`)
)

// New builds the connector from its settings. It reads the local files (credentials, roots) so
// that a wrong path stops the adapter at startup, and opens the gRPC client, which connects on
// the first call: a CA that cannot be reached at startup only delays issuance.
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
		name:     env.Name,
		log:      log,
		pool:     s.CAPool,
		location: s.CAPool[:strings.Index(s.CAPool, "/caPools/")],
		issuer:   s.CertificateAuthority,
		lifetime: s.MaxLifetime,
	}
	c.template = c.templateName(s.CertificateTemplate)
	var (
		opts []option.ClientOption
		errs []error
	)
	if s.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(s.Endpoint))
	}
	if s.CredentialsFile != "" {
		b, err := os.ReadFile(env.Path(s.CredentialsFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("credentialsFile", "%q: %w", s.CredentialsFile, err))
		} else {
			opts = append(opts, option.WithAuthCredentialsJSON(option.ServiceAccount, b))
		}
	}
	if s.CACertsFile != "" {
		certs, err := pemutil.ReadCertificates(env.Path(s.CACertsFile))
		if err != nil {
			errs = append(errs, ca.SettingErrorf("caCertsFile", "%q: %w", s.CACertsFile, err))
		} else {
			c.pinned = x509.NewCertPool()
			for _, cert := range certs {
				c.pinned.AddCert(cert)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	opts = append(opts, option.WithUserAgent("certprov-adapter"))
	opts = append(opts, o.ClientOptions...)
	client, err := privateca.NewCertificateAuthorityClient(context.Background(), opts...)
	if err != nil {
		key := "credentialsFile"
		if s.CredentialsFile == "" {
			err = fmt.Errorf("no credentials: %w (set credentialsFile, or give the adapter Application Default Credentials, e.g. workload identity)", err)
		}
		return nil, ca.SettingErrorf(key, "CAS client: %w", err)
	}
	// The engine retries with backoff, honours the server's retry hints and journals each
	// attempt; the SDK's own retries inside one call would only hide the outage from it.
	client.CallOptions = &privateca.CertificateAuthorityCallOptions{}
	c.client = client
	return c, nil
}

// Check validates settings without reading any file or contacting CAS (ca.Check).
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
	case s.CAPool == "":
		errs = append(errs, ca.SettingErrorf("caPool", "required: the pool's resource name, projects/PROJECT/locations/LOCATION/caPools/POOL"))
	case !poolName.MatchString(s.CAPool):
		errs = append(errs, ca.SettingErrorf("caPool", "%q is not a CA pool name: write projects/PROJECT/locations/LOCATION/caPools/POOL", s.CAPool))
	}
	if s.CertificateAuthority != "" && !resourceID.MatchString(s.CertificateAuthority) {
		errs = append(errs, ca.SettingErrorf("certificateAuthority", "%q: write the CA's ID within the pool (letters, digits, - and _), not its full name", s.CertificateAuthority))
	}
	if t := s.CertificateTemplate; t != "" && !resourceID.MatchString(t) && !templateName.MatchString(t) {
		errs = append(errs, ca.SettingErrorf("certificateTemplate", "%q: write a template ID, or projects/PROJECT/locations/LOCATION/certificateTemplates/ID", t))
	}
	if s.MaxLifetime < 0 || (s.MaxLifetime > 0 && s.MaxLifetime < time.Second) {
		errs = append(errs, ca.SettingErrorf("maxLifetime", "must be at least 1s"))
	}
	if s.Endpoint != "" && (strings.Contains(s.Endpoint, "/") || !strings.Contains(s.Endpoint, ":")) {
		errs = append(errs, ca.SettingErrorf("endpoint", "%q: write host:port (e.g. privateca.googleapis.com:443), without a scheme", s.Endpoint))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &s, nil
}

// templateName resolves a template ID against the pool's project and location.
func (c *Connector) templateName(t string) string {
	if t == "" || strings.Contains(t, "/") {
		return t
	}
	return c.location + "/certificateTemplates/" + t
}

// Close closes the gRPC connection (io.Closer: a reload replaces the connector).
func (c *Connector) Close() error { return c.client.Close() }

// requestNamespace is the UUID namespace request IDs are made in (RFC 9562 version 5), so that
// one request key always yields one request ID.
var requestNamespace = uuid.MustParse("5b0e3c84-6a5f-4f5e-9d8e-2f3c7a4b9c61")

// certificateID is the certificate resource ID for a request key: readable as the adapter's,
// unique per key, within CAS's [a-zA-Z0-9_-]{1,63}.
func certificateID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "certprov-" + hex.EncodeToString(sum[:16])
}

// requestID is the CAS request_id for an operation on a request key: a UUID, never the zero one.
func requestID(op, key string) string {
	return uuid.NewSHA1(requestNamespace, []byte(op+"\x00"+key)).String()
}

// certificateName is the resource name of the certificate issued for key.
func (c *Connector) certificateName(key string) string {
	return c.pool + "/certificates/" + certificateID(key)
}

// Issue asks CAS to sign the request's CSR. A repeated call with the same key returns the
// certificate the first one issued.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("%s: no request", c.label())
	}
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: issue %s: %w", c.label(), req.Key, err), 0)
	}
	// CAS would refuse a bad CSR too, but only after a round trip.
	csr, err := req.CheckedCSR()
	if err != nil {
		return nil, fmt.Errorf("%s: issue %s: %w", c.label(), req.Key, err)
	}
	cert := &privatecapb.Certificate{
		CertificateConfig: &privatecapb.Certificate_PemCsr{PemCsr: string(pemutil.EncodeCSR(csr.Raw))},
	}
	return c.create(ctx, req.Key, cert, req.Validity, req.TemplateName, csr.RawSubjectPublicKeyInfo)
}

// IssueForKey asks CAS to certify a bare public key (Verified Access), with the subject, names
// and usages of the request as the certificate's config.
func (c *Connector) IssueForKey(ctx context.Context, req *ca.KeyRequest) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("%s: no request", c.label())
	}
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: issue %s: %w", c.label(), req.Key, err), 0)
	}
	config, spki, err := keyConfig(req)
	if err != nil {
		return nil, ca.Permanentf("%s: issue %s: %w", c.label(), req.Key, err)
	}
	cert := &privatecapb.Certificate{CertificateConfig: &privatecapb.Certificate_Config{Config: config}}
	return c.create(ctx, req.Key, cert, req.Validity, req.TemplateName, spki)
}

// create issues cert for key and returns it with its chain and roots, checking it carries spki.
func (c *Connector) create(ctx context.Context, key string, cert *privatecapb.Certificate, validity time.Duration, template string, spki []byte) (*ca.Issued, error) {
	what := fmt.Sprintf("%s: issue %s", c.label(), key)
	if _, err := c.session(ctx); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	lifetime := validity
	if c.lifetime > 0 && (lifetime <= 0 || lifetime > c.lifetime) {
		lifetime = c.lifetime
	}
	if lifetime <= 0 {
		return nil, ca.Permanentf("%s: no lifetime: the profile states no validity and the connection no maxLifetime", what)
	}
	cert.Lifetime = durationpb.New(lifetime.Truncate(time.Second))
	cert.CertificateTemplate = c.template
	if template != "" {
		cert.CertificateTemplate = c.templateName(template)
	}
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	got, err := c.client.CreateCertificate(cctx, &privatecapb.CreateCertificateRequest{
		Parent:                        c.pool,
		CertificateId:                 certificateID(key),
		Certificate:                   cert,
		RequestId:                     requestID("create", key),
		IssuingCertificateAuthorityId: c.issuer,
	})
	if status.Code(err) == codes.AlreadyExists {
		// Issued for this key before CAS's request_id window: the resource is still there.
		c.log.Info("CAS holds a certificate for this key already; using it",
			zap.String("connector", c.name), zap.String("key", key))
		cctx, cancel := withTimeout(ctx)
		defer cancel()
		got, err = c.client.GetCertificate(cctx, &privatecapb.GetCertificateRequest{Name: c.certificateName(key)})
	}
	if err != nil {
		return nil, classify(ctx, what, err)
	}
	if got.GetRevocationDetails() != nil {
		return nil, ca.Permanentf("%s: CAS holds certificate %s for this request key, revoked since (%s)",
			what, got.GetName(), got.GetRevocationDetails().GetRevocationState())
	}
	issued, err := c.issued(ctx, got)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, spki) {
		return nil, ca.Permanentf("%s: CAS holds certificate %s for this request key, for another public key than this request's",
			what, got.GetName())
	}
	c.log.Info("CAS issued certificate",
		zap.String("connector", c.name), zap.String("key", key), zap.String("certificate", got.GetName()),
		zap.String("serial", issued.Leaf.SerialNumber.Text(16)), zap.Time("notAfter", issued.Leaf.NotAfter))
	return issued, nil
}

// Recover returns the certificate CAS holds under the key's certificate ID, or nil when there
// is none (the call that was interrupted never reached CAS, or CAS refused it).
func (c *Connector) Recover(ctx context.Context, key string) (*ca.Issued, error) {
	what := fmt.Sprintf("%s: look up %s", c.label(), key)
	if err := ctx.Err(); err != nil {
		return nil, ca.Retryable(fmt.Errorf("%s: %w", what, err), 0)
	}
	tier, err := c.session(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if tier == privatecapb.CaPool_DEVOPS {
		return nil, ca.Permanentf("%s: pool %s is DevOps tier, which keeps no certificates, so what an interrupted request issued cannot be known (use an Enterprise-tier pool to recover)", what, c.pool)
	}
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	got, err := c.client.GetCertificate(cctx, &privatecapb.GetCertificateRequest{Name: c.certificateName(key)})
	if status.Code(err) == codes.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, classify(ctx, what, err)
	}
	if got.GetRevocationDetails() != nil {
		return nil, ca.Permanentf("%s: CAS issued certificate %s for this request, but it has been revoked since (%s)",
			what, got.GetName(), got.GetRevocationDetails().GetRevocationState())
	}
	return c.issued(ctx, got)
}

// Ping reads the pool, the issuing CA (enabled), the template and the pool's CA certificates:
// everything an issuance needs except the permission to create.
func (c *Connector) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return ca.Retryable(fmt.Errorf("%s: ping: %w", c.label(), err), 0)
	}
	if _, err := c.readPool(ctx); err != nil { // afresh: a new CA in the pool shows here
		return fmt.Errorf("%s: %w", c.label(), err)
	}
	if c.issuer != "" {
		name := c.pool + "/certificateAuthorities/" + c.issuer
		cctx, cancel := withTimeout(ctx)
		defer cancel()
		got, err := c.client.GetCertificateAuthority(cctx, &privatecapb.GetCertificateAuthorityRequest{Name: name})
		if err != nil {
			return classify(ctx, c.label()+": read certificateAuthority "+c.issuer, err)
		}
		if got.GetState() != privatecapb.CertificateAuthority_ENABLED {
			return ca.Permanentf("%s: certificateAuthority %s is %s, not ENABLED: it cannot issue", c.label(), c.issuer, got.GetState())
		}
	}
	if c.template != "" {
		cctx, cancel := withTimeout(ctx)
		defer cancel()
		if _, err := c.client.GetCertificateTemplate(cctx, &privatecapb.GetCertificateTemplateRequest{Name: c.template}); err != nil {
			return classify(ctx, c.label()+": read certificateTemplate "+c.template, err)
		}
	}
	return nil
}

// session reads what issuance needs once: the pool's tier and, unless pinned, its roots.
func (c *Connector) session(ctx context.Context) (privatecapb.CaPool_Tier, error) {
	c.mu.Lock()
	tier := c.tier
	c.mu.Unlock()
	if tier != privatecapb.CaPool_TIER_UNSPECIFIED {
		return tier, nil
	}
	return c.readPool(ctx)
}

// readPool reads the pool's tier and, unless pinned, its roots.
func (c *Connector) readPool(ctx context.Context) (privatecapb.CaPool_Tier, error) {
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	pool, err := c.client.GetCaPool(cctx, &privatecapb.GetCaPoolRequest{Name: c.pool})
	if err != nil {
		return 0, classify(ctx, "read caPool "+c.pool, err)
	}
	if c.pinned == nil {
		if _, err := c.fetchRoots(ctx); err != nil {
			return 0, err
		}
	}
	c.mu.Lock()
	c.tier = pool.GetTier()
	c.mu.Unlock()
	return pool.GetTier(), nil
}

// fetchRoots reads the CA certificates of the pool and keeps the top of each chain as a root.
// They come over the authenticated API channel, never from an issuance answer.
func (c *Connector) fetchRoots(ctx context.Context) (*x509.CertPool, error) {
	cctx, cancel := withTimeout(ctx)
	defer cancel()
	resp, err := c.client.FetchCaCerts(cctx, &privatecapb.FetchCaCertsRequest{CaPool: c.pool})
	if err != nil {
		return nil, classify(ctx, "fetch the CA certificates of "+c.pool, err)
	}
	roots := x509.NewCertPool()
	n := 0
	for i, chain := range resp.GetCaCerts() {
		certs := chain.GetCertificates()
		if len(certs) == 0 {
			continue
		}
		root, err := parseCertificates(certs[len(certs)-1])
		if err != nil {
			return nil, ca.Retryable(fmt.Errorf("CA certificates of %s: chain %d: %w", c.pool, i, err), 0)
		}
		for _, r := range root {
			roots.AddCert(r)
			n++
		}
	}
	if n == 0 {
		return nil, ca.Permanentf("pool %s has no CA certificates (no enabled CA?)", c.pool)
	}
	c.mu.Lock()
	c.roots = roots
	c.mu.Unlock()
	return roots, nil
}

// issued turns a Certificate resource into the leaf, its chain and the connection's roots.
func (c *Connector) issued(ctx context.Context, got *privatecapb.Certificate) (*ca.Issued, error) {
	leaf, err := parseCertificates(got.GetPemCertificate())
	if err != nil || len(leaf) != 1 {
		if err == nil {
			err = fmt.Errorf("%d certificates where one was expected", len(leaf))
		}
		return nil, ca.Retryable(fmt.Errorf("CAS answer: pem_certificate of %s: %w", got.GetName(), err), 0)
	}
	issued := &ca.Issued{Leaf: leaf[0]}
	for i, p := range got.GetPemCertificateChain() {
		certs, err := parseCertificates(p)
		if err != nil {
			return nil, ca.Retryable(fmt.Errorf("CAS answer: pem_certificate_chain[%d] of %s: %w", i, got.GetName(), err), 0)
		}
		issued.Chain = append(issued.Chain, certs...)
	}
	if c.pinned != nil {
		issued.Roots = c.pinned
		return issued, nil
	}
	c.mu.Lock()
	roots := c.roots
	c.mu.Unlock()
	if roots == nil || !chainsTo(issued, roots) {
		// A CA added to the pool since the roots were read: read them again, from FetchCaCerts.
		if roots, err = c.fetchRoots(ctx); err != nil {
			return nil, err
		}
	}
	issued.Roots = roots
	return issued, nil
}

func chainsTo(issued *ca.Issued, roots *x509.CertPool) bool {
	inter := x509.NewCertPool()
	for _, cert := range issued.Chain {
		inter.AddCert(cert)
	}
	_, err := issued.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		CurrentTime: issued.Leaf.NotBefore.Add(time.Second)})
	return err == nil
}

// parseCertificates reads the PEM certificates of s.
func parseCertificates(s string) ([]*x509.Certificate, error) {
	return pemutil.ParseCertificates([]byte(s))
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
		return "CAS"
	}
	return "CAS " + c.name
}
