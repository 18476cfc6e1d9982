package cas_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/security/privateca/apiv1/privatecapb"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/certprov/certprov-adapter/internal/ca/catest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// fakeCAS is an in-process CertificateAuthorityService: the generated gRPC server interface,
// served over TLS, reached through the SDK's own client. It checks requests the way CAS does
// (OAuth bearer token, resource names, certificate_id and request_id syntax, the CSR's
// signature, a lifetime, the issuing CA's state) and keeps what it issues, as an Enterprise-tier
// pool does, so that Get, List, Revoke and a repeated request_id behave as on the real service.
type fakeCAS struct {
	privatecapb.UnimplementedCertificateAuthorityServiceServer

	token    string
	pool     string // projects/test-project/locations/us-central1/caPools/test-pool
	addr     string
	serverCA *catest.CA // signs the TLS certificate

	mu        sync.Mutex
	tier      privatecapb.CaPool_Tier
	cas       []*fakeIssuer // in the pool, in order
	templates map[string]bool
	certs     map[string]*privatecapb.Certificate // by resource name
	requests  map[string]*privatecapb.Certificate // by request_id
	minted    map[string]int                      // certificate_id -> certificates signed
	calls     map[string]int                      // method -> calls
	replayed  int                                 // creates answered from requests (a request_id seen before)
	// fail, when set for a method, answers with its error instead; loseAnswer makes
	// CreateCertificate issue and then answer with its error, as when the answer is lost.
	fail       map[string]error
	loseAnswer error
	// templateUsed is the certificate_template of the last CreateCertificate.
	templateUsed string
	lastLifetime time.Duration
	// hangAfterIssue makes every CreateCertificate that signs wait, unanswered, until its
	// caller gives up; loseFirstAnswers answers it Unavailable instead.
	hangAfterIssue, loseFirstAnswers bool
}

type fakeIssuer struct {
	id    string
	state privatecapb.CertificateAuthority_State
	root  *catest.CA
	ca    *catest.CA
}

const (
	fakeToken    = "ya29.fake-access-token"
	fakeLocation = "projects/test-project/locations/us-central1"
	fakePool     = fakeLocation + "/caPools/test-pool"
)

func newFakeCAS(t testing.TB) *fakeCAS {
	t.Helper()
	f := &fakeCAS{
		token:     fakeToken,
		pool:      fakePool,
		tier:      privatecapb.CaPool_ENTERPRISE,
		templates: map[string]bool{fakeLocation + "/certificateTemplates/client-auth": true},
		certs:     map[string]*privatecapb.Certificate{},
		requests:  map[string]*privatecapb.Certificate{},
		minted:    map[string]int{},
		calls:     map[string]int{},
		fail:      map[string]error{},
		serverCA:  catest.NewRoot(t, "fake CAS TLS root"),
	}
	f.addCA(t, "ca-1", privatecapb.CertificateAuthority_ENABLED)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tlsCert := f.serverCA.Sign(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "privateca.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, key.Public())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewServerTLSFromCert(&tls.Certificate{Certificate: [][]byte{tlsCert.Raw}, PrivateKey: key})),
		grpc.UnaryInterceptor(f.authorize),
	)
	privatecapb.RegisterCertificateAuthorityServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	f.addr = lis.Addr().String()
	return f
}

// addCA adds a CA, under a root of its own, to the pool.
func (f *fakeCAS) addCA(t testing.TB, id string, state privatecapb.CertificateAuthority_State) *fakeIssuer {
	t.Helper()
	root := catest.NewRoot(t, "fake CAS root "+id)
	iss := &fakeIssuer{id: id, state: state, root: root, ca: root.NewIntermediate(t, "fake CAS issuing "+id)}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cas = append(f.cas, iss)
	return iss
}

// roots is the pool of every CA's root.
func (f *fakeCAS) roots() *x509.CertPool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := x509.NewCertPool()
	for _, c := range f.cas {
		p.AddCert(c.root.Cert)
	}
	return p
}

