package verifiedaccess

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
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
	"github.com/certprov/certprov-adapter/internal/ca/leafcheck"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/metrics"
	"github.com/certprov/certprov-adapter/internal/pemutil"
	"github.com/certprov/certprov-adapter/internal/swap"
	"github.com/certprov/certprov-adapter/internal/verifiedaccess/wire"
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
	// replayGrace keeps challenges past their lifetime, so that a late answer is told it is
	// late (CHALLENGE_EXPIRED) rather than unknown, and for clock skew between replicas.
	replayGrace = 5 * time.Minute
	// DefaultMaxTracked bounds the challenges MemoryChallenges remembers.
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
	// Challenges remembers the challenges handed out, their age and their use: shared by the
	// replicas of one PostgreSQL journal (postgres.Store.Challenges). nil keeps them in memory
	// (NewMemoryChallenges(MaxTracked)), which serves a single replica.
	Challenges ChallengeStore
	// MaxTracked bounds the memory store (default DefaultMaxTracked); when it is full of
	// unexpired challenges, /challenge answers UNAVAILABLE instead of forgetting one.
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

	challenges ChallengeStore // the challenges handed out: their age and their use

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
	if o.Challenges == nil {
		o.Challenges = NewMemoryChallenges(o.MaxTracked)
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
		profiles:   swap.New(o.Profiles),
		google:     o.Google,
		log:        o.Logger,
		enrolled:   o.Logger.Named("enrollment"),
		recorder:   o.Audit,
		instance:   o.InstanceID,
		now:        o.Now,
		lifetime:   lifetime,
		listen:     o.Config.Listen,
		challenges: o.Challenges,

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
	mux.HandleFunc("POST "+wire.ChallengePath, s.limited(endpointChallenge, s.challengeSlots, s.handleChallenge))
	mux.HandleFunc("POST "+wire.EnrollPath, s.limited(endpointEnroll, s.enrollSlots, s.handleEnroll))
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
			s.purgeChallenges(ctx)
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

// purgeChallenges forgets expired challenges; with a shared store every replica does it, which
// is harmless. A failure is logged and tried again at the next sweep.
func (s *Server) purgeChallenges(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	if _, err := s.challenges.Purge(pctx, s.now()); err != nil && ctx.Err() == nil {
		s.log.Warn("expired challenges could not be forgotten; trying again later", zap.Error(err))
	}
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
func (s *Server) challenge(ctx context.Context, r *http.Request, profile *string) (*wire.ChallengeResponse, error) {
	var req wire.ChallengeRequest
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
	// An answer is accepted only for a challenge remembered here, so one that cannot be
	// remembered is not handed out.
	now := s.now()
	if err := s.challenges.Issue(ctx, challengeID(ch.Data), now, now.Add(s.lifetime+replayGrace)); err != nil {
		s.log.Warn("challenge not recorded; not handed out", zap.String("profile", p.Name), zap.Error(err))
		return nil, fail(CodeUnavailable, err, "the adapter cannot take more enrollments now; try again later")
	}
	s.log.Debug("challenge issued", zap.String("profile", p.Name), zap.String("api_version", p.APIVersion))
	return &wire.ChallengeResponse{
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
	err := s.enroll(ctx, r, e)
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
	out := wire.EnrollResponse{Certificate: string(pemutil.Encode(e.issued.Leaf)), Chain: []string{}}
	for _, c := range e.issued.Chain {
		out.Chain = append(out.Chain, string(pemutil.Encode(c)))
	}
	writeJSON(w, http.StatusOK, out)
}

// enroll runs one enrollment, stage by stage: parse the request, find its profile, check the
// identity the key must belong to, check the challenge it answers, have Google verify the
// answer, check the proof of possession, apply the policy, and issue. On success e.issued holds
// the certificate. Every refusal is an *Error with the code the client sees.
func (s *Server) enroll(ctx context.Context, r *http.Request, e *enrollment) error {
	req, err := parseEnrollRequest(r)
	if err != nil {
		return err
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
	expected, err := expectedIdentity(p, req)
	e.identity = expected
	if err != nil {
		return err
	}
	id, err := s.freshChallenge(ctx, response)
	if err != nil {
		return err
	}
	if e.result, err = s.verifyWithGoogle(ctx, p, response, expected, id); err != nil {
		return err
	}
	spkac, der, err := proofOfPossession(e.result)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(spkac.SPKI)
	e.spkiSHA256 = hex.EncodeToString(sum[:])
	if failed := p.Policy.Evaluate(e.result); len(failed) > 0 {
		return denied(failed...)
	}
	certReq, err := certificateRequest(p, req.Scope, expected, e.result)
	if err != nil {
		return err
	}
	e.issued, err = s.issue(ctx, p, certReq, spkac, der)
	return err
}

// parseEnrollRequest reads the body of POST /enroll and checks that it has what every
// enrollment needs.
func parseEnrollRequest(r *http.Request) (wire.EnrollRequest, error) {
	var req wire.EnrollRequest
	if err := decodeBody(r, &req); err != nil {
		return req, err
	}
	switch {
	case req.Profile == "":
		return req, fail(CodeBadRequest, nil, "profile is required")
	case req.Scope == "":
		return req, fail(CodeBadRequest, nil, "scope is required (machine or user)")
	case req.Scope != config.VAScopeMachine && req.Scope != config.VAScopeUser:
		return req, fail(CodeBadRequest, nil, "unknown scope %q (want machine or user)", truncate(req.Scope))
	case req.ChallengeResponse == "":
		return req, fail(CodeBadRequest, nil, "challengeResponse is required")
	}
	return req, nil
}

// expectedIdentity is who Google must confirm the key belongs to: the profile's enrollment
// domain for a machine key, the user's e-mail address for a user key, once the profile allows
// the scope and, for a user, the address's domain. The identity is returned with a refusal of
// the domain too, for the audit event.
func expectedIdentity(p *Profile, req wire.EnrollRequest) (string, error) {
	if !slices.Contains(p.Scopes, req.Scope) {
		return "", denied(fmt.Sprintf("scopes: got %s, want one of [%s]", req.Scope, strings.Join(p.Scopes, ", ")))
	}
	if req.Scope == config.VAScopeMachine {
		// The contract has clients send no identity for machine keys; one that sends the
		// profile's own domain is tolerated, any other is a mistake worth telling.
		if req.Identity != "" && !strings.EqualFold(req.Identity, p.EnrollmentDomain) {
			return "", fail(CodeBadRequest, nil, "identity is only sent for the user scope; machine keys are checked against the profile's enrollment domain")
		}
		return p.EnrollmentDomain, nil
	}
	if req.Identity == "" {
		return "", fail(CodeBadRequest, nil, "identity (the user's e-mail address) is required for the user scope")
	}
	domain, err := emailDomain(req.Identity)
	if err != nil {
		return "", fail(CodeBadRequest, nil, "identity: %v", err)
	}
	if !slices.Contains(p.UserDomains, domain) {
		return req.Identity, denied(fmt.Sprintf("userDomains: got %s, want one of [%s]", describeValue(domain), strings.Join(p.UserDomains, ", ")))
	}
	return req.Identity, nil
}

// freshChallenge checks the challenge response answers a challenge this adapter handed out,
// unanswered and within its lifetime, and marks it answered: freshness and single use are the
// challenge's (the one the answer names, field 1 of the ChallengeResponse), checked before
// Google sees the answer. It returns the challenge's id.
func (s *Server) freshChallenge(ctx context.Context, response []byte) ([]byte, error) {
	chData, err := wire.AnsweredChallenge(response)
	if err != nil {
		return nil, fail(CodeBadChallenge, err, "the challenge response is not an answer from enterprise.platformKeys.challengeKey: %v", err)
	}
	id := challengeID(chData)
	if err := s.useChallenge(ctx, id); err != nil {
		return nil, err
	}
	return id, nil
}

// verifyWithGoogle has Google verify the answer to challenge id for the expected identity. When
// Google never judged it (unreachable, or refusing the adapter itself), the challenge is
// released, so that the extension may send the same answer again.
func (s *Server) verifyWithGoogle(ctx context.Context, p *Profile, response []byte, expected string, id []byte) (*Result, error) {
	result, err := s.google.Verify(ctx, p.APIVersion, response, expected)
	if err != nil {
		if c := CodeOf(err); c == CodeUnavailable || c == CodeMisconfigured {
			if rerr := s.challenges.Release(context.WithoutCancel(ctx), id); rerr != nil {
				s.log.Warn("challenge not released after Google failed; its answer cannot be sent again", zap.Error(rerr))
			}
		}
		return nil, err
	}
	return result, nil
}

// proofOfPossession returns the SPKAC of a verified answer, parsed and as DER: it must be there
// and verify with its own key.
func proofOfPossession(result *Result) (*SPKAC, []byte, error) {
	if result.SignedPublicKeyAndChallenge == "" {
		return nil, nil, fail(CodeBadChallenge, nil, "the response carries no public key: call challengeKey with registerKey")
	}
	der, err := decodeBase64(result.SignedPublicKeyAndChallenge)
	if err != nil {
		return nil, nil, fail(CodeBadChallenge, err, "the signed public key and challenge is not base64")
	}
	spkac, err := ParseSPKAC(der)
	if err != nil {
		return nil, nil, fail(CodeBadChallenge, err, "the signed public key and challenge does not verify: %v", err)
	}
	return spkac, der, nil
}

// certificateRequest renders the profile's templates over what Google said about the device. A
// name built around a value Google did not return ("urn:device:") is refused, with why, rather
// than certified; templates say what is optional with default, or, if or with.
func certificateRequest(p *Profile, scope, identity string, result *Result) (*csr.Request, error) {
	data := templateData(p.Name, scope, identity, result)
	if missing := p.Template.NeededEmpty(data); len(missing) > 0 {
		return nil, fail(CodeCAFailure, nil, "the certificate cannot be built for this device: %s", missingValues(missing))
	}
	certReq, err := p.Template.RenderData(data)
	if err != nil {
		return nil, fail(CodeCAFailure, err, "the certificate cannot be built for this device: %v", err)
	}
	if len(certReq.UPNs) > 0 {
		return nil, fail(CodeCAFailure, nil, "the profile asks for UPN names, which Verified Access certificates cannot carry")
	}
	return certReq, nil
}

// issue has the profile's CA issue certReq for the SPKAC's key, and hands out only a
// certificate that passes the provisioning path's check: the device's key byte for byte, valid
// now, not a CA, chaining to the connection's roots.
func (s *Server) issue(ctx context.Context, p *Profile, certReq *csr.Request, spkac *SPKAC, spkacDER []byte) (*ca.Issued, error) {
	cctx := ctx
	if p.CATimeout > 0 {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, p.CATimeout)
		defer cancel()
	}
	caStart := s.now()
	issued, err := p.CA.IssueForKey(cctx, &ca.KeyRequest{
		Key:                requestKey(p.Name, spkacDER),
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
	s.cam.Observe(ctx, cctx, p.CAName, metrics.CAIssueForKey, s.now().Sub(caStart), err)
	if err != nil {
		var pending *ca.PendingError
		if errors.As(err, &pending) {
			return nil, fail(CodeCAFailure, err, "the CA queued the request for approval, which Verified Access enrollment cannot wait for")
		}
		return nil, fail(CodeCAFailure, err, "the CA could not issue the certificate")
	}
	if _, err := leafcheck.Check(issued, leafcheck.Expectations{SPKI: spkac.SPKI, Now: s.now()}); err != nil {
		rule := string(leafcheck.RuleOf(err))
		s.m.CertificatesRejected.WithLabelValues(p.CAName, rule).Inc()
		fields := []zap.Field{zap.String("profile", p.Name), zap.String("ca_connection", p.CAName), zap.String("rule", rule), zap.Error(err)}
		if issued != nil && issued.Leaf != nil {
			fields = append(fields, zap.String("serial", issued.Leaf.SerialNumber.Text(16)))
		}
		s.log.Error("the CA's certificate fails the check; withheld", fields...)
		return nil, fail(CodeCAFailure, err, "the CA returned a certificate that cannot be used: %v", err)
	}
	return issued, nil
}

// useChallenge marks the challenge id answered, refusing one this adapter did not hand out (or
// forgot, long expired), one answered before, and one older than the challenge lifetime.
func (s *Server) useChallenge(ctx context.Context, id []byte) error {
	now := s.now()
	issued, first, err := s.challenges.Use(ctx, id, now)
	switch {
	case err != nil:
		s.log.Warn("challenge could not be checked", zap.Error(err))
		return fail(CodeUnavailable, err, "the adapter cannot check the challenge now; try again later")
	case issued.IsZero():
		return fail(CodeBadChallenge, nil, "the response answers a challenge this adapter did not hand out, or one it forgot long after it expired; ask for a new challenge")
	case !first:
		return fail(CodeChallengeReplayed, nil, "this challenge was answered already; ask for a new challenge")
	case now.Sub(issued) > s.lifetime:
		return fail(CodeChallengeExpired, nil, "the challenge is older than %s; ask for a new one", s.lifetime)
	}
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
		ev.Customer = res.CustomerID
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

// truncate shortens a client-supplied value echoed in a message, on a character boundary.
func truncate(s string) string {
	return ca.Truncate(strings.ToValidUTF8(s, "?"), 64, "…")
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

func (s *Server) writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		s.log.Error("enrollment failed unexpectedly", zap.Error(err))
		e = fail(CodeUnavailable, err, "internal error")
	}
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(max(1, math.Ceil(e.retryAfter.Seconds())))))
	}
	writeJSON(w, e.Code.Status(), wire.ErrorBody{Error: wire.ErrorDetail{Code: e.Code, Message: e.Message, FailedRules: e.FailedRules}})
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
