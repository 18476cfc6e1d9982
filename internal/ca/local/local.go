// Package local is the built-in CA: it signs device certificates itself with an issuer key and
// certificate read from files. It needs no other service, which makes it the connector for demos,
// tests and small labs; production deployments normally point the adapter at their own CA.
//
// It registers the connector type "local". Settings (under caConnections.<name>):
//
//	certificateFile  PEM issuer certificate (further certificates in the file are returned as chain)
//	keyFile          PEM issuer key: RSA, ECDSA or Ed25519; PKCS#1, SEC1 or PKCS#8, unencrypted
//	chainFile        optional PEM intermediates returned with every certificate
//	maxValidity      longest certificate lifetime, default 8760h
//	backdate         how far notBefore lies before now, for clock skew, default 1m
//	ledgerFile       optional: one JSON line per issued certificate, indexed beside it
//	                 (ledgerFile + ".index"), so that Recover finds certificates across restarts
//	crlFile          optional: the CRL the CA publishes, the record of what Revoke revoked;
//	                 signed again when half of crlValidity (default 168h) has passed
//	crlFormat        der (default) or pem
//	crlDistributionPoints  optional URLs put into every certificate, where crlFile is served
//
// Relative paths resolve against the configuration file's directory.
package local

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// Type is the connector type name used in caConnections.<name>.type.
const Type = "local"

func init() {
	ca.RegisterNew(Type, New)
	ca.RegisterCheck(Type, Check)
}

// Check validates settings without reading the issuer files (ca.Check).
func Check(raw ca.Settings) error {
	_, err := decodeSettings(raw)
	return err
}

// Defaults for optional settings.
const (
	DefaultMaxValidity = 8760 * time.Hour
	DefaultBackdate    = time.Minute
)

// settings is the decoded caConnections.<name> block. Durations are pointers so that an explicit
// zero backdate can be told apart from an absent one.
type settings struct {
	CertificateFile string         `mapstructure:"certificateFile"`
	KeyFile         string         `mapstructure:"keyFile"`
	ChainFile       string         `mapstructure:"chainFile"`
	MaxValidity     *time.Duration `mapstructure:"maxValidity"`
	Backdate        *time.Duration `mapstructure:"backdate"`
	LedgerFile      string         `mapstructure:"ledgerFile"`

	CRLFile               string         `mapstructure:"crlFile"`
	CRLFormat             string         `mapstructure:"crlFormat"`
	CRLValidity           *time.Duration `mapstructure:"crlValidity"`
	CRLDistributionPoints []string       `mapstructure:"crlDistributionPoints"`
}

func decodeSettings(raw ca.Settings) (*settings, error) {
	var s settings
	if err := ca.Decode(raw, &s); err != nil {
		return nil, err
	}
	var errs []error
	if s.CertificateFile == "" {
		errs = append(errs, ca.SettingErrorf("certificateFile", "required"))
	}
	if s.KeyFile == "" {
		errs = append(errs, ca.SettingErrorf("keyFile", "required"))
	}
	if s.MaxValidity == nil {
		d := DefaultMaxValidity
		s.MaxValidity = &d
	} else if *s.MaxValidity <= 0 {
		errs = append(errs, ca.SettingErrorf("maxValidity", "%v: must be positive", *s.MaxValidity))
	}
	if s.Backdate == nil {
		d := DefaultBackdate
		s.Backdate = &d
	} else if *s.Backdate < 0 {
		errs = append(errs, ca.SettingErrorf("backdate", "%v: must not be negative", *s.Backdate))
	}
	errs = append(errs, s.checkCRL()...)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &s, nil
}