// issuers is the pool of every CA's issuing certificate: the device receives the leaf alone,
// so that is what an uploaded certificate is checked against.
func (f *fakeCAS) issuers() *x509.CertPool {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := x509.NewCertPool()
	for _, c := range f.cas {
		p.AddCert(c.ca.Cert)
	}
	return p
}

// authorize refuses a call without the OAuth bearer token, as Google's front end does.
func (f *fakeCAS) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
	md, _ := metadata.FromIncomingContext(ctx)
	if auth := md.Get("authorization"); len(auth) != 1 || auth[0] != "Bearer "+f.token {
		return nil, status.Error(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
	}
	// The SDK names the request's resource in a routing header; it must be the request's own.
	if rp := md.Get("x-goog-request-params"); len(rp) == 1 {
		field, value, _ := strings.Cut(rp[0], "=")
		value, _ = url.QueryUnescape(value)
		m := req.(proto.Message).ProtoReflect()
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(field))
		if fd == nil || m.Get(fd).String() != value {
			return nil, status.Errorf(codes.InvalidArgument, "x-goog-request-params %q does not match the request", rp[0])
		}
	}
	f.mu.Lock()
	f.calls[method]++
	err := f.fail[method]
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// replays counts the creates answered with the certificate of an earlier request_id.
func (f *fakeCAS) replays() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replayed
}

func (f *fakeCAS) callCount(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// mintedTotal is the number of certificates the fake signed.
func (f *fakeCAS) mintedTotal() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, v := range f.minted {
		n += v
	}
	return n
}

var (
	certificateIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	serialFilterRE  = regexp.MustCompile(`^certificate_description\.subject_description\.hex_serial_number\s*=\s*"([0-9a-f]+)"$`)
)

func (f *fakeCAS) checkPool(name string) error {
	if name != f.pool {
		return status.Errorf(codes.NotFound, "Resource '%s' was not found", name)
	}
	return nil
}

func (f *fakeCAS) CreateCertificate(ctx context.Context, req *privatecapb.CreateCertificateRequest) (*privatecapb.Certificate, error) {
	out, fresh, err := f.create(req)
	f.mu.Lock()
	hang := f.hangAfterIssue && fresh
	lose := f.loseFirstAnswers && fresh
	f.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case hang:
		// Issued, but the answer never comes: the caller gives up first.
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case lose:
		return nil, status.Error(codes.Unavailable, "upstream connect error or disconnect/reset before headers")
	}
	return out, nil
}

// create issues for req, or answers a repeated request_id with the first answer; fresh says a
// certificate was signed by this call.
func (f *fakeCAS) create(req *privatecapb.CreateCertificateRequest) (_ *privatecapb.Certificate, fresh bool, _ error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.createLocked(req)
}

