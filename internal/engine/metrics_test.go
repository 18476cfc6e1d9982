package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/metrics"
)

// TestMetricsFollowProcesses runs issued and failing processes and malformed messages through
// the emulator and checks that the metrics say what happened: outcomes by profile and CA
// connection, one sample per step that succeeded, Google API calls by method exactly as the
// emulator counted them, CA calls, and Pub/Sub messages by result.
func TestMetricsFollowProcesses(t *testing.T) {
	h := newHarness(t, harnessOptions{signDeadline: 700 * time.Millisecond})
	ctx := context.Background()
	const junk = 3
	for range junk {
		if err := h.emu.Publish(ctx, []byte("not a notification")); err != nil {
			t.Fatal(err)
		}
	}
	var issued, names []string
	for i := range 6 {
		issued = append(issued, h.start(emulator.ProcessSpec{KeyType: []string{emulator.KeyRSA, emulator.KeyECDSA}[i%2]}))
	}
	for range 2 {
		issued = append(issued, h.start(emulator.ProcessSpec{Scope: emulator.ScopeUser, KeyType: emulator.KeyECDSA}))
	}
	silent := h.start(emulator.ProcessSpec{Behaviour: emulator.BehaviourNeverSign}) // fails at its sign deadline
	unknown := h.start(emulator.ProcessSpec{ProfileRef: "no-such-profile"})         // fails before signData
	names = append(append(names, issued...), silent, unknown)
	snaps := h.waitFinished(names, 30*time.Second)
	for _, n := range issued {
		h.mustIssue(snaps[n])
	}
	for _, n := range []string{silent, unknown} {
		if snaps[n].State != emulator.StateFailed {
			t.Fatalf("%s: state %s, want failed", n, snaps[n].State)
		}
	}
	h.waitJournalIdle(10 * time.Second)

	m := h.metrics
	for _, c := range []struct {
		outcome, profile, ca string
		want                 int
	}{
		{"issued", "device", "builtin", 6},
		{"issued", "user", "builtin", 2},
		{"failed", "device", "builtin", 1}, // the profile resolved before the device went silent
		{"failed", "", "", 1},              // an unknown profile resolves to nothing
	} {
		if got := count(m.ProcessesFinished.WithLabelValues(c.outcome, c.profile, c.ca)); got != c.want {
			t.Errorf("certprov_processes_finished_total{outcome=%q,profile=%q,ca_connection=%q} = %d, want %d", c.outcome, c.profile, c.ca, got, c.want)
		}
	}
	if got := h.Metric("certprov_processes_finished_total"); got != float64(len(names)) {
		t.Errorf("%v processes finished in all, want %d", got, len(names))
	}
	for outcome, want := range map[string]float64{"issued": 8, "failed": 2} {
		if got := h.Metric("certprov_process_duration_seconds", "outcome", outcome); got != want {
			t.Errorf("process_duration_seconds{outcome=%q}: %v samples, want %v", outcome, got, want)
		}
	}
	for step, want := range map[string]float64{
		metrics.StepClaim:         10,
		metrics.StepSignRequest:   9, // not the unknown profile
		metrics.StepSignWait:      8,
		metrics.StepCAIssue:       8,
		metrics.StepUpload:        8,
		metrics.StepReportFailure: 2,
	} {
		if got := h.Metric("certprov_step_duration_seconds", "step", step); got != want {
			t.Errorf("step_duration_seconds{step=%q}: %v samples, want %v", step, got, want)
		}
	}

	// Google API calls by method are what the emulator itself counted, all answered 200.
	want := map[string]int{}
	total := 0
	for _, s := range h.emu.Snapshots() {
		for method, n := range s.Calls {
			want[method] += n
			total += n
		}
	}
	for _, method := range []string{emulator.MethodGet, emulator.MethodClaim, emulator.MethodSignData,
		emulator.MethodOperationsGet, emulator.MethodUploadCertificate, emulator.MethodSetFailure} {
		if got := h.Metric("certprov_google_api_requests_total", "api", metrics.APIChromeManagement, "method", method, "code", "200"); got != float64(want[method]) {
			t.Errorf("google_api_requests_total{method=%q,code=200} = %v, emulator counted %d", method, got, want[method])
		}
	}
	if want[emulator.MethodUploadCertificate] != 8 || want[emulator.MethodSetFailure] != 2 {
		t.Errorf("emulator counts %v: want 8 uploads and 2 setFailure", want)
	}
	if got := h.Metric("certprov_google_api_requests_total"); got != float64(total) {
		t.Errorf("%v Google API requests counted, emulator counted %d", got, total)
	}
	if got := h.Metric("certprov_google_api_request_duration_seconds"); got != float64(total) {
		t.Errorf("%v request durations observed for %d requests", got, total)
	}
	if got := h.Metric("certprov_google_api_rate_limit_wait_seconds", "api", metrics.APIChromeManagement); got != float64(total) {
		t.Errorf("%v rate limit waits observed for %d requests", got, total)
	}

	if got := count(h.cam.Requests.WithLabelValues("builtin", metrics.CAIssue, metrics.CAOutcomeOK)); got != 8 {
		t.Errorf("ca_requests_total{builtin,issue,ok} = %d, want 8", got)
	}
	if got := h.Metric("certprov_ca_requests_total"); got != 8 {
		t.Errorf("%v CA calls in all, want 8", got)
	}
	if got := count(m.SignRequests); got != 9 {
		t.Errorf("sign_requests_total = %d, want 9", got)
	}
	if got := count(m.SignDeadlineExceeded); got != 1 {
		t.Errorf("sign_deadline_exceeded_total = %d, want 1", got)
	}
	if got := count(m.Admissions.WithLabelValues("claimed")); got != len(names) {
		t.Errorf("admissions_total{claimed} = %d, want %d", got, len(names))
	}
	if got := failuresDecided(h); got != 2 {
		t.Errorf("%d transitions to failing, want 2", got)
	}
	if got := h.Metric("certprov_processes_in_flight"); got != 0 {
		t.Errorf("%v processes in flight once all finished", got)
	}
	waitFor(t, 10*time.Second, func() bool {
		return count(h.intake.Messages.WithLabelValues(metrics.MessageMalformed)) == junk &&
			count(h.intake.Messages.WithLabelValues(metrics.MessageAdmitted)) == len(names)
	})
	if got := h.Metric("certprov_pubsub_messages_total"); got != float64(junk+len(names)) {
		t.Errorf("%v Pub/Sub messages counted, %d published", got, junk+len(names))
	}
}
