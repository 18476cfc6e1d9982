package verifiedaccess

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/swap"
)

// Paths of the enrollment API (docs/verified-access-api.md, section 2).
const (
	BasePath      = "/v1/verifiedaccess"
	ChallengePath = BasePath + "/challenge"
	EnrollPath    = BasePath + "/enroll"
)

// Limits of the enrollment server. A challenge response is a few kilobytes; anything far larger
// is not one.
const (
	maxRequestBody    = 64 << 10
	maxHeaderBytes    = 16 << 10
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	// requestTimeout bounds one request's work: a Google call and a CA call, each bounded on
	// its own as well.
	requestTimeout = 90 * time.Second
	writeTimeout   = requestTimeout + 10*time.Second
	idleTimeout    = 2 * time.Minute
	shutdownGrace  = 10 * time.Second
	// replayGrace keeps used responses past the challenge lifetime, for clock skew between
	// Google and the adapter.
	replayGrace = 5 * time.Minute
	// DefaultMaxTracked bounds each replay set (used responses, used keys, issued challenges).
	DefaultMaxTracked = 100_000
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Config is the verifiedAccess section: listen address, TLS, challenge lifetime.
	Config config.VerifiedAccess
	// Profiles are the compiled enrollment profiles, bound to their CAs (Profiles).
	Profiles map[string]*Profile
	Google   Google
	Logger   *zap.Logger
	// Now replaces the clock (tests).
	Now func() time.Time
	// MaxTracked bounds the replay sets (default DefaultMaxTracked); when full of unexpired
	// entries, enrollment answers UNAVAILABLE instead of forgetting a used response.
	MaxTracked int
	// MaxClients bounds the per-client token buckets (default DefaultMaxClients).
	MaxClients int
	// Registerer receives the server's metrics (metrics.VerifiedAccess, metrics.CA); nil
	// exports none.
	Registerer prometheus.Registerer
	// Audit receives one event per enrollment request that passed the limits, issued or
	// refused, before the answer is sent; nil writes none. InstanceID goes into each event.
	Audit      Recorder
	InstanceID string
}

// Recorder stores audit events (*audit.Log). It is safe for concurrent use.
type Recorder interface {
	// Write stores ev; a nil error means it is durable.
	Write(ev *audit.Event) error
}

// Server is the enrollment API. Create it with NewServer; serve it with Run, Serve or Handler.
// It is safe for concurrent use.
type Server struct {
	// profiles are the enrollment profiles, replaced by Reconfigure; a request uses one set
	// throughout.
	profiles *swap.Value[map[string]*Profile]
	google   Google
	log      *zap.Logger
	enrolled *zap.Logger // one operational line per enrollment request
	recorder Recorder
	instance string
	now      func() time.Time
	lifetime time.Duration
	listen   string
	tls      *tls.Config
	// cert is the TLS certificate served (tls.GetCertificate), replaced by Reconfigure.
	cert atomic.Pointer[tls.Certificate]

	usedResponses *ttlSet // challenge responses sent to Google
	usedKeys      *ttlSet // (SPKI, challenge) pairs certified
	challenges    *ttlSet // challenge data this server handed out, with the time

	// The limits (limit.go).
	trustedProxies []netip.Prefix
	buckets        *buckets
	challengeSlots *gate
	enrollSlots    *gate
	rejections     *rejectionLog
	m              *metrics.VerifiedAccess
	cam            *metrics.CA
	aud            *metrics.Audit
}