func (f *fakeCAS) createLocked(req *privatecapb.CreateCertificateRequest) (*privatecapb.Certificate, bool, error) {
	if err := f.checkPool(req.GetParent()); err != nil {
		return nil, false, err
	}
	if id := req.GetRequestId(); id != "" {
		u, err := uuid.Parse(id)
		if err != nil || u == uuid.Nil {
			return nil, false, status.Error(codes.InvalidArgument, "request_id must be a valid non-zero UUID")
		}
		if prev, ok := f.requests[id]; ok {
			f.replayed++
			return proto.Clone(prev).(*privatecapb.Certificate), false, nil
		}
	}
	id := req.GetCertificateId()
	if f.tier == privatecapb.CaPool_ENTERPRISE && !certificateIDRE.MatchString(id) {
		return nil, false, status.Error(codes.InvalidArgument, "certificate_id must match [a-zA-Z0-9_-]{1,63}")
	}
	name := f.pool + "/certificates/" + id
	if _, ok := f.certs[name]; ok && f.tier == privatecapb.CaPool_ENTERPRISE {
		return nil, false, status.Errorf(codes.AlreadyExists, "Resource '%s' already exists", name)
	}
	in := req.GetCertificate()
	if in == nil {
		return nil, false, status.Error(codes.InvalidArgument, "certificate is required")
	}
	life := in.GetLifetime().AsDuration()
	if in.GetLifetime() == nil || life <= 0 {
		return nil, false, status.Error(codes.InvalidArgument, "certificate.lifetime is required and must be positive")
	}
	if tmpl := in.GetCertificateTemplate(); tmpl != "" && !f.templates[tmpl] {
		return nil, false, status.Errorf(codes.NotFound, "Resource '%s' was not found", tmpl)
	}
	iss, err := f.issuer(req.GetIssuingCertificateAuthorityId())
	if err != nil {
		return nil, false, err
	}
	tmpl, pub, err := certificateTemplate(in)
	if err != nil {
		return nil, false, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 152))
	now := time.Now().Truncate(time.Second)
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now
	tmpl.NotAfter = now.Add(life - time.Second)
	if tmpl.NotAfter.After(iss.ca.Cert.NotAfter) {
		tmpl.NotAfter = iss.ca.Cert.NotAfter
	}
	leaf, err := x509.CreateCertificate(rand.Reader, tmpl, iss.ca.Cert, pub, iss.ca.Key)
	if err != nil {
		return nil, false, status.Errorf(codes.InvalidArgument, "cannot sign: %v", err)
	}
	out := &privatecapb.Certificate{
		Name:                       name,
		CertificateConfig:          in.GetCertificateConfig(),
		IssuerCertificateAuthority: f.pool + "/certificateAuthorities/" + iss.id,
		Lifetime:                   durationpb.New(life),
		CertificateTemplate:        in.GetCertificateTemplate(),
		PemCertificate:             string(pemutil.EncodeCertificateDER(leaf)),
		PemCertificateChain: []string{
			string(pemutil.Encode(iss.ca.Cert)),
			string(pemutil.Encode(iss.root.Cert)),
		},
		CertificateDescription: &privatecapb.CertificateDescription{
			SubjectDescription: &privatecapb.CertificateDescription_SubjectDescription{HexSerialNumber: serial.Text(16)},
		},
		CreateTime: timestamppb.New(now),
	}
	f.minted[id]++
	f.templateUsed, f.lastLifetime = in.GetCertificateTemplate(), life
	if f.tier == privatecapb.CaPool_ENTERPRISE {
		f.certs[name] = out
	}
	if req.GetRequestId() != "" {
		f.requests[req.GetRequestId()] = out
	}
	if f.loseAnswer != nil {
		err := f.loseAnswer
		f.loseAnswer = nil
		return nil, false, err
	}
	return proto.Clone(out).(*privatecapb.Certificate), true, nil
}

// issuer is the CA that signs: the one named, which must be enabled, or the first enabled one.
func (f *fakeCAS) issuer(id string) (*fakeIssuer, error) {
	for _, c := range f.cas {
		if id != "" && c.id != id {
			continue
		}
		if c.state == privatecapb.CertificateAuthority_ENABLED {
			return c, nil
		}
		if id != "" {
			return nil, status.Errorf(codes.FailedPrecondition, "CA %s is in state %s and cannot issue certificates", id, c.state)
		}
	}
	if id != "" {
		return nil, status.Errorf(codes.NotFound, "Resource '%s/certificateAuthorities/%s' was not found", f.pool, id)
	}
	return nil, status.Error(codes.FailedPrecondition, "There are no enabled CAs in the CaPool")
}

