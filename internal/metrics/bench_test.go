package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// roundTripFunc answers without a network, so the benchmark measures the instrumentation.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkRoundTripper is the cost the instrumentation adds to one Google API request.
func BenchmarkRoundTripper(b *testing.B) {
	m := NewGoogleAPI(prometheus.NewRegistry())
	ok := &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(""))}
	rt := m.RoundTripper(APIChromeManagement, func(*http.Request) string { return "get" },
		roundTripFunc(func(*http.Request) (*http.Response, error) { return ok, nil }))
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/v1/customers/C0/certificateProvisioningProcesses/X", nil)
	b.ReportAllocs()
	for b.Loop() {
		_, _ = rt.RoundTrip(req)
	}
}

// BenchmarkFinished is the cost of recording one finished process (counter and histogram).
func BenchmarkFinished(b *testing.B) {
	m := NewEngine(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.Finished("issued", "device", "corp-ca", 3*time.Second)
	}
}

// BenchmarkGather is one scrape's gathering with every group registered and a realistic number
// of series (10 profiles × 3 CA connections × 5 outcomes, every step and method).
func BenchmarkGather(b *testing.B) {
	reg := prometheus.NewRegistry()
	every(reg)
	e, g := NewEngine(reg), NewGoogleAPI(reg)
	for p := range 10 {
		for c := range 3 {
			for _, o := range []string{"issued", "issued_before", "failed", "failed_by_google", "failure_unreported"} {
				e.Finished(o, "profile-"+string(rune('a'+p)), "ca-"+string(rune('a'+c)), time.Second)
			}
		}
	}
	for _, s := range []string{StepClaim, StepSignRequest, StepSignWait, StepCAIssue, StepUpload, StepReportFailure} {
		e.Step(s, time.Second)
	}
	for _, m := range []string{"get", "claim", "signData", "operations.get", "uploadCertificate", "setFailure"} {
		g.Requests.WithLabelValues(APIChromeManagement, m, "200").Inc()
		g.RequestDuration.WithLabelValues(APIChromeManagement, m).Observe(0.1)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