// NewServer builds the server. With TLS configured it loads the certificate and key now, so
// that a bad pair fails at startup.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Google == nil {
		return nil, errors.New("verified access server: no Google client")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = DefaultMaxTracked
	}
	lifetime := o.Config.ChallengeLifetime
	if lifetime <= 0 {
		lifetime = config.DefaultChallengeLifetime
	}
	if err := checkCompiled(o.Profiles); err != nil {
		return nil, err
	}
	lim, err := limitsOf(o.Config)
	if err != nil {
		return nil, err
	}
	if o.MaxClients <= 0 {
		o.MaxClients = DefaultMaxClients
	}
	m := metrics.NewVerifiedAccess(o.Registerer)
	s := &Server{
		profiles:      swap.New(o.Profiles),
		google:        o.Google,
		log:           o.Logger,
		enrolled:      o.Logger.Named("enrollment"),
		recorder:      o.Audit,
		instance:      o.InstanceID,
		now:           o.Now,
		lifetime:      lifetime,
		listen:        o.Config.Listen,
		usedResponses: newTTLSet(o.MaxTracked, o.Now),
		usedKeys:      newTTLSet(o.MaxTracked, o.Now),
		challenges:    newTTLSet(o.MaxTracked, o.Now),

		trustedProxies: lim.trustedProxies,
		buckets:        newBuckets(rate.Limit(lim.rate.RequestsPerSecond), lim.rate.Burst, o.MaxClients, o.Now, m.BucketsEvicted),
		challengeSlots: newGate(lim.challenges, lim.perClient, lim.queueTimeout),
		enrollSlots:    newGate(lim.enrollments, lim.perClient, lim.queueTimeout),
		rejections:     newRejectionLog(o.Logger.Named("limits"), o.Now),
		m:              m,
		cam:            metrics.NewCA(o.Registerer),
		aud:            metrics.NewAudit(o.Registerer),
	}
	if !o.Config.Insecure {
		pair, err := loadPair(o.Config.TLS)
		if err != nil {
			return nil, err
		}
		s.cert.Store(pair)
		s.tls = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cert.Load(), nil
		}}
	}
	return s, nil
}

func checkCompiled(profiles map[string]*Profile) error {
	for name, p := range profiles {
		if p == nil || p.CA == nil || p.Template == nil || p.Policy == nil {
			return fmt.Errorf("verified access server: profile %q is not compiled and bound to a CA", name)
		}
	}
	return nil
}

// loadPair reads the TLS certificate and key, refusing a pair that does not match.
func loadPair(c config.ServerTLS) (*tls.Certificate, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("verified access server: TLS certificate and key are required (insecure is for loopback demos only)")
	}
	pair, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("verified access server TLS: %w", err)
	}
	return &pair, nil
}

// Reconfiguration is a reloaded verifiedAccess section, checked and read, ready to apply.
type Reconfiguration struct {
	s        *Server
	profiles map[string]*Profile
	pair     *tls.Certificate
	lim      limits
}

// Prepare checks and reads a reloaded verifiedAccess section: the enrollment profiles (bound to
// their CA connections), the TLS certificate and key (a missing file, or a key of another
// certificate, is an error), and the per-client rate limit. Nothing changes until Apply. The
// listen address, insecure, the challenge lifetime, the concurrency limits and the trusted
// proxies take a restart.
func (s *Server) Prepare(c config.VerifiedAccess, profiles map[string]*Profile) (*Reconfiguration, error) {
	if err := checkCompiled(profiles); err != nil {
		return nil, err
	}
	r := &Reconfiguration{s: s, profiles: profiles}
	if s.tls != nil {
		var err error
		if r.pair, err = loadPair(c.TLS); err != nil {
			return nil, err
		}
	}
	var err error
	if r.lim, err = limitsOf(c); err != nil {
		return nil, err
	}
	return r, nil
}

// Apply serves the new certificate to the next handshakes, the new profiles to the next
// requests (one in flight finishes with those it started with) and the new rate limit. The
// channel is closed once no request uses the previous profiles.
func (r *Reconfiguration) Apply() <-chan struct{} {
	if r.pair != nil {
		r.s.cert.Store(r.pair)
	}
	r.s.buckets.setLimit(rate.Limit(r.lim.rate.RequestsPerSecond), r.lim.rate.Burst)
	return r.s.profiles.Replace(r.profiles)
}

// Handler serves the enrollment API (the two POST routes), behind the limits.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+ChallengePath, s.limited(endpointChallenge, s.challengeSlots, s.handleChallenge))
	mux.HandleFunc("POST "+EnrollPath, s.limited(endpointEnroll, s.enrollSlots, s.handleEnroll))
	return mux
}