// certificateTemplate reads what to sign from the request: a CSR whose signature verifies, or a
// config with a PEM public key and the required x509_config.
func certificateTemplate(in *privatecapb.Certificate) (*x509.Certificate, crypto.PublicKey, error) {
	switch cfg := in.GetCertificateConfig().(type) {
	case *privatecapb.Certificate_PemCsr:
		block, _ := pem.Decode([]byte(cfg.PemCsr))
		if block == nil || block.Type != "CERTIFICATE REQUEST" {
			return nil, nil, status.Error(codes.InvalidArgument, "pem_csr is not a PEM CERTIFICATE REQUEST")
		}
		csr, err := x509.ParseCertificateRequest(block.Bytes)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "pem_csr cannot be parsed: %v", err)
		}
		if err := csr.CheckSignature(); err != nil {
			return nil, nil, status.Error(codes.InvalidArgument, "the CSR's signature is invalid")
		}
		tmpl := &x509.Certificate{Subject: csr.Subject, DNSNames: csr.DNSNames, EmailAddresses: csr.EmailAddresses,
			URIs: csr.URIs, IPAddresses: csr.IPAddresses, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, ext := range csr.Extensions {
			// The UPN and other SANs crypto/x509 does not model ride in the raw extension.
			if ext.Id.Equal([]int{2, 5, 29, 17}) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
				tmpl.DNSNames, tmpl.EmailAddresses, tmpl.URIs, tmpl.IPAddresses = nil, nil, nil, nil
			}
		}
		return tmpl, csr.PublicKey, nil
	case *privatecapb.Certificate_Config:
		c := cfg.Config
		if c.GetX509Config() == nil {
			return nil, nil, status.Error(codes.InvalidArgument, "config.x509_config is required")
		}
		if c.GetPublicKey() == nil || c.GetPublicKey().GetFormat() != privatecapb.PublicKey_PEM {
			return nil, nil, status.Error(codes.InvalidArgument, "config.public_key with format PEM is required")
		}
		block, _ := pem.Decode(c.GetPublicKey().GetKey())
		if block == nil || block.Type != "PUBLIC KEY" {
			return nil, nil, status.Error(codes.InvalidArgument, "config.public_key.key is not a PEM public key")
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "config.public_key.key: %v", err)
		}
		if c.GetX509Config().GetCaOptions().GetIsCa() {
			return nil, nil, status.Error(codes.InvalidArgument, "a CA certificate may not be requested from this pool")
		}
		s := c.GetSubjectConfig().GetSubject()
		name := pkix.Name{CommonName: s.GetCommonName()}
		if s.GetOrganization() != "" {
			name.Organization = []string{s.GetOrganization()}
		}
		tmpl := &x509.Certificate{Subject: name}
		sans := c.GetSubjectConfig().GetSubjectAltName()
		tmpl.DNSNames, tmpl.EmailAddresses = sans.GetDnsNames(), sans.GetEmailAddresses()
		for _, u := range sans.GetUris() {
			parsed, err := url.Parse(u)
			if err != nil {
				return nil, nil, status.Errorf(codes.InvalidArgument, "uri %q: %v", u, err)
			}
			tmpl.URIs = append(tmpl.URIs, parsed)
		}
		ku := c.GetX509Config().GetKeyUsage()
		if ku.GetBaseKeyUsage().GetDigitalSignature() {
			tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
		}
		if ku.GetBaseKeyUsage().GetKeyEncipherment() {
			tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
		}
		if ku.GetExtendedKeyUsage().GetClientAuth() {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
		}
		if ku.GetExtendedKeyUsage().GetServerAuth() {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		}
		for _, oid := range ku.GetUnknownExtendedKeyUsages() {
			path := make([]int, len(oid.GetObjectIdPath()))
			for i, v := range oid.GetObjectIdPath() {
				path[i] = int(v)
			}
			tmpl.UnknownExtKeyUsage = append(tmpl.UnknownExtKeyUsage, path)
		}
		return tmpl, pub, nil
	default:
		return nil, nil, status.Error(codes.InvalidArgument, "certificate needs pem_csr or config")
	}
}

func (f *fakeCAS) GetCertificate(_ context.Context, req *privatecapb.GetCertificateRequest) (*privatecapb.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.certs[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", req.GetName())
	}
	return proto.Clone(c).(*privatecapb.Certificate), nil
}