// checkCRL checks the CRL settings and fills in their defaults.
func (s *settings) checkCRL() []error {
	var errs []error
	switch s.CRLFormat {
	case "":
		s.CRLFormat = CRLFormatDER
	case CRLFormatDER, CRLFormatPEM:
	default:
		errs = append(errs, ca.SettingErrorf("crlFormat", "%q: want %s or %s", s.CRLFormat, CRLFormatDER, CRLFormatPEM))
	}
	if s.CRLValidity == nil {
		d := DefaultCRLValidity
		s.CRLValidity = &d
	} else if *s.CRLValidity < 2*time.Hour {
		errs = append(errs, ca.SettingErrorf("crlValidity", "%v: must be at least 2h (the CRL is signed again half-way through it)", *s.CRLValidity))
	}
	if s.CRLFile == "" && len(s.CRLDistributionPoints) > 0 {
		// Certificates would point relying parties at a CRL nobody publishes.
		errs = append(errs, ca.SettingErrorf("crlDistributionPoints", "needs crlFile (the CRL this CA publishes there)"))
	}
	for i, raw := range s.CRLDistributionPoints {
		key := fmt.Sprintf("crlDistributionPoints[%d]", i)
		u, err := ca.ParseURL(raw)
		switch {
		case err != nil:
			errs = append(errs, ca.SettingErrorf(key, "%w", err))
		case u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ldap":
			errs = append(errs, ca.SettingErrorf(key, "%q: want an http (or https, ldap) URL where crlFile is served", raw))
		case u.Host == "" || u.User != nil:
			errs = append(errs, ca.SettingErrorf(key, "%q: want an absolute URL with a host and no credentials", raw))
		}
	}
	return errs
}

// Connector is the built-in CA. It is safe for concurrent use.
type Connector struct {
	name        string
	log         *zap.Logger
	cert        *x509.Certificate
	signer      crypto.Signer
	chain       []*x509.Certificate // returned with every leaf: the issuer first, then intermediates
	roots       *x509.CertPool      // the issuer itself: what this connection trusts its leaves by
	authKeyID   []byte
	maxValidity time.Duration
	backdate    time.Duration
	cdps        []string         // crlDistributionPoints, in every leaf
	now         func() time.Time // swapped in tests to move the clock

	issuances issuances
	total     atomic.Int64

	crl       *crl          // nil without crlFile
	stopCRL   chan struct{} // closed by Close: ends the refresh loop
	crlDone   chan struct{} // closed when the refresh loop ended
	closeOnce sync.Once
}

var (
	_ ca.Connector = (*Connector)(nil)
	_ ca.Pinger    = (*Connector)(nil)
	_ ca.Recoverer = (*Connector)(nil)
	_ ca.Revoker   = (*Connector)(nil)
	_ io.Closer    = (*Connector)(nil)

	_ ca.PublicKeyIssuer   = (*Connector)(nil)
	_ ca.CertificateHolder = (*Connector)(nil)
)