// Run listens on the configured address and serves until ctx ends; it returns nil after a
// graceful shutdown, or the error that stopped it.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("verified access server: listen on %s: %w", s.listen, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln (closing it) until ctx ends. TLS is applied here when configured.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
	if s.tls != nil {
		srv.TLSConfig = s.tls.Clone()
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	scheme := "https"
	if s.tls == nil {
		scheme = "http"
	}
	s.log.Info("verified access enrollment server listening", zap.String("address", ln.Addr().String()),
		zap.String("scheme", scheme), zap.Int("profiles", len(s.profiles.Load())))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	sweep := time.NewTicker(s.lifetime)
	defer sweep.Stop()
	logTick := time.NewTicker(rejectionLogInterval)
	defer logTick.Stop()
	defer s.rejections.flush(true)
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("verified access server: %w", err)
		case <-sweep.C:
			s.usedResponses.purgeExpired()
			s.usedKeys.purgeExpired()
			s.challenges.purgeExpired()
			s.buckets.sweep()
		case <-logTick.C:
			s.rejections.flush(false)
		case <-ctx.Done():
			// Enrollments in flight may finish (a certificate the CA issued should reach its
			// device) for a grace period; then the connections are closed.
			sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			if err := srv.Shutdown(sctx); err != nil {
				s.log.Warn("verified access server: enrollments still running at shutdown were cut off", zap.Error(err))
				_ = srv.Close()
			}
			cancel()
			<-errc
			return nil
		}
	}
}

// challengeRequest is the body of POST /challenge.
type challengeRequest struct {
	Profile string `json:"profile"`
}

type challengeResponse struct {
	Challenge        string `json:"challenge"`
	APIVersion       string `json:"apiVersion"`
	ExpiresInSeconds int    `json:"expiresInSeconds"`
}

func (s *Server) handleChallenge(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	profile := ""
	out, err := s.challenge(ctx, r, &profile)
	outcome, code := outcomeOf(err)
	s.m.Challenges.WithLabelValues(profile, outcome, code).Inc()
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// challenge answers one /challenge request; *profile is set once the request named a
// configured profile.
func (s *Server) challenge(ctx context.Context, r *http.Request, profile *string) (*challengeResponse, error) {
	var req challengeRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Profile == "" {
		return nil, fail(CodeBadRequest, nil, "profile is required")
	}
	profiles, release := s.profiles.Acquire()
	defer release()
	p, ok := profiles[req.Profile]
	if !ok {
		return nil, unknownProfile(req.Profile)
	}
	*profile = p.Name
	ch, err := s.google.Challenge(ctx, p.APIVersion)
	if err != nil {
		s.log.Warn("challenge failed", zap.String("profile", p.Name), zap.Error(err))
		return nil, err
	}
	if len(ch.Data) > 0 {
		// Remember when it was handed out, so that an answer older than the lifetime is refused
		// here even if Google still accepted it. A full set only loses this extra check.
		s.challenges.claim(challengeKey(base64.StdEncoding.EncodeToString(ch.Data)), s.lifetime+replayGrace)
	}
	s.log.Debug("challenge issued", zap.String("profile", p.Name), zap.String("api_version", p.APIVersion))
	return &challengeResponse{
		Challenge:        base64.StdEncoding.EncodeToString(ch.Bytes),
		APIVersion:       p.APIVersion,
		ExpiresInSeconds: int(s.lifetime / time.Second),
	}, nil
}

// outcomeOf labels a request's result for the metrics: the outcome and the API's code (OK on
// success).
func outcomeOf(err error) (outcome, code string) {
	if err == nil {
		return metrics.VAIssued, "OK"
	}
	c := CodeOf(err)
	if c.Status() >= 500 {
		return metrics.VAFailed, string(c)
	}
	return metrics.VARefused, string(c)
}

// challengeKey keys the issued-challenges set by the challenge string an SPKAC carries (the
// base64 of the challenge's data).
func challengeKey(b64 string) [32]byte { return digest("challenge", []byte(b64)) }

// enrollRequest is the body of POST /enroll.
type enrollRequest struct {
	Profile           string `json:"profile"`
	Scope             string `json:"scope"`
	ChallengeResponse string `json:"challengeResponse"`
	Identity          string `json:"identity"`
}

type enrollResponse struct {
	Certificate string   `json:"certificate"`
	Chain       []string `json:"chain"`
}

// enrollment collects what the audit event and the log line report about one request.
type enrollment struct {
	id                                           string
	profile, scope, identity, apiVersion, caName string
	result                                       *Result
	spkiSHA256                                   string
	issued                                       *ca.Issued
}

func (s *Server) handleEnroll(w http.ResponseWriter, r *http.Request) {
	start := s.now()
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	e := &enrollment{id: newEnrollmentID()}
	err := s.enroll(ctx, w, r, e)
	err = s.record(e, err, start)
	s.auditLine(r, e, err, s.now().Sub(start))
	profile := ""
	if e.apiVersion != "" {
		profile = e.profile // a configured profile: never a name a client made up
	}
	outcome, code := outcomeOf(err)
	s.m.Enrolled(profile, outcome, code, s.now().Sub(start))
	if err != nil {
		s.writeError(w, err)
		return
	}
	out := enrollResponse{Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.issued.Leaf.Raw})), Chain: []string{}}
	for _, c := range e.issued.Chain {
		out.Chain = append(out.Chain, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})))
	}
	writeJSON(w, http.StatusOK, out)
}