func (f *fakeCAS) ListCertificates(_ context.Context, req *privatecapb.ListCertificatesRequest) (*privatecapb.ListCertificatesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkPool(req.GetParent()); err != nil {
		return nil, err
	}
	m := serialFilterRE.FindStringSubmatch(req.GetFilter())
	if m == nil {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported filter %q", req.GetFilter())
	}
	out := &privatecapb.ListCertificatesResponse{}
	for _, c := range f.certs {
		if c.GetCertificateDescription().GetSubjectDescription().GetHexSerialNumber() == m[1] {
			out.Certificates = append(out.Certificates, proto.Clone(c).(*privatecapb.Certificate))
		}
	}
	return out, nil
}

func (f *fakeCAS) RevokeCertificate(_ context.Context, req *privatecapb.RevokeCertificateRequest) (*privatecapb.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id := req.GetRequestId(); id != "" {
		if u, err := uuid.Parse(id); err != nil || u == uuid.Nil {
			return nil, status.Error(codes.InvalidArgument, "request_id must be a valid non-zero UUID")
		}
	}
	c, ok := f.certs[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", req.GetName())
	}
	if c.RevocationDetails != nil {
		return nil, status.Error(codes.FailedPrecondition, "Certificate is already revoked")
	}
	c.RevocationDetails = &privatecapb.Certificate_RevocationDetails{RevocationState: req.GetReason(), RevocationTime: timestamppb.Now()}
	return proto.Clone(c).(*privatecapb.Certificate), nil
}

// revocation is what the fake holds about cert: whether it is revoked, and why.
func (f *fakeCAS) revocation(cert *x509.Certificate) (bool, privatecapb.RevocationReason) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.certs {
		if c.GetCertificateDescription().GetSubjectDescription().GetHexSerialNumber() == cert.SerialNumber.Text(16) {
			block, _ := pem.Decode([]byte(c.GetPemCertificate()))
			if block != nil && string(block.Bytes) == string(cert.Raw) && c.RevocationDetails != nil {
				return true, c.RevocationDetails.GetRevocationState()
			}
		}
	}
	return false, 0
}

func (f *fakeCAS) GetCaPool(_ context.Context, req *privatecapb.GetCaPoolRequest) (*privatecapb.CaPool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkPool(req.GetName()); err != nil {
		return nil, err
	}
	return &privatecapb.CaPool{Name: f.pool, Tier: f.tier}, nil
}

func (f *fakeCAS) FetchCaCerts(_ context.Context, req *privatecapb.FetchCaCertsRequest) (*privatecapb.FetchCaCertsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkPool(req.GetCaPool()); err != nil {
		return nil, err
	}
	out := &privatecapb.FetchCaCertsResponse{}
	for _, c := range f.cas {
		out.CaCerts = append(out.CaCerts, &privatecapb.FetchCaCertsResponse_CertChain{Certificates: []string{
			string(pemutil.Encode(c.ca.Cert)),
			string(pemutil.Encode(c.root.Cert)),
		}})
	}
	return out, nil
}

func (f *fakeCAS) GetCertificateAuthority(_ context.Context, req *privatecapb.GetCertificateAuthorityRequest) (*privatecapb.CertificateAuthority, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cas {
		if req.GetName() == f.pool+"/certificateAuthorities/"+c.id {
			return &privatecapb.CertificateAuthority{Name: req.GetName(), State: c.state}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", req.GetName())
}

func (f *fakeCAS) GetCertificateTemplate(_ context.Context, req *privatecapb.GetCertificateTemplateRequest) (*privatecapb.CertificateTemplate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.templates[req.GetName()] {
		return nil, status.Errorf(codes.NotFound, "Resource '%s' was not found", req.GetName())
	}
	return &privatecapb.CertificateTemplate{Name: req.GetName()}, nil
}

// String names the fake in test output.
func (f *fakeCAS) String() string { return fmt.Sprintf("fake CAS at %s", f.addr) }