// New builds the connector from its settings. It reads the issuer files once, and refuses an
// issuer whose key does not match its certificate or whose certificate is not a CA, so that such
// mistakes show at startup rather than on the first device.
func New(raw ca.Settings, env ca.Env) (*Connector, error) {
	s, err := decodeSettings(raw)
	if err != nil {
		return nil, err
	}
	log := env.Logger
	if log == nil {
		log = zap.NewNop()
	}
	path := env.Path
	certs, err := readCertificates(path(s.CertificateFile))
	if err != nil {
		return nil, ca.SettingErrorf("certificateFile", "%q: %w", s.CertificateFile, err)
	}
	signer, err := readPrivateKey(path(s.KeyFile), log)
	if err != nil {
		return nil, ca.SettingErrorf("keyFile", "%q: %w", s.KeyFile, err)
	}
	issuer := certs[0]
	if err := checkIssuer(issuer, signer); err != nil {
		return nil, ca.SettingErrorf("certificateFile", "%q with keyFile %q: %w", s.CertificateFile, s.KeyFile, err)
	}
	chain := certs
	if s.ChainFile != "" {
		more, err := readCertificates(path(s.ChainFile))
		if err != nil {
			return nil, ca.SettingErrorf("chainFile", "%q: %w", s.ChainFile, err)
		}
		for _, c := range more {
			if !containsCert(chain, c) {
				chain = append(chain, c)
			}
		}
	}
	authKeyID, err := authorityKeyID(issuer)
	if err != nil {
		return nil, ca.SettingErrorf("certificateFile", "%q: %w", s.CertificateFile, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(issuer)
	var record issuances = newMemoryIssuances()
	if s.LedgerFile != "" {
		l, err := openLedger(context.Background(), path(s.LedgerFile), log)
		if err != nil {
			return nil, ca.SettingErrorf("ledgerFile", "%q: %w", s.LedgerFile, err)
		}
		record = l
	}
	c := &Connector{
		name:        env.Name,
		log:         log,
		cert:        issuer,
		signer:      signer,
		chain:       chain,
		roots:       roots,
		authKeyID:   authKeyID,
		maxValidity: *s.MaxValidity,
		backdate:    *s.Backdate,
		cdps:        slices.Clone(s.CRLDistributionPoints),
		now:         time.Now,
		issuances:   record,
	}
	if s.CRLFile != "" {
		if err := c.openCRL(s, path(s.CRLFile)); err != nil {
			_ = record.close()
			return nil, err
		}
	}
	return c, nil
}

// openCRL publishes the CRL now when it is due (so that a wrong crlFile shows at startup) and
// starts the loop that signs it again before relying parties would hold an expired one.
func (c *Connector) openCRL(s *settings, file string) error {
	iss, err := crlIssuer(c.cert, c.authKeyID)
	if err != nil {
		return ca.SettingErrorf("crlFile", "%q: %w", s.CRLFile, err)
	}
	c.crl = &crl{path: file, pem: s.CRLFormat == CRLFormatPEM, validity: *s.CRLValidity, issuer: iss, signer: c.signer, log: c.log}
	next, err := c.crl.refresh(c.now())
	if err != nil {
		return ca.SettingErrorf("crlFile", "%q: %w", s.CRLFile, err)
	}
	c.stopCRL, c.crlDone = make(chan struct{}), make(chan struct{})
	go c.refreshCRL(next)
	return nil
}

// crlRetry is how soon a CRL that could not be signed again is tried again.
const crlRetry = time.Minute

// refreshCRL signs the CRL again each time it is due, until Close.
func (c *Connector) refreshCRL(next time.Time) {
	defer close(c.crlDone)
	for {
		timer := time.NewTimer(max(time.Until(next), time.Second))
		select {
		case <-c.stopCRL:
			timer.Stop()
			return
		case <-timer.C:
		}
		n, err := c.crl.refresh(c.now())
		if err != nil {
			c.log.Error("CRL not signed again; retrying", zap.String("connector", c.name), zap.String("path", c.crl.path),
				zap.Duration("retry_in", crlRetry), zap.Error(err))
			n = c.now().Add(crlRetry)
		}
		next = n
	}
}

// Close stops publishing the CRL and releases the ledger's index. The connector must not be
// used afterwards.
func (c *Connector) Close() error {
	var err error
	c.closeOnce.Do(func() {
		if c.stopCRL != nil {
			close(c.stopCRL)
			<-c.crlDone
		}
		err = c.issuances.close()
	})
	return err
}

// Recover returns the last certificate this CA issued for key, (nil, nil) when there is none.
// With a ledgerFile it looks in the ledger, so it finds certificates issued before a restart and
// by other processes sharing the file (a replica that died). Without one, certificates issued
// before a restart are unknown, so configure one wherever exactly-once issuance matters.
func (c *Connector) Recover(ctx context.Context, key string) (*ca.Issued, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("recover certificate for %s: %w", key, err)
	}
	leaf, err := c.issuances.last(ctx, key)
	if err != nil {
		return nil, ca.Retryable(fmt.Errorf("recover certificate for %s: %w", key, err), 0)
	}
	if leaf == nil {
		return nil, nil
	}
	return &ca.Issued{Leaf: leaf, Chain: c.chain, Roots: c.roots}, nil
}

// checkIssuer makes sure the pair can sign certificates that verify.
func checkIssuer(cert *x509.Certificate, signer crypto.Signer) error {
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("the key does not match the certificate (their public keys differ)")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return fmt.Errorf("certificate %q is not a CA certificate (basicConstraints cA is not set)", cert.Subject)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("certificate %q may not sign certificates (keyUsage lacks keyCertSign)", cert.Subject)
	}
	return nil
}

// authorityKeyID is the issuer's subjectKeyIdentifier; for an issuer without one (old roots) it is
// derived from the issuer key, so that leaves still carry an authorityKeyIdentifier.
func authorityKeyID(issuer *x509.Certificate) ([]byte, error) {
	if len(issuer.SubjectKeyId) > 0 {
		return issuer.SubjectKeyId, nil
	}
	return keyID(issuer.RawSubjectPublicKeyInfo)
}

