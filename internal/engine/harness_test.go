package engine_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/engine"
	"github.com/certprov/certprov-adapter/internal/intake"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/telemetry"
)

const (
	testCustomer = "C0test"
	instanceID   = "adapter-under-test"
)

// harness runs the real pieces together on loopback: the emulator's REST API over HTTP, its
// pstest Pub/Sub over gRPC, the Chrome API client, the engine, the intake and the local CA.
type harness struct {
	t       *testing.T
	emu     *emulator.Emulator
	roots   *x509.CertPool
	local   *local.Connector
	metrics *telemetry.Counters
	store   journal.Store
	api     *chromeapi.Client // the adapter's own client, for tests that set the scene
}

type harnessOptions struct {
	signDeadline time.Duration
	retryFor     time.Duration
	// extraCAs are added next to the "builtin" local CA.
	extraCAs func(h *harness) map[string]ca.Connector
}

func testProfile(cn, sanEmail string, deadline time.Duration) config.Profile {
	p := config.Profile{
		Subject:      config.Subject{CommonName: cn, Organization: []string{"Example Corp"}},
		KeyUsage:     []string{"digitalSignature", "keyEncipherment"},
		ExtKeyUsage:  []string{"clientAuth"},
		Validity:     24 * time.Hour,
		SignDeadline: deadline,
	}
	if sanEmail != "" {
		p.SubjectAltNames.Email = []string{sanEmail}
	}
	return p
}

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	if o.signDeadline == 0 {
		o.signDeadline = 30 * time.Second
	}
	if o.retryFor == 0 {
		o.retryFor = 20 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))

	emu, err := emulator.New(ctx, emulator.Options{Project: "test", Topic: "certprov", Subscription: "adapter", Logger: log.Named("emulator")})
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	rest := httptest.NewServer(emu.Handler())

	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "test CA", 48*time.Hour)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	conn, err := ca.New("local", ca.Settings{"certificateFile": certPath, "keyFile": keyPath, "ledgerFile": filepath.Join(dir, "ledger.jsonl")}, ca.Env{Name: "builtin", Logger: log})
	if err != nil {
		t.Fatalf("local CA: %v", err)
	}
	h := &harness{t: t, emu: emu, roots: x509.NewCertPool(), local: conn.(*local.Connector), metrics: &telemetry.Counters{}, store: journal.NewMemory()}
	h.roots.AddCert(readCert(t, certPath))

	cas := map[string]*engine.CAConnection{"builtin": {Connector: conn, Timeout: 10 * time.Second}}
	if o.extraCAs != nil {
		for name, c := range o.extraCAs(h) {
			cas[name] = &engine.CAConnection{Connector: c, Timeout: 10 * time.Second}
		}
	}
	profiles := map[string]*engine.Profile{}
	for name, p := range map[string]config.Profile{
		"device": testProfile("{{.Device.SerialNumber}}", "", o.signDeadline),
		"user":   testProfile("{{.User.Email}}", "{{.User.Email}}", o.signDeadline),
	} {
		tmpl, err := csr.Compile(p)
		if err != nil {
			t.Fatalf("compile profile %s: %v", name, err)
		}
		profiles[name] = &engine.Profile{Template: tmpl, Validity: p.Validity, SignDeadline: p.SignDeadline}
	}

	api, err := chromeapi.New(ctx, chromeapi.Options{
		Google: config.Google{
			Endpoint:       rest.URL + "/",
			Credentials:    config.Credentials{Type: config.CredentialsNone},
			RateLimit:      config.RateLimit{RequestsPerSecond: 2000, Burst: 200},
			RequestTimeout: 5 * time.Second,
		},
		Logger:        log.Named("chromeapi"),
		MaxInlineWait: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("api client: %v", err)
	}
	h.api = api
	eng, err := engine.New(engine.Options{
		InstanceID:      instanceID,
		API:             api,
		Store:           h.store,
		Profiles:        profiles,
		CAs:             cas,
		Workers:         8,
		PollInterval:    20 * time.Millisecond,
		MaxPollInterval: 200 * time.Millisecond,
		Retry:           config.Retry{InitialBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxDuration: o.retryFor},
		Logger:          log.Named("engine"),
		Metrics:         h.metrics,
	})
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	ps, err := pubsub.NewClient(ctx, "test", option.WithEndpoint(emu.PubSubAddr()), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatalf("pubsub client: %v", err)
	}
	recv := intake.NewReceiver(eng, []string{testCustomer}, log.Named("intake"), h.metrics)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = eng.Run(ctx) }()
	go func() { defer wg.Done(); _ = recv.Run(ctx, ps.Subscriber("adapter")) }()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = ps.Close()
		rest.Close()
		_ = emu.Close()
	})
	return h
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (h *harness) start(spec emulator.ProcessSpec) string {
	h.t.Helper()
	if spec.Customer == "" {
		spec.Customer = testCustomer
	}
	if spec.CARef == "" {
		spec.CARef = "builtin"
	}
	if spec.ProfileRef == "" && spec.SCEPProfile == nil {
		spec.ProfileRef = "device"
		if spec.Scope == "user" {
			spec.ProfileRef = "user"
		}
	}
	name, err := h.emu.StartProcess(context.Background(), spec)
	if err != nil {
		h.t.Fatalf("start process: %v", err)
	}
	return name
}

// waitFinished waits until every named process has ended on the emulator's side.
func (h *harness) waitFinished(names []string, timeout time.Duration) map[string]emulator.Snapshot {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := map[string]emulator.Snapshot{}
		pending := 0
		for _, n := range names {
			s, ok := h.emu.Process(n)
			if !ok {
				h.t.Fatalf("emulator lost process %s", n)
			}
			if !s.Finished() {
				pending++
			}
			out[n] = s
		}
		if pending == 0 {
			return out
		}
		if time.Now().After(deadline) {
			for _, s := range out {
				if !s.Finished() {
					h.t.Errorf("unfinished: %s state=%s calls=%v", s.Name, s.State, s.Calls)
				}
			}
			h.t.Fatalf("%d of %d processes unfinished after %s", pending, len(names), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitJournal waits until the journal holds no unfinished record (all work done locally).
func (h *harness) waitJournalIdle(timeout time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		recs, err := h.store.Unfinished(context.Background())
		if err != nil {
			h.t.Fatal(err)
		}
		if len(recs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d journal records unfinished, first %s in %s", len(recs), recs[0].Name, recs[0].State)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mustIssue asserts that s ended with a certificate that chains to the test CA and carries the
// device key, that signData was requested exactly once, and that the CA issued exactly once.
func (h *harness) mustIssue(s emulator.Snapshot) *x509.Certificate {
	h.t.Helper()
	if s.State != "issued" {
		h.t.Fatalf("%s: state %s, failure %q", s.Name, s.State, s.FailureMessage)
	}
	leaf, err := emulator.VerifyIssued(s, h.roots, nil)
	if err != nil {
		h.t.Fatalf("%s: %v", s.Name, err)
	}
	if s.SignDataCount != 1 {
		h.t.Fatalf("%s: signData called %d times", s.Name, s.SignDataCount)
	}
	if n := h.local.Issued(s.Name); n != 1 {
		h.t.Fatalf("%s: CA issued %d certificates", s.Name, n)
	}
	return leaf
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
