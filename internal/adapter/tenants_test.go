package adapter

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// Customers of the two tenants the tests run.
const (
	customerA = "C0tenanta"
	customerB = "C0tenantb"
)

// tenantScene is one emulator serving two customers, each notified on a topic of its own, and
// two built-in CAs, one per tenant.
type tenantScene struct {
	t          testing.TB
	emu        *emulator.Emulator
	rest       *httptest.Server
	dir        string
	rootsA     *x509.CertPool
	rootsB     *x509.CertPool
	caA, caB   [2]string // certificate and key files
	subA, subB string
	// journal is the configuration's journal section (default: SQLite, journal.db).
	journal string
}

func newTenantScene(t testing.TB, rest func(http.Handler) http.Handler) *tenantScene {
	t.Helper()
	log := zaptest.NewLogger(t)
	emu, err := emulator.New(context.Background(), emulator.Options{Project: "p", Subscription: "s", Logger: log.Named("emulator")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	var h http.Handler = emu.Handler()
	if rest != nil {
		h = rest(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s := &tenantScene{t: t, emu: emu, rest: srv, dir: t.TempDir()}
	for _, c := range []struct {
		customer, topic, sub string
		into                 *string
	}{{customerA, "topic-a", "sub-a", &s.subA}, {customerB, "topic-b", "sub-b", &s.subB}} {
		if *c.into, err = emu.CustomerTopic(context.Background(), c.customer, c.topic, c.sub); err != nil {
			t.Fatal(err)
		}
	}
	s.caA, s.rootsA = s.newCA("a")
	s.caB, s.rootsB = s.newCA("b")
	return s
}

func (s *tenantScene) newCA(name string) ([2]string, *x509.CertPool) {
	s.t.Helper()
	dir := filepath.Join(s.dir, "ca-"+name)
	cert, key, err := local.CreateCA(dir, "ecdsa", "tenant "+name+" CA", 24*time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	pem, err := os.ReadFile(cert)
	if err != nil {
		s.t.Fatal(err)
	}
	certs, err := pemutil.ParseCertificates(pem)
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(certs[0])
	return [2]string{cert, key}, pool
}

// tenantYAML is one tenant's entry: its customer, subscription and a profile "device" whose
// organization names the tenant; conn is its caConnections mapping and google extra keys of
// its google section.
func (s *tenantScene) tenantYAML(name, customer, sub, org, conn, google string) string {
	return fmt.Sprintf(`
  - name: %s
    customers: [%s]
    pubsub: {project: p, subscription: %q, endpoint: %q, insecure: true}
    google: {credentials: {type: none}, endpoint: %q, %s}
    profiles:
      device: {subject: {commonName: "{{.Device.SerialNumber}}", organization: [%s]}, extendedKeyUsage: [clientAuth]}
    caConnections:
%s`, name, customer, sub, s.emu.PubSubAddr(), s.rest.URL+"/", google, org, conn)
}

// localConn is a caConnections entry "corp" for the built-in CA with files ca.
func (s *tenantScene) localConn(ca [2]string, ledger string) string {
	return fmt.Sprintf("      corp: {type: local, certificateFile: %q, keyFile: %q, ledgerFile: %q}\n", ca[0], ca[1], filepath.Join(s.dir, ledger))
}

// config is the adapter's configuration with the tenants given (YAML list entries).
func (s *tenantScene) config(workers int, tenants ...string) *config.Config {
	s.t.Helper()
	yaml := fmt.Sprintf(`
instanceId: a1
shutdownGracePeriod: 2s
engine: {workers: %d, pollInterval: 20ms, maxPollInterval: 200ms, retry: {initialBackoff: 20ms, maxBackoff: 1s}}
journal: %s
audit: {path: audit.jsonl}
ops: {listen: "127.0.0.1:0", checkInterval: 50ms, checkTimeout: 2s}
tenants:`, workers, cmp.Or(s.journal, "{type: sqlite, path: journal.db}")) + strings.Join(tenants, "")
	cfg, err := config.Parse([]byte(yaml), s.dir)
	if err != nil {
		s.t.Fatalf("config: %v", err)
	}
	return cfg
}

// start runs the adapter with the tenants given (YAML list entries) until the test ends.
func (s *tenantScene) start(workers int, tenants ...string) *daemon {
	s.t.Helper()
	cfg := s.config(workers, tenants...)
	log := zaptest.NewLogger(s.t)
	a, err := New(context.Background(), cfg, log)
	if err != nil {
		s.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	d := &daemon{t: s.t, emu: s.emu, a: a, base: "http://" + a.Ops.Addr().String()}
	var once sync.Once
	d.stop = func() error {
		var err error
		once.Do(func() {
			cancel()
			err = errors.Join(<-done, a.Close()) // every tenant's part released without error
		})
		return err
	}
	s.t.Cleanup(func() { _ = d.stop() })
	return d
}

// startProcesses starts n device processes of customer on the emulator, naming profile
// "device" and CA connection "corp".
func (s *tenantScene) startProcesses(customer string, n int) []string {
	s.t.Helper()
	var names []string
	for range n {
		name, err := s.emu.StartProcess(context.Background(), emulator.ProcessSpec{
			Customer: customer, KeyType: emulator.KeyECDSA, ProfileRef: "device", CARef: "corp",
		})
		if err != nil {
			s.t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// waitFinished waits until the named process ended on the emulator's side.
func (s *tenantScene) waitFinished(name string) {
	s.t.Helper()
	waitFor(s.t, 30*time.Second, func() bool {
		snap, ok := s.emu.Process(name)
		return ok && snap.Finished()
	})
}

// issuedBy checks that every named process got a certificate for its own device key, chaining
// to roots, with org as its organization, in the normal number of calls: one claim, one
// signData that reached the device, one upload, no failure and no injected answer.
func (s *tenantScene) issuedBy(names []string, roots *x509.CertPool, org string) {
	s.t.Helper()
	for _, name := range names {
		s.waitFinished(name)
		snap, _ := s.emu.Process(name)
		if snap.State != emulator.StateIssued {
			s.t.Errorf("%s: %s (%s), want issued", name, snap.State, snap.FailureMessage)
			continue
		}
		cert, err := emulator.VerifyIssued(snap, roots, nil) // chains to roots, carries the device's key
		if err != nil {
			s.t.Errorf("%s: not issued by its tenant's CA for its device's key: %v", name, err)
			continue
		}
		if got := cert.Subject.Organization; len(got) != 1 || got[0] != org {
			s.t.Errorf("%s: organization %v, want [%s] (the tenant's own profile)", name, got, org)
		}
		want := map[string]int{emulator.MethodClaim: 1, emulator.MethodSignData: 1, emulator.MethodUploadCertificate: 1}
		for m, n := range want {
			if snap.Calls[m] != n {
				s.t.Errorf("%s: %d %s calls, want %d", name, snap.Calls[m], m, n)
			}
		}
		if snap.SignDataCount != 1 || snap.Calls[emulator.MethodSetFailure] != 0 || len(snap.Injected) != 0 {
			s.t.Errorf("%s: signData reached the device %d times, %d setFailure, injected %v", name, snap.SignDataCount, snap.Calls[emulator.MethodSetFailure], snap.Injected)
		}
	}
}

// TestTenantsIssueThroughTheirOwnPipelines runs two tenants on one emulator, each with its own
// customer, topic, profile and CA connection of the same names: every process is issued by its
// tenant's CA with its tenant's profile; audit events, metrics, readiness checks, status pages
// and journal files are the tenant's.
func TestTenantsIssueThroughTheirOwnPipelines(t *testing.T) {
	s := newTenantScene(t, nil)
	d := s.start(4,
		s.tenantYAML("acme", customerA, s.subA, "Acme", s.localConn(s.caA, "ledger-a.jsonl"), ""),
		s.tenantYAML("beta", customerB, s.subB, "Beta", s.localConn(s.caB, "ledger-b.jsonl"), ""))
	d.waitReadyz(200, "", false)

	a := s.startProcesses(customerA, 3)
	b := s.startProcesses(customerB, 3)
	s.issuedBy(a, s.rootsA, "Acme")
	s.issuedBy(b, s.rootsB, "Beta")

	// Metrics: each tenant's series carry its label and count its own processes only.
	waitFor(t, 10*time.Second, func() bool {
		m := d.scrape()
		return value(m, "certprov_processes_finished_total", map[string]string{"tenant": "acme", "outcome": "issued"}) == 3 &&
			value(m, "certprov_processes_finished_total", map[string]string{"tenant": "beta", "outcome": "issued"}) == 3
	})
	m := d.scrape()
	for _, tenant := range []string{"acme", "beta"} {
		if n := value(m, "certprov_ca_requests_total", map[string]string{"tenant": tenant, "ca_connection": "corp", "operation": "issue", "outcome": "ok"}); n != 3 {
			t.Errorf("tenant %s: %v CA issue calls, want 3", tenant, n)
		}
		if n := value(m, "certprov_pubsub_messages_total", map[string]string{"tenant": tenant, "result": "admitted"}); n != 3 {
			t.Errorf("tenant %s: %v notifications admitted, want 3 (its own topic only)", tenant, n)
		}
		if n := value(m, "certprov_google_api_requests_total", map[string]string{"tenant": tenant, "method": "claim"}); n != 3 {
			t.Errorf("tenant %s: %v claims through its API client, want 3", tenant, n)
		}
	}

	// Readiness: every tenant's checks, by name.
	r := d.waitReadyz(200, "", false)
	for _, c := range []string{"acme/journal", "acme/pubsub", "acme/google_token", "acme/ca_connection:corp", "beta/pubsub", "beta/ca_connection:corp"} {
		if !r.check(c).Ready {
			t.Errorf("readiness check %s: %+v", c, r.check(c))
		}
	}
	for _, path := range []string{"/status/acme", "/status/beta"} {
		code, body := d.get(path)
		tenant := strings.TrimPrefix(path, "/status/")
		if code != 200 || !strings.Contains(string(body), `id="tenant" class="mono">`+tenant+`<`) {
			t.Errorf("%s: %d, tenant %s not shown", path, code, tenant)
		}
	}

	// The journal is one file per tenant; the audit log is shared, each event naming its tenant.
	for _, f := range []string{"journal.acme.db", "journal.beta.db"} {
		if _, err := os.Stat(filepath.Join(s.dir, f)); err != nil {
			t.Errorf("journal part: %v", err)
		}
	}
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	byTenant := map[string]map[string]string{}
	for _, ev := range readAudit(t, filepath.Join(s.dir, "audit.jsonl")) {
		if byTenant[ev.Tenant] == nil {
			byTenant[ev.Tenant] = map[string]string{}
		}
		byTenant[ev.Tenant][ev.ID] = ev.Customer
	}
	for tenant, want := range map[string]struct {
		customer string
		names    []string
	}{"acme": {customerA, a}, "beta": {customerB, b}} {
		if len(byTenant[tenant]) != len(want.names) {
			t.Errorf("tenant %s: %d audit events, want %d", tenant, len(byTenant[tenant]), len(want.names))
		}
		for _, n := range want.names {
			if byTenant[tenant][n] != want.customer {
				t.Errorf("audit event of %s: tenant %s customer %q, want %q", n, tenant, byTenant[tenant][n], want.customer)
			}
		}
	}
}

func readAudit(t *testing.T, path string) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ev audit.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, ev)
	}
	return out
}

// hangingCA is a CA webhook that answers no request for a certificate until released: a CA
// that is down in the worst way, holding every call until the connection's timeout. Pings are
// answered 503 at once.
type hangingCA struct {
	srv      *httptest.Server
	mu       sync.Mutex
	calls    int
	arrived  chan struct{} // one send per call
	released chan struct{}
}

func newHangingCA(t testing.TB) *hangingCA {
	h := &hangingCA{arrived: make(chan struct{}, 100), released: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(string(body), `"ping":true`) {
			http.Error(w, "down", http.StatusServiceUnavailable) // the readiness check's ping
			return
		}
		h.mu.Lock()
		h.calls++
		h.mu.Unlock()
		h.arrived <- struct{}{}
		select {
		case <-h.released:
		case <-r.Context().Done():
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// release lets the held calls answer (503) and every later one at once.
func (h *hangingCA) release() {
	select {
	case <-h.released:
	default:
		close(h.released)
	}
}

// TestTenantCAHangingDoesNotDelayAnother: tenant beta's CA holds every call; with beta's
// workers all stuck in it, every process of tenant acme is still issued, by acme's CA, in the
// normal number of calls, while beta's wait. A worker pool shared by the tenants would be all
// beta's by then.
func TestTenantCAHangingDoesNotDelayAnother(t *testing.T) {
	s := newTenantScene(t, nil)
	hang := newHangingCA(t)
	const workers = 2
	d := s.start(workers,
		s.tenantYAML("acme", customerA, s.subA, "Acme", s.localConn(s.caA, "ledger-a.jsonl"), ""),
		s.tenantYAML("beta", customerB, s.subB, "Beta", fmt.Sprintf("      corp: {type: webhook, url: %q, timeout: 5m}\n", hang.srv.URL), ""))
	t.Cleanup(hang.release) // before the daemon stops (cleanups run last first)

	b := s.startProcesses(customerB, 2*workers)
	for range workers { // every worker of beta is in a CA call now
		select {
		case <-hang.arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("beta's processes never reached its CA")
		}
	}
	a := s.startProcesses(customerA, 4)
	s.issuedBy(a, s.rootsA, "Acme")

	for _, name := range b {
		if snap, _ := s.emu.Process(name); snap.Finished() || snap.CertificatePEM != "" {
			t.Errorf("beta's %s finished (%s) although its CA answers nothing", name, snap.State)
		}
	}
	hang.mu.Lock()
	calls := hang.calls
	hang.mu.Unlock()
	if calls != workers {
		t.Errorf("beta's CA got %d calls, want %d: one per worker of beta, no more", calls, workers)
	}
	m := d.scrape()
	if n := value(m, "certprov_processes_in_flight", map[string]string{"tenant": "beta", "state": "signed"}); n != workers {
		t.Errorf("beta: %v steps in flight in the CA step, want %d", n, workers)
	}
	r := d.waitReadyz(503, "beta/ca_connection:corp", false)
	if !r.check("acme/ca_connection:corp").Ready {
		t.Errorf("acme's CA check: %+v", r.check("acme/ca_connection:corp"))
	}
}

// quotaExhausted answers Google's 429 RESOURCE_EXHAUSTED, with Retry-After, to every call of
// customer after its claim: signData, the operation polls and the upload.
func quotaExhausted(customer string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := r.URL.Path
			if strings.Contains(p, "/customers/"+customer+"/") &&
				(strings.Contains(p, ":signData") || strings.Contains(p, "/operations/") || strings.Contains(p, ":uploadCertificate")) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = w.Write([]byte(`{"error":{"code":429,"message":"Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'.","status":"RESOURCE_EXHAUSTED"}}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// TestTenantQuotaIsItsOwn: Google answers tenant beta with 429 on every call after the claim,
// and beta's own rate limit is tiny; tenant acme's processes are all issued in the normal number
// of calls, and acme's client neither waited for beta's limit nor saw a 429.
func TestTenantQuotaIsItsOwn(t *testing.T) {
	s := newTenantScene(t, quotaExhausted(customerB))
	d := s.start(2,
		s.tenantYAML("acme", customerA, s.subA, "Acme", s.localConn(s.caA, "ledger-a.jsonl"), "rateLimit: {requestsPerSecond: 1000, burst: 100}"),
		s.tenantYAML("beta", customerB, s.subB, "Beta", s.localConn(s.caB, "ledger-b.jsonl"), "rateLimit: {requestsPerSecond: 2, burst: 1}"))

	b := s.startProcesses(customerB, 3)
	waitFor(t, 30*time.Second, func() bool {
		return value(d.scrape(), "certprov_google_api_requests_total", map[string]string{"tenant": "beta", "code": "429"}) >= 2
	})
	a := s.startProcesses(customerA, 4)
	s.issuedBy(a, s.rootsA, "Acme")

	for _, name := range b {
		if snap, _ := s.emu.Process(name); snap.Finished() {
			t.Errorf("beta's %s finished (%s) although Google refuses its calls", name, snap.State)
		}
	}
	// The upload is counted once its answer is read, a moment after the emulator stored it.
	waitFor(t, 10*time.Second, func() bool {
		return value(d.scrape(), "certprov_google_api_requests_total", map[string]string{"tenant": "acme", "method": "uploadCertificate", "code": "200"}) == 4
	})
	if n := value(d.scrape(), "certprov_google_api_requests_total", map[string]string{"tenant": "acme", "code": "429"}); n != 0 {
		t.Errorf("acme saw %v answers 429", n)
	}
}

// TestTenantThatCannotStart: tenant gamma's key file is no key and tenant delta's subscription
// does not exist. The adapter starts anyway: acme issues, /readyz is 503 naming gamma/start and
// delta/pubsub, and acme's checks pass.
func TestTenantThatCannotStart(t *testing.T) {
	s := newTenantScene(t, nil)
	keyFile := filepath.Join(s.dir, "gamma-key.json")
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	gamma := s.tenantYAML("gamma", "C0tenantc", "sub-c", "Gamma", s.localConn(s.caB, "ledger-c.jsonl"), "")
	gamma = strings.Replace(gamma, "credentials: {type: none}", fmt.Sprintf("credentials: {type: serviceAccountKey, file: %q}", keyFile), 1)
	d := s.start(2,
		s.tenantYAML("acme", customerA, s.subA, "Acme", s.localConn(s.caA, "ledger-a.jsonl"), ""),
		gamma,
		s.tenantYAML("delta", "C0tenantd", "no-such-subscription", "Delta", s.localConn(s.caB, "ledger-d.jsonl"), ""))

	a := s.startProcesses(customerA, 2)
	s.issuedBy(a, s.rootsA, "Acme")
	r := d.waitReadyz(503, "delta/pubsub", false)
	if c := r.check("gamma/start"); c.Ready || !strings.Contains(c.Detail, "service account key") {
		t.Errorf("gamma/start: %+v, want not ready naming the key", c)
	}
	for _, c := range []string{"acme/pubsub", "acme/journal", "acme/google_token", "delta/journal"} {
		if !r.check(c).Ready {
			t.Errorf("%s: %+v", c, r.check(c))
		}
	}
}

// TestTenantsReload: a reload applies each tenant's new profiles, or, when one tenant's part
// cannot be built, none; adding a tenant waits for a restart.
func TestTenantsReload(t *testing.T) {
	s := newTenantScene(t, nil)
	acme := func(org string) string {
		return s.tenantYAML("acme", customerA, s.subA, org, s.localConn(s.caA, "ledger-a.jsonl"), "")
	}
	beta := s.tenantYAML("beta", customerB, s.subB, "Beta", s.localConn(s.caB, "ledger-b.jsonl"), "")
	d := s.start(2, acme("Acme"), beta)

	if err := d.a.Reload(s.config(2, acme("Acme Two"), beta)); err != nil {
		t.Fatal(err)
	}
	s.issuedBy(s.startProcesses(customerA, 1), s.rootsA, "Acme Two")
	s.issuedBy(s.startProcesses(customerB, 1), s.rootsB, "Beta")

	// beta's CA files gone: the reload is refused for every tenant, acme's new profile included.
	broken := strings.Replace(beta, s.caB[1], filepath.Join(s.dir, "missing.key"), 1)
	if err := d.a.Reload(s.config(2, acme("Acme Three"), broken)); err == nil || !strings.Contains(err.Error(), "tenants[1].caConnections.corp") {
		t.Fatalf("reload with beta's key missing: %v", err)
	}
	s.issuedBy(s.startProcesses(customerA, 1), s.rootsA, "Acme Two")

	// A tenant added takes a restart; the running ones are reloaded meanwhile.
	gamma := s.tenantYAML("gamma", "C0tenantc", "sub-c", "Gamma", s.localConn(s.caB, "ledger-c.jsonl"), "")
	next := s.config(2, acme("Acme Four"), beta, gamma)
	if keys := restartKeys(d.a.cfg, next); len(keys) != 1 || keys[0] != "tenants[2] (tenant gamma added)" {
		t.Errorf("restart keys %v", keys)
	}
	if err := d.a.Reload(next); err != nil {
		t.Fatal(err)
	}
	s.issuedBy(s.startProcesses(customerA, 1), s.rootsA, "Acme Four")
	m := d.scrape()
	if n := value(m, "certprov_config_reloads_total", map[string]string{"result": "refused"}); n != 1 {
		t.Errorf("%v reloads refused, want 1", n)
	}
}

// TestTenantsPostgresJournal: with a PostgreSQL journal each tenant has a table of its own in the
// one database, holding its own processes only.
func TestTenantsPostgresJournal(t *testing.T) {
	dsn := pgtest.Schema(t, pgtest.DSN(t), "certprov_tenants")
	s := newTenantScene(t, nil)
	s.journal = fmt.Sprintf("{type: postgres, dsn: %q}", dsn)
	d := s.start(2,
		s.tenantYAML("acme", customerA, s.subA, "Acme", s.localConn(s.caA, "ledger-a.jsonl"), ""),
		s.tenantYAML("beta", customerB, s.subB, "Beta", s.localConn(s.caB, "ledger-b.jsonl"), ""))
	a, b := s.startProcesses(customerA, 2), s.startProcesses(customerB, 1)
	s.issuedBy(a, s.rootsA, "Acme")
	s.issuedBy(b, s.rootsB, "Beta")
	if err := d.stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for tenant, want := range map[string][]string{"acme": a, "beta": b} {
		j := config.Journal{Type: config.JournalPostgres, DSN: dsn, Tenant: tenant}
		store, err := OpenJournal(ctx, j, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		if pg, ok := store.(*postgres.Store); !ok || pg.Table() != "certprov_journal_"+tenant {
			t.Errorf("tenant %s: store %T", tenant, store)
		}
		recs, err := store.Finished(ctx, "", 100)
		_ = store.Close()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range recs {
			got = append(got, r.Name)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("tenant %s's table holds %v, want %v", tenant, got, want)
		}
	}
}