// enroll runs one enrollment; on success e.issued holds the certificate. Every refusal is an
// *Error with the code the client sees.
func (s *Server) enroll(ctx context.Context, w http.ResponseWriter, r *http.Request, e *enrollment) error {
	var req enrollRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	switch {
	case req.Profile == "":
		return fail(CodeBadRequest, nil, "profile is required")
	case req.Scope == "":
		return fail(CodeBadRequest, nil, "scope is required (machine or user)")
	case req.Scope != config.VAScopeMachine && req.Scope != config.VAScopeUser:
		return fail(CodeBadRequest, nil, "unknown scope %q (want machine or user)", truncate(req.Scope))
	case req.ChallengeResponse == "":
		return fail(CodeBadRequest, nil, "challengeResponse is required")
	}
	e.profile, e.scope = req.Profile, req.Scope
	profiles, release := s.profiles.Acquire()
	defer release()
	p, ok := profiles[req.Profile]
	if !ok {
		return unknownProfile(req.Profile)
	}
	e.apiVersion, e.caName = p.APIVersion, p.CAName
	response, err := decodeBase64(req.ChallengeResponse)
	if err != nil {
		return fail(CodeBadRequest, err, "challengeResponse is not base64")
	}

	if !slices.Contains(p.Scopes, req.Scope) {
		return denied(fmt.Sprintf("scopes: got %s, want one of [%s]", req.Scope, strings.Join(p.Scopes, ", ")))
	}

	// Who Google must confirm the key belongs to.
	var expected string
	switch req.Scope {
	case config.VAScopeMachine:
		// The contract has clients send no identity for machine keys; one that sends the
		// profile's own domain is tolerated, any other is a mistake worth telling.
		if req.Identity != "" && !strings.EqualFold(req.Identity, p.EnrollmentDomain) {
			return fail(CodeBadRequest, nil, "identity is only sent for the user scope; machine keys are checked against the profile's enrollment domain")
		}
		expected = p.EnrollmentDomain
	case config.VAScopeUser:
		if req.Identity == "" {
			return fail(CodeBadRequest, nil, "identity (the user's e-mail address) is required for the user scope")
		}
		domain, err := emailDomain(req.Identity)
		if err != nil {
			return fail(CodeBadRequest, nil, "identity: %v", err)
		}
		expected = req.Identity
		e.identity = expected
		if !slices.Contains(p.UserDomains, domain) {
			return denied(fmt.Sprintf("userDomains: got %s, want one of [%s]", describeValue(domain), strings.Join(p.UserDomains, ", ")))
		}
	}
	e.identity = expected

	// A response goes to Google once; a second use is refused before Google sees it.
	respKey := digest("response", []byte(p.APIVersion), response)
	if ok, full := s.usedResponses.claim(respKey, s.lifetime+replayGrace); !ok {
		if full {
			return fail(CodeUnavailable, nil, "too many enrollments in progress; try again later")
		}
		return fail(CodeChallengeReplayed, nil, "this challenge response was already used; ask for a new challenge")
	}
	result, err := s.google.Verify(ctx, p.APIVersion, response, expected)
	if err != nil {
		if CodeOf(err) == CodeUnavailable {
			// Google never judged it: the extension may send the same answer again.
			s.usedResponses.release(respKey)
		}
		return err
	}
	e.result = result

	// The SPKAC is the proof of possession: it must be there and verify with its own key.
	if result.SignedPublicKeyAndChallenge == "" {
		return fail(CodeBadChallenge, nil, "the response carries no public key: call challengeKey with registerKey")
	}
	der, err := decodeBase64(result.SignedPublicKeyAndChallenge)
	if err != nil {
		return fail(CodeBadChallenge, err, "the signed public key and challenge is not base64")
	}
	spkac, err := ParseSPKAC(der)
	if err != nil {
		return fail(CodeBadChallenge, err, "the signed public key and challenge does not verify: %v", err)
	}
	sum := sha256.Sum256(spkac.SPKI)
	e.spkiSHA256 = hex.EncodeToString(sum[:])
	if at, ok := s.challenges.added(challengeKey(spkac.Challenge)); ok && s.now().Sub(at) > s.lifetime {
		return fail(CodeChallengeExpired, nil, "the challenge is older than %s; ask for a new one", s.lifetime)
	}
	if ok, full := s.usedKeys.claim(digest("key", spkac.SPKI, []byte(spkac.Challenge)), s.lifetime+replayGrace); !ok {
		if full {
			return fail(CodeUnavailable, nil, "too many enrollments in progress; try again later")
		}
		return fail(CodeChallengeReplayed, nil, "this key was already enrolled with this challenge; ask for a new challenge")
	}

	if failed := p.Policy.Evaluate(result); len(failed) > 0 {
		return denied(failed...)
	}

	certReq, err := p.Template.RenderData(templateData(p.Name, req.Scope, expected, result))
	if err != nil {
		return fail(CodeCAFailure, err, "the certificate cannot be built for this device: %v", err)
	}
	if len(certReq.UPNs) > 0 {
		return fail(CodeCAFailure, nil, "the profile asks for UPN names, which Verified Access certificates cannot carry")
	}
	cctx := ctx
	if p.CATimeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, p.CATimeout)
		defer cancel()
	}
	caStart := time.Now()
	issued, err := p.CA.IssueForKey(cctx, &ca.KeyRequest{
		Key:                requestKey(p.Name, der),
		PublicKey:          spkac.PublicKey,
		Subject:            certReq.Subject,
		DNSNames:           certReq.DNSNames,
		EmailAddresses:     certReq.EmailAddresses,
		URIs:               certReq.URIs,
		KeyUsage:           certReq.KeyUsage,
		ExtKeyUsage:        certReq.ExtKeyUsage,
		UnknownExtKeyUsage: certReq.UnknownExtKeyUsage,
		Validity:           p.Validity,
		ProfileName:        p.Name,
		TemplateName:       certReq.TemplateName,
	})
	s.cam.Observe(ctx, cctx, p.CAName, metrics.CAIssueForKey, time.Since(caStart), err)
	if err != nil {
		var pending *ca.PendingError
		if errors.As(err, &pending) {
			return fail(CodeCAFailure, err, "the CA queued the request for approval, which Verified Access enrollment cannot wait for")
		}
		return fail(CodeCAFailure, err, "the CA could not issue the certificate")
	}
	if issued == nil || issued.Leaf == nil {
		return fail(CodeCAFailure, errors.New("connector returned no certificate"), "the CA could not issue the certificate")
	}
	// Never hand out a certificate for another key, whatever the connector did.
	if !bytes.Equal(issued.Leaf.RawSubjectPublicKeyInfo, spkac.SPKI) {
		pub, ok := issued.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(spkac.PublicKey) {
			s.log.Error("CA issued a certificate for another key; withheld", zap.String("profile", p.Name),
				zap.String("ca_connection", p.CAName), zap.String("serial", issued.Leaf.SerialNumber.Text(16)))
			return fail(CodeCAFailure, errors.New("certificate for another key"), "the CA returned a certificate for another key")
		}
	}
	e.issued = issued
	return nil
}

