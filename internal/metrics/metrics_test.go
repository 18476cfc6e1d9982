package metrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/certprov/certprov-adapter/internal/ca"
)

// every builds every group on reg, as the adapter does.
func every(reg prometheus.Registerer) {
	RegisterProcess(reg, Build{Version: "v1.2.3", Commit: "abc", GoVersion: "go1.26"})
	NewEngine(reg)
	NewIntake(reg)
	NewGoogleAPI(reg)
	NewCA(reg)
	NewJournal(reg)
	RegisterJournalCommits(reg, func() (uint64, uint64) { return 0, 0 })
	NewVerifiedAccess(reg)
	NewReadiness(reg)
	NewCertificates(reg)
	NewAudit(reg)
	NewAdapter(reg)
	NewDirectory(reg)
	NewRevocations(reg)
}

// TestDeclarationsLint: every metric passes Prometheus' naming lint and carries the namespace.
func TestDeclarationsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	every(reg)
	// Give every vector a child so that it is gathered.
	m := NewEngine(reg)
	m.Finished("issued", "p", "c", time.Second)
	m.Step(StepClaim, time.Millisecond)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if n := f.GetName(); !strings.HasPrefix(n, Namespace+"_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
			t.Errorf("%s lacks the %s_ prefix", n, Namespace)
		}
	}
}

// TestRegisterTwiceSharesSeries: a group built twice on one registry counts into the same
// series; without a registry it still counts.
func TestRegisterTwiceSharesSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	every(reg)
	every(reg) // no panic: the second build reuses the first's collectors
	a, b := NewCA(reg), NewCA(reg)
	a.Requests.WithLabelValues("corp", CAIssue, CAOutcomeOK).Inc()
	if got := testutil.ToFloat64(b.Requests.WithLabelValues("corp", CAIssue, CAOutcomeOK)); got != 1 {
		t.Fatalf("second build sees %v, want 1", got)
	}
	free := NewCA(nil)
	free.Requests.WithLabelValues("corp", CAIssue, CAOutcomeOK).Inc()
	if got := testutil.ToFloat64(free.Requests.WithLabelValues("corp", CAIssue, CAOutcomeOK)); got != 1 {
		t.Fatalf("unregistered group counts %v", got)
	}
	if got := testutil.ToFloat64(a.Requests.WithLabelValues("corp", CAIssue, CAOutcomeOK)); got != 1 {
		t.Fatalf("an unregistered group counted into the registry: %v", got)
	}
}

func TestCAOutcome(t *testing.T) {
	live := context.Background()
	cut, cancel := context.WithCancel(live)
	cancel()
	tests := []struct {
		name      string
		ctx, call context.Context
		err       error
		want      string
	}{
		{"ok", live, live, nil, CAOutcomeOK},
		{"permanent", live, live, ca.Permanentf("refused"), "permanent"},
		{"pending", live, live, &ca.PendingError{Ticket: "t"}, "pending"},
		{"unclassified is retryable", live, live, errors.New("boom"), "retryable"},
		{"cut by the connection timeout", live, cut, context.DeadlineExceeded, CAOutcomeTimeout},
		{"given up by the caller", cut, cut, context.Canceled, CAOutcomeCanceled},
	}
	for _, tt := range tests {
		if got := CAOutcome(tt.ctx, tt.call, tt.err); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestRoundTripperCodes counts real HTTP exchanges by method and code: statuses, a refused
// connection, a deadline and a cancellation.
func TestRoundTripperCodes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-r.Context().Done()
		case "/busy":
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	_ = ln.Close()

	m := NewGoogleAPI(nil)
	client := &http.Client{Transport: m.RoundTripper(APIChromeManagement, func(r *http.Request) string {
		return strings.TrimPrefix(r.URL.Path, "/")
	}, nil)}
	do := func(ctx context.Context, url string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	do(context.Background(), srv.URL+"/ok")
	do(context.Background(), srv.URL+"/ok")
	do(context.Background(), srv.URL+"/busy")
	do(context.Background(), refused+"/down")
	deadline, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	do(deadline, srv.URL+"/slow")
	cancel()
	gone, stop := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); stop() }()
	do(gone, srv.URL+"/slow")

	for _, c := range []struct {
		method, code string
		want         float64
	}{
		{"ok", "200", 2}, {"busy", "429", 1}, {"down", CodeError, 1}, {"slow", CodeTimeout, 1}, {"slow", CodeCanceled, 1},
	} {
		if got := testutil.ToFloat64(m.Requests.WithLabelValues(APIChromeManagement, c.method, c.code)); got != c.want {
			t.Errorf("requests{method=%q,code=%q} = %v, want %v", c.method, c.code, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.Requests); n != 5 {
		t.Errorf("%d series, want 5", n)
	}
}

func testCert(t *testing.T, cn string, serial int64, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCertificateExpiry exports each held certificate's notAfter once, reading the sources at
// every scrape, so a renewed certificate shows without a restart.
func TestCertificateExpiry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewCertificates(reg)
	at := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	issuer := testCert(t, "Corp CA", 7, at)
	client := testCert(t, "adapter", 9, at.Add(24*time.Hour))
	current := client
	c.Add(KindCAConnection, "corp", func() []HeldCertificate {
		return []HeldCertificate{{Role: ca.RoleIssuer, Cert: issuer}, {Role: ca.RoleClient, Cert: current},
			{Role: ca.RoleIssuer, Cert: issuer}, {Role: ca.RoleRoot, Cert: nil}}
	})
	c.Add(KindVerifiedAccess, "server", func() []HeldCertificate { return nil })
	want := func(clientSerial string, clientExpiry int64) string {
		return `
# HELP certprov_certificate_expiry_timestamp_seconds When a certificate the adapter relies on expires (notAfter, Unix seconds), by holder kind and name, role, subject and serial.
# TYPE certprov_certificate_expiry_timestamp_seconds gauge
certprov_certificate_expiry_timestamp_seconds{kind="ca_connection",name="corp",role="client",serial="` + clientSerial + `",subject="CN=adapter"} ` + big.NewInt(clientExpiry).String() + `
certprov_certificate_expiry_timestamp_seconds{kind="ca_connection",name="corp",role="issuer",serial="7",subject="CN=Corp CA"} ` + big.NewInt(at.Unix()).String() + `
`
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("9", client.NotAfter.Unix())), "certprov_certificate_expiry_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
	current = testCert(t, "adapter", 10, at.Add(48*time.Hour)) // renewed
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want("a", current.NotAfter.Unix())), "certprov_certificate_expiry_timestamp_seconds"); err != nil {
		t.Fatal(err)
	}
	// A reload that drops the connection drops its certificates.
	c.SetKind(KindCAConnection, nil)
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Fatalf("%d certificates after the connection was removed", n)
	}
}