// keyID is the RFC 5280 4.2.1.2 method 1 key identifier: SHA-1 of the subjectPublicKey bits.
func keyID(spki []byte) ([]byte, error) {
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("parse issuer public key: %w", err)
	}
	sum := sha1.Sum(info.PublicKey.Bytes)
	return sum[:], nil
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range certs {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// Certificate returns the issuing CA certificate.
func (c *Connector) Certificate() *x509.Certificate { return c.cert }

// Issue signs a certificate for the CSR's key. The subject, the subjectAltName extension (as
// requested, so UPN otherNames survive), key usage and extended key usage are copied from the CSR;
// other requested extensions are ignored, and a CSR asking for CA key usages is refused. The
// lifetime is the shorter of req.Validity and maxValidity, clipped to the CA's own validity.
func (c *Connector) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("local CA: no request")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", req.Key, err)
	}
	csr, err := req.CheckedCSR()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", req.Key, err)
	}
	exts, err := requestedExtensions(csr)
	if err != nil {
		return nil, ca.Permanentf("issue certificate for %s: %w", req.Key, err)
	}

	tmpl := &x509.Certificate{
		RawSubject:      csr.RawSubject,
		ExtraExtensions: exts,
	}
	leaf, chain, err := c.sign(req.Key, tmpl, csr.PublicKey, req.Validity)
	if err != nil {
		return nil, err
	}
	// crypto/x509 re-encodes the public key; a device compares SPKIs byte for byte.
	if !bytes.Equal(leaf.RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo) {
		return nil, ca.Permanentf("sign certificate for %s: the device key's encoding cannot be reproduced", req.Key)
	}
	if err := c.record(ctx, req.Key, leaf, c.now()); err != nil {
		return nil, ca.Retryable(fmt.Errorf("sign certificate for %s: %w", req.Key, err), 0)
	}
	c.logIssued(req.Key, leaf)
	return &ca.Issued{Leaf: leaf, Chain: chain, Roots: c.roots}, nil
}

// IssueForKey signs a certificate for req.PublicKey with the subject, names and key usages of the
// request, as the adapter rendered them from its profile (ca.PublicKeyIssuer). The key must be
// RSA of at least 2048 bits, ECDSA on P-256, P-384 or P-521, or Ed25519; CA key usages and a
// certificate that names nobody are refused. Lifetime rules are Issue's.
func (c *Connector) IssueForKey(ctx context.Context, req *ca.KeyRequest) (*ca.Issued, error) {
	if req == nil {
		return nil, ca.Permanentf("local CA: no request")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", req.Key, err)
	}
	if err := checkSubjectKey(req.PublicKey); err != nil {
		return nil, ca.Permanentf("issue certificate for %s: %w", req.Key, err)
	}
	if req.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return nil, ca.Permanentf("issue certificate for %s: CA key usages (keyCertSign or cRLSign) requested", req.Key)
	}
	names := len(req.DNSNames) + len(req.EmailAddresses) + len(req.URIs)
	if isEmptyName(req.Subject) && names == 0 {
		return nil, ca.Permanentf("issue certificate for %s: neither a subject nor subject alternative names", req.Key)
	}
	for i, u := range req.URIs {
		if u == nil {
			return nil, ca.Permanentf("issue certificate for %s: URI %d is nil", req.Key, i)
		}
	}
	// crypto/x509 marks the SAN extension critical by itself when the subject is empty
	// (RFC 5280 4.2.1.6).
	tmpl := &x509.Certificate{
		Subject:            req.Subject,
		DNSNames:           slices.Clone(req.DNSNames),
		EmailAddresses:     slices.Clone(req.EmailAddresses),
		URIs:               slices.Clone(req.URIs),
		KeyUsage:           req.KeyUsage,
		ExtKeyUsage:        slices.Clone(req.ExtKeyUsage),
		UnknownExtKeyUsage: slices.Clone(req.UnknownExtKeyUsage),
	}
	leaf, chain, err := c.sign(req.Key, tmpl, req.PublicKey, req.Validity)
	if err != nil {
		return nil, err
	}
	// Never return a certificate for any key but the one asked for.
	if pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(req.PublicKey) {
		return nil, ca.Permanentf("sign certificate for %s: the certificate's key differs from the requested key", req.Key)
	}
	if err := c.record(ctx, req.Key, leaf, c.now()); err != nil {
		return nil, ca.Retryable(fmt.Errorf("sign certificate for %s: %w", req.Key, err), 0)
	}
	c.logIssued(req.Key, leaf)
	return &ca.Issued{Leaf: leaf, Chain: chain, Roots: c.roots}, nil
}