// newEnrollmentID names one enrollment request in the audit trail and the log: 128 random bits
// in hex.
func newEnrollmentID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// record writes the audit event of enrollment e, which ended with err, and returns the error the
// client gets. A certificate is handed out only once its event is stored: if the event cannot
// be written the client is told to try again (the certificate the CA made is then never
// delivered; the log line names it).
func (s *Server) record(e *enrollment, err error, start time.Time) error {
	if s.recorder == nil {
		return err
	}
	end := s.now()
	ev := &audit.Event{
		SchemaVersion: audit.SchemaVersion, ID: e.id, Kind: audit.KindEnrollment, Time: end.UTC(), InstanceID: s.instance,
		Scope: e.scope, Profile: e.profile, CAConnection: e.caName, Outcome: "issued", SPKISHA256: e.spkiSHA256,
		DurationMS: max(end.Sub(start).Milliseconds(), 0),
	}
	if res := e.result; res != nil {
		ev.Customer = cmp.Or(res.CustomerID, res.ProfileCustomerID)
	}
	if err != nil {
		ev.Outcome = string(CodeOf(err))
		var ve *Error
		if errors.As(err, &ve) {
			// The message the client got, never the cause behind it.
			ev.Failure, ev.FailedRules = ve.Message, ve.FailedRules
		} else {
			ev.Failure = "internal error"
		}
	} else if e.issued != nil {
		ev.Certificate = audit.CertificateOf(e.issued.Leaf)
	}
	werr := s.recorder.Write(ev)
	if werr == nil {
		return err
	}
	s.aud.WriteErrors.WithLabelValues(metrics.AuditEnrollment).Inc()
	s.log.Error("enrollment audit event not written", zap.String("enrollment_id", e.id), zap.Error(werr))
	if err != nil {
		return err
	}
	return fail(CodeUnavailable, werr, "the enrollment could not be recorded; try again")
}

