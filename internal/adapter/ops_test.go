package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/metrics/metricstest"
	"github.com/certprov/certprov-adapter/internal/ops"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

// daemon is an adapter built from a configuration and running against an emulator.
type daemon struct {
	t      *testing.T
	emu    *emulator.Emulator
	a      *Adapter
	base   string // the ops listener, http://host:port
	caCert string // the built-in CA's certificate file
	stop   func() error
}

// startDaemon runs the adapter against a new emulator, with a built-in CA connection named
// builtin, a SQLite journal and the ops listener on a free port; extra is appended to the YAML
// (it may use %[1]s for the config directory).
func startDaemon(t *testing.T, extra string) *daemon {
	t.Helper()
	ctx := context.Background()
	log := zaptest.NewLogger(t)
	emu, rest := startEmulator(t, log)
	dir := t.TempDir()
	certPath, keyPath, err := local.CreateCA(dir, "ecdsa", "ops test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`
instanceId: a1
customers: [%s]
pubsub: {project: p, subscription: s, endpoint: %q, insecure: true}
google: {credentials: {type: none}, endpoint: %q}
engine: {pollInterval: 20ms, maxPollInterval: 200ms}
journal: {type: sqlite, path: journal.db}
ops: {listen: "127.0.0.1:0", checkInterval: 50ms, checkTimeout: 2s}
profiles:
  device: {subject: {commonName: "{{.Device.SerialNumber}}"}, extendedKeyUsage: [clientAuth]}
  user: {subject: {commonName: "{{.User.Email}}"}, subjectAltNames: {email: ["{{.User.Email}}"]}, extendedKeyUsage: [clientAuth]}
  renew: {subject: {commonName: "{{.Device.SerialNumber}}"}, revokeSuperseded: {enabled: true, gracePeriod: 1h, caConnections: [builtin]}}
caConnections:
  builtin: {type: local, certificateFile: %q, keyFile: %q, ledgerFile: ledger.jsonl, crlFile: ca.crl}
`, emulator.DefaultCustomer, emu.PubSubAddr(), rest.URL+"/", certPath, keyPath) + strings.ReplaceAll(extra, "%[1]s", dir)
	cfg, err := config.Parse([]byte(yaml), dir)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	a, err := New(ctx, cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	d := &daemon{t: t, emu: emu, a: a, base: "http://" + a.Ops.Addr().String(), caCert: certPath}
	stopped := false
	d.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		err := <-done
		_ = a.Close()
		return err
	}
	t.Cleanup(func() { _ = d.stop() })
	return d
}

func (d *daemon) get(path string) (int, []byte) {
	d.t.Helper()
	resp, err := http.Get(d.base + path)
	if err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	return resp.StatusCode, b
}

type readyzAnswer struct {
	Ready  bool              `json:"ready"`
	Checks []ops.CheckResult `json:"checks"`
}

func (r readyzAnswer) check(name string) ops.CheckResult {
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	return ops.CheckResult{Name: name, Detail: "absent"}
}

// waitReadyz polls /readyz until its status is want and, when check is set, that check's
// readiness is wantCheck; it returns the answer.
func (d *daemon) waitReadyz(want int, check string, wantCheck bool) readyzAnswer {
	d.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := d.get("/readyz")
		var r readyzAnswer
		if err := json.Unmarshal(body, &r); err != nil {
			d.t.Fatalf("/readyz %q: %v", body, err)
		}
		if code == want && (check == "" || r.check(check).Ready == wantCheck) {
			return r
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("/readyz %d, want %d (check %s ready=%v): %s", code, want, check, wantCheck, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadinessFollowsDependencies runs the daemon with a real SCEP server and the emulator's
// Pub/Sub: /readyz is 200 with every dependency up, 503 while the SCEP server is stopped or
// Pub/Sub is down, naming the failing check, and 200 again once each is back on its port.
func TestReadinessFollowsDependencies(t *testing.T) {
	scep := testservers.StartSCEP(t, "")
	d := startDaemon(t, fmt.Sprintf(`
  corp-scep: {type: scep, url: %q, signerKeyFile: scep-signer.key, signerCertFile: scep-signer.crt, timeout: 10s}
`, scep.URL))
	if code, body := d.get("/healthz"); code != 200 || string(body) != "ok\n" {
		t.Fatalf("/healthz %d %q", code, body)
	}
	r := d.waitReadyz(http.StatusOK, "", false)
	for _, name := range []string{"config", "journal", "pubsub", "google_token", "ca_connection:builtin", "ca_connection:corp-scep"} {
		if c := r.check(name); !c.Ready || c.Detail == "" {
			t.Errorf("check %s: %+v", name, c)
		}
	}
	if c := r.check("journal"); !strings.HasPrefix(c.Detail, "writable (sqlite)") {
		t.Errorf("journal check detail %q", c.Detail)
	}

	scep.Stop()
	r = d.waitReadyz(http.StatusServiceUnavailable, "ca_connection:corp-scep", false)
	if c := r.check("ca_connection:corp-scep"); !strings.Contains(c.Detail, "connection refused") {
		t.Errorf("stopped SCEP server: detail %q", c.Detail)
	}
	for _, name := range []string{"pubsub", "ca_connection:builtin"} {
		if !r.check(name).Ready {
			t.Errorf("%s not ready while only the SCEP server is down: %+v", name, r.check(name))
		}
	}
	scep.Start()
	d.waitReadyz(http.StatusOK, "", false)

	if err := d.emu.StopPubSub(); err != nil {
		t.Fatal(err)
	}
	r = d.waitReadyz(http.StatusServiceUnavailable, "pubsub", false)
	if c := r.check("pubsub"); !strings.Contains(c.Detail, "no Pub/Sub stream open") {
		t.Errorf("Pub/Sub down: detail %q", c.Detail)
	}
	if err := d.emu.StartPubSub(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.waitReadyz(http.StatusOK, "", false)

	// Notifications flow again: a process started now is provisioned.
	name, err := d.emu.StartProcess(context.Background(), emulator.ProcessSpec{ProfileRef: "device", CARef: "corp-scep"})
	if err != nil {
		t.Fatal(err)
	}
	waitFinished(t, d.emu, name)
	if s, _ := d.emu.Process(name); s.State != emulator.StateIssued {
		t.Fatalf("after the outages: %s %s %q", name, s.State, s.FailureMessage)
	}
	families := d.scrape()
	for check, want := range map[string]float64{"pubsub": 1, "ca_connection:corp-scep": 1} {
		if got := value(families, "certprov_readiness_check", map[string]string{"check": check}); got != want {
			t.Errorf("certprov_readiness_check{check=%q} = %v, want %v", check, got, want)
		}
	}
	// The pings were counted as CA calls, the failed ones too.
	if got := value(families, "certprov_ca_requests_total", map[string]string{"ca_connection": "corp-scep", "operation": "ping", "outcome": "retryable"}); got < 1 {
		t.Errorf("failed pings of the stopped SCEP server counted %v times", got)
	}

	if err := d.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := http.Get(d.base + "/healthz"); err == nil {
		t.Error("the ops listener still answers after Run returned")
	}
}

// TestMetricsScrape provisions processes through the daemon and reads /metrics over HTTP as
// Prometheus would, parsing the exposition format.
func TestMetricsScrape(t *testing.T) {
	d := startDaemon(t, "")
	const n = 4
	var names []string
	for i := range n {
		name, err := d.emu.StartProcess(context.Background(), emulator.ProcessSpec{ProfileRef: "device", CARef: "builtin",
			KeyType: []string{emulator.KeyRSA, emulator.KeyECDSA}[i%2]})
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	if err := d.emu.Publish(context.Background(), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		waitFinished(t, d.emu, name)
	}
	calls := map[string]float64{}
	for _, s := range d.emu.Snapshots() {
		if s.State != emulator.StateIssued {
			t.Fatalf("%s: %s %q", s.Name, s.State, s.FailureMessage)
		}
		for m, c := range s.Calls {
			calls[m] += float64(c)
		}
	}

	var families map[string]*dto.MetricFamily
	deadline := time.Now().Add(20 * time.Second)
	for {
		families = d.scrape()
		// The journal counts are sampled by the readiness check, the malformed message
		// arrives on its own.
		if value(families, "certprov_journal_records", map[string]string{"state": "uploaded"}) == n &&
			value(families, "certprov_pubsub_messages_total", map[string]string{"result": "malformed"}) == 1 &&
			value(families, "certprov_processes_finished_total", nil) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journal records %v, malformed %v, finished %v",
				value(families, "certprov_journal_records", map[string]string{"state": "uploaded"}),
				value(families, "certprov_pubsub_messages_total", map[string]string{"result": "malformed"}),
				value(families, "certprov_processes_finished_total", nil))
		}
		time.Sleep(50 * time.Millisecond)
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"certprov_processes_finished_total", map[string]string{"outcome": "issued", "profile": "device", "ca_connection": "builtin"}, n},
		{"certprov_step_duration_seconds", map[string]string{"step": "ca_issue"}, n},
		{"certprov_step_duration_seconds", map[string]string{"step": "upload"}, n},
		{"certprov_process_duration_seconds", map[string]string{"outcome": "issued"}, n},
		{"certprov_ca_requests_total", map[string]string{"ca_connection": "builtin", "operation": "issue", "outcome": "ok"}, n},
		{"certprov_pubsub_messages_total", map[string]string{"result": "admitted"}, n},
		{"certprov_journal_records", map[string]string{"state": "claimed"}, 0},
		{"certprov_processes_in_flight", nil, 0},
		{"certprov_ready", nil, 1},
	}
	for method, c := range calls {
		checks = append(checks, struct {
			name   string
			labels map[string]string
			want   float64
		}{"certprov_google_api_requests_total", map[string]string{"api": "chromemanagement", "method": method, "code": "200"}, c})
	}
	for _, c := range checks {
		if got := value(families, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if calls[emulator.MethodUploadCertificate] != n {
		t.Errorf("emulator counted %v uploads", calls[emulator.MethodUploadCertificate])
	}

	if code, _ := d.get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without ops.pprof: %d, want 404", code)
	}

	// Build info, the Go runtime and the process.
	info := families["certprov_build_info"]
	if info == nil || len(info.GetMetric()) != 1 || info.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("certprov_build_info %v", info)
	}
	labels := map[string]string{}
	for _, l := range info.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] == "" || labels["commit"] == "" || !strings.HasPrefix(labels["go_version"], "go") {
		t.Errorf("build info labels %v", labels)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if families[name] == nil {
			t.Errorf("%s missing", name)
		}
	}

	// The built-in CA's certificate expiry, as its file says.
	issuer, err := local.New(ca.Settings{"certificateFile": d.caCert, "keyFile": filepath.Join(filepath.Dir(d.caCert), "ca.key")}, ca.Env{})
	if err != nil {
		t.Fatal(err)
	}
	cert := issuer.Certificate()
	exp := value(families, "certprov_certificate_expiry_timestamp_seconds", map[string]string{
		"kind": "ca_connection", "name": "builtin", "role": "issuer", "serial": cert.SerialNumber.Text(16)})
	if exp != float64(cert.NotAfter.Unix()) {
		t.Errorf("builtin CA expiry %v, want %d", exp, cert.NotAfter.Unix())
	}
}

// scrape reads /metrics and parses it.
func (d *daemon) scrape() map[string]*dto.MetricFamily {
	d.t.Helper()
	code, body := d.get("/metrics")
	if code != 200 {
		d.t.Fatalf("/metrics %d: %s", code, body)
	}
	return metricstest.Parse(d.t, string(body))
}

// value sums the samples of family name whose labels include want (metricstest.Sum).
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	var pairs []string
	for k, v := range want {
		pairs = append(pairs, k, v)
	}
	return metricstest.Sum(families, name, pairs...)
}

func waitFinished(t *testing.T, emu *emulator.Emulator, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, ok := emu.Process(name)
		if !ok {
			t.Fatalf("emulator lost %s", name)
		}
		if s.Finished() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(errors.New(name + " unfinished in state " + s.State))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPprofEnabled: ops.pprof (here from the environment, as an operator would set it for a
// session) serves the profiler on the ops listener.
// TestRevocationsPendingMetric: the daemon, built from a configuration with a profile that
// revokes superseded certificates, journals the revocation a renewal decides, and the journal
// readiness check samples it: certprov_revocations_pending and the check's detail count it.
func TestRevocationsPendingMetric(t *testing.T) {
	d := startDaemon(t, "")
	for range 2 {
		name, err := d.emu.StartProcess(context.Background(), emulator.ProcessSpec{ProfileRef: "renew", CARef: "builtin",
			Serial: "5CD0001", DeviceDirectoryID: "dev-1"})
		if err != nil {
			t.Fatal(err)
		}
		waitFinished(t, d.emu, name)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		families := d.scrape()
		pending := value(families, "certprov_revocations_pending", nil)
		decided := value(families, "certprov_revocations_decided_total", map[string]string{"profile": "renew"})
		if pending == 1 && decided == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certprov_revocations_pending %v, certprov_revocations_decided_total %v; want 1 and 1", pending, decided)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var journalDetail string
	for _, r := range d.a.Ops.Readiness() {
		if r.Name == "journal" {
			journalDetail = r.Detail
		}
	}
	if !strings.Contains(journalDetail, "1 revocations pending") {
		t.Errorf("journal check detail %q does not count the pending revocation", journalDetail)
	}
}

func TestPprofEnabled(t *testing.T) {
	t.Setenv("CERTPROV_OPS_PPROF", "true")
	d := startDaemon(t, "")
	code, body := d.get("/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("/debug/pprof/goroutine = %d:\n%.300s", code, body)
	}
}