// sign completes tmpl with what every leaf of this CA carries (serial, validity, basic
// constraints, authority key id), signs it for pub and returns the parsed leaf and a copy of the
// chain. It records nothing: the callers check the result first.
func (c *Connector) sign(key string, tmpl *x509.Certificate, pub crypto.PublicKey, requested time.Duration) (*x509.Certificate, []*x509.Certificate, error) {
	notBefore, notAfter, err := c.validity(c.now(), requested)
	if err != nil {
		return nil, nil, ca.Permanentf("issue certificate for %s: %w", key, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: %w", key, err)
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = notBefore
	tmpl.NotAfter = notAfter
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	tmpl.AuthorityKeyId = c.authKeyID
	tmpl.CRLDistributionPoints = c.cdps
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.signer)
	if err != nil {
		return nil, nil, ca.Permanentf("sign certificate for %s: %w", key, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, ca.Permanentf("sign certificate for %s: parse result: %w", key, err)
	}
	chain := make([]*x509.Certificate, len(c.chain))
	copy(chain, c.chain)
	return leaf, chain, nil
}

func (c *Connector) logIssued(key string, leaf *x509.Certificate) {
	c.log.Info("issued certificate",
		zap.String("connector", c.name), zap.String("key", key),
		zap.String("serial", leaf.SerialNumber.Text(16)), zap.Time("notAfter", leaf.NotAfter))
}

// checkSubjectKey accepts the key types and sizes a device certificate may certify.
func checkSubjectKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return errors.New("empty RSA public key")
		}
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits: at least 2048 required", k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return errors.New("empty ECDSA public key")
		}
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Errorf("ECDSA curve %s is not supported (want P-256, P-384 or P-521)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return errors.New("malformed Ed25519 public key")
		}
	case nil:
		return errors.New("no public key")
	default:
		return fmt.Errorf("unsupported public key type %T", pub)
	}
	return nil
}

// isEmptyName reports whether a subject has no attribute at all.
func isEmptyName(n pkix.Name) bool {
	return len(n.ToRDNSequence()) == 0
}

// validity computes the leaf's lifetime.
func (c *Connector) validity(now time.Time, requested time.Duration) (notBefore, notAfter time.Time, err error) {
	if now.After(c.cert.NotAfter) {
		return notBefore, notAfter, fmt.Errorf("CA certificate %q expired at %s", c.cert.Subject, c.cert.NotAfter.Format(time.RFC3339))
	}
	if now.Before(c.cert.NotBefore) {
		return notBefore, notAfter, fmt.Errorf("CA certificate %q is not valid before %s", c.cert.Subject, c.cert.NotBefore.Format(time.RFC3339))
	}
	lifetime := requested
	if lifetime <= 0 || lifetime > c.maxValidity {
		lifetime = c.maxValidity
	}
	notBefore = now.Add(-c.backdate)
	if notBefore.Before(c.cert.NotBefore) {
		notBefore = c.cert.NotBefore
	}
	notAfter = notBefore.Add(lifetime)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	return notBefore, notAfter, nil
}

// randomSerial returns a positive 128-bit serial number (RFC 5280 allows up to 20 octets).
func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func oidSubjectAltName() asn1.ObjectIdentifier { return asn1.ObjectIdentifier{2, 5, 29, 17} }
func oidKeyUsage() asn1.ObjectIdentifier       { return asn1.ObjectIdentifier{2, 5, 29, 15} }
func oidExtKeyUsage() asn1.ObjectIdentifier    { return asn1.ObjectIdentifier{2, 5, 29, 37} }