// requestKey names an issuance in CA logs and ledgers: the profile and a hash of the SPKAC,
// which is single-use.
func requestKey(profile string, spkac []byte) string {
	d := digest("enrollment", spkac)
	return "verifiedaccess/" + profile + "/" + hex.EncodeToString(d[:12])
}

func unknownProfile(name string) *Error {
	return fail(CodeUnknownProfile, nil, "no enrollment profile %q", truncate(name))
}

func denied(rules ...string) *Error {
	e := fail(CodePolicyDenied, nil, "the device does not meet the enrollment profile's policy")
	e.FailedRules = rules
	return e
}

// truncate shortens a client-supplied value echoed in a message.
func truncate(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// emailDomain checks that a user identity looks like an e-mail address and returns its domain in
// lower case.
func emailDomain(id string) (string, error) {
	if len(id) > 254 {
		return "", errors.New("longer than 254 characters")
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return "", errors.New("must be an ASCII e-mail address without spaces")
		}
	}
	at := strings.LastIndexByte(id, '@')
	if at <= 0 || at == len(id)-1 {
		return "", errors.New("must be an e-mail address (user@domain)")
	}
	return strings.ToLower(id[at+1:]), nil
}

// readBody reads the request body, at most maxRequestBody bytes, into memory and puts it back
// for decodeBody. A body that cannot be read is replaced by one that fails with the refusal, so
// that the handler answers (and audits) it like any other malformed request.
func readBody(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		e := fail(CodeBadRequest, err, "the request body could not be read")
		if errors.As(err, &tooBig) {
			e = fail(CodeBadRequest, err, "request body larger than %d bytes", maxRequestBody)
		}
		r.Body = failedBody{e}
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
}

// failedBody is a request body that could not be read: every read returns why.
type failedBody struct{ err *Error }

func (b failedBody) Read([]byte) (int, error) { return 0, b.err }
func (b failedBody) Close() error             { return nil }

// decodeBody decodes the JSON object readBody read into v, refusing unknown fields and trailing
// data.
func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return fail(CodeBadRequest, nil, "Content-Type must be application/json")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var unread *Error
		if errors.As(err, &unread) {
			return unread
		}
		return fail(CodeBadRequest, err, "malformed JSON: %v", jsonProblem(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fail(CodeBadRequest, err, "malformed JSON: data after the object")
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("syntax error at byte %d", syntax.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q must be a %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF):
		return "empty body"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + truncate(strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return "not a JSON object"
	}
}

// errorBody is the enrollment API's error envelope.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code        Code     `json:"code"`
	Message     string   `json:"message"`
	FailedRules []string `json:"failedRules,omitempty"`
}

func (s *Server) writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		s.log.Error("enrollment failed unexpectedly", zap.Error(err))
		e = fail(CodeUnavailable, err, "internal error")
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, math.Ceil(e.retryAfter.Seconds())))))
	}
	writeJSON(w, e.Code.Status(), errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, FailedRules: e.FailedRules}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// auditLine logs one operational line per enrollment request, whatever its outcome: who asked,
// what Google said about the device, what was decided, and which certificate was issued. The
// audit trail proper is the event record wrote.
func (s *Server) auditLine(r *http.Request, e *enrollment, err error, took time.Duration) {
	outcome := "issued"
	if err != nil {
		outcome = string(CodeOf(err))
	}
	fields := []zap.Field{
		zap.String("enrollment_id", e.id),
		zap.String("outcome", outcome),
		zap.String("profile", e.profile),
		zap.String("scope", e.scope),
		zap.String("api_version", e.apiVersion),
		zap.String("identity", e.identity),
		zap.String("remote_addr", r.RemoteAddr),
		zap.String("client", requestClient(r).String()),
		zap.Duration("duration", took),
	}
	if res := e.result; res != nil {
		fields = append(fields,
			zap.String("device_permanent_id", res.DevicePermanentID),
			zap.String("device_enrollment_id", res.DeviceEnrollmentID),
			zap.String("attested_device_id", res.AttestedDeviceID),
			zap.String("customer_id", res.CustomerID),
			zap.String("profile_customer_id", res.ProfileCustomerID),
			zap.String("profile_permanent_id", res.ProfilePermanentID),
			zap.String("key_trust_level", res.KeyTrustLevel),
			zap.String("profile_key_trust_level", res.ProfileKeyTrustLevel))
	}
	if e.spkiSHA256 != "" {
		fields = append(fields, zap.String("spki_sha256", e.spkiSHA256))
	}
	if e.issued != nil {
		fields = append(fields,
			zap.String("serial", e.issued.Leaf.SerialNumber.Text(16)),
			zap.String("subject", e.issued.Leaf.Subject.String()),
			zap.Time("not_after", e.issued.Leaf.NotAfter))
	}
	var ve *Error
	if errors.As(err, &ve) {
		if len(ve.FailedRules) > 0 {
			fields = append(fields, zap.Strings("failed_rules", ve.FailedRules))
		}
		if ve.cause != nil {
			fields = append(fields, zap.NamedError("cause", ve.cause))
		}
	} else if err != nil {
		fields = append(fields, zap.Error(err))
	}
	switch CodeOf(err) {
	case CodeUnavailable, CodeCAFailure:
		if err != nil {
			s.enrolled.Warn("verified access enrollment", fields...)
			return
		}
	}
	s.enrolled.Info("verified access enrollment", fields...)
}