// requestedExtensions picks the extensions a device certificate may take from its CSR. The SAN
// extension is copied as requested, because crypto/x509 would drop UPN otherNames if it were
// rebuilt from parsed fields. Anything else a CSR asks for (basicConstraints above all) is ignored.
func requestedExtensions(csr *x509.CertificateRequest) ([]pkix.Extension, error) {
	var out []pkix.Extension
	seen := map[string]bool{}
	emptySubject := bytes.Equal(csr.RawSubject, []byte{0x30, 0x00})
	for _, e := range csr.Extensions {
		id := e.Id.String()
		if seen[id] {
			return nil, fmt.Errorf("CSR requests extension %s twice", id)
		}
		seen[id] = true
		switch {
		case e.Id.Equal(oidSubjectAltName()):
			// RFC 5280 4.2.1.6: critical when the subject is empty.
			out = append(out, pkix.Extension{Id: e.Id, Critical: e.Critical || emptySubject, Value: e.Value})
		case e.Id.Equal(oidKeyUsage()):
			var bits asn1.BitString
			if rest, err := asn1.Unmarshal(e.Value, &bits); err != nil || len(rest) > 0 {
				return nil, errors.New("CSR keyUsage extension is malformed")
			}
			// Bits 5 and 6 are keyCertSign and cRLSign.
			if bits.At(5) != 0 || bits.At(6) != 0 {
				return nil, errors.New("CSR asks for CA key usages (keyCertSign or cRLSign)")
			}
			out = append(out, pkix.Extension{Id: e.Id, Critical: true, Value: e.Value})
		case e.Id.Equal(oidExtKeyUsage()):
			var oids []asn1.ObjectIdentifier
			if rest, err := asn1.Unmarshal(e.Value, &oids); err != nil || len(rest) > 0 || len(oids) == 0 {
				return nil, errors.New("CSR extKeyUsage extension is malformed")
			}
			out = append(out, pkix.Extension{Id: e.Id, Critical: e.Critical, Value: e.Value})
		}
	}
	if emptySubject && !seen[oidSubjectAltName().String()] {
		return nil, errors.New("CSR has neither a subject nor subject alternative names")
	}
	return out, nil
}

// Ping reports whether the CA certificate is valid now; an expired CA cannot issue anything.
func (c *Connector) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := c.now()
	switch {
	case now.After(c.cert.NotAfter):
		return ca.Permanentf("local CA: certificate %q expired at %s", c.cert.Subject, c.cert.NotAfter.Format(time.RFC3339))
	case now.Before(c.cert.NotBefore):
		return ca.Permanentf("local CA: certificate %q is not valid before %s", c.cert.Subject, c.cert.NotBefore.Format(time.RFC3339))
	}
	if c.crl != nil {
		rl, err := c.crl.load()
		switch {
		case err != nil:
			return ca.Retryable(fmt.Errorf("local CA: %w", err), 0)
		case rl == nil:
			return ca.Retryable(fmt.Errorf("local CA: CRL %s is not published", c.crl.path), 0)
		case !now.Before(rl.NextUpdate):
			return ca.Retryable(fmt.Errorf("local CA: CRL %s expired at %s (it is not being signed again: see the log)",
				c.crl.path, rl.NextUpdate.Format(time.RFC3339)), 0)
		}
	}
	return nil
}

// Certificates returns the issuer's certificate and the intermediates above it.
func (c *Connector) Certificates() []ca.HeldCertificate {
	out := []ca.HeldCertificate{{Role: ca.RoleIssuer, Cert: c.cert}}
	for _, inter := range c.chain {
		if !inter.Equal(c.cert) {
			out = append(out, ca.HeldCertificate{Role: ca.RoleIntermediate, Cert: inter})
		}
	}
	return out
}

// Issued reports how many certificates this connector returned for a request key (a process
// name). Crash tests use it to assert that the CA was asked at most once per process; across
// restarts, use the ledgerFile and ReadLedger. With a ledgerFile the count comes from the
// ledger's index, so that it costs no memory per certificate; should the index fail, the
// failure is logged and 0 returned.
func (c *Connector) Issued(key string) int {
	n, err := c.issuances.issued(context.Background(), key)
	if err != nil {
		c.log.Warn("count issued certificates", zap.String("connector", c.name), zap.String("key", key), zap.Error(err))
	}
	return n
}

// IssuedTotal reports how many certificates this connector returned in all.
func (c *Connector) IssuedTotal() int { return int(c.total.Load()) }

// record counts an issuance and records it (in the ledger, synced, when there is one). It runs
// after signing and before the certificate is returned, so every certificate a caller received
// has its line; a crash between the two loses the line of a certificate nobody received. A
// cancelled ctx does not stop it half-way: the certificate exists by then.
func (c *Connector) record(ctx context.Context, key string, leaf *x509.Certificate, now time.Time) error {
	if err := c.issuances.add(context.WithoutCancel(ctx), key, leaf, now); err != nil {
		return err
	}
	c.total.Add(1)
	return nil
}
