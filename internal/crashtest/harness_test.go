package crashtest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/ca/scep"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/journal/postgres"
	"github.com/certprov/certprov-adapter/internal/testservers"
)

const customer = "C0crash"

// adapterBinary is built once per test binary run (TestMain).
var adapterBinary string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(func() int {
		if testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "certprov-crashtest-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		adapterBinary = filepath.Join(dir, "certprov-adapter")
		cmd := exec.Command("go", "build", "-o", adapterBinary, "github.com/certprov/certprov-adapter/cmd/certprov-adapter")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build adapter:", err)
			return 1
		}
		return m.Run()
	}())
}

// world is the emulator (in this process, so it outlives every adapter), the CA files, and the
// adapter processes started against them.
type world struct {
	t       *testing.T
	emu     *emulator.Emulator
	restURL string
	dir     string
	caCert  string
	ledger  string
	roots   *x509.CertPool

	// scep, when set, is a second CA connection ("scep") the adapters get: a real scepserver
	// behind a proxy, a connector that cannot say what it issued (no ca.Recoverer).
	scep      *testservers.SCEPServer
	scepProxy *scepProxy
	// caOf is the CA connection each started process names.
	caOf map[string]string
	// renewal, when set, gives the device profile revokeSuperseded (grace period 1s) and the
	// built-in CA a CRL (crl), so that a device's new certificate revokes its previous one.
	renewal bool
	crl     string

	mu       sync.Mutex
	adapters []*adapterProc
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	emu, err := emulator.New(ctx, emulator.Options{Project: "crash", Topic: "certprov", Subscription: "adapter", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rest := httptest.NewServer(emu.Handler())
	dir := t.TempDir()
	caCert, _, err := local.CreateCA(filepath.Join(dir, "ca"), "ecdsa", "crash test CA", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(caCert)
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := emulator.CertPoolFromPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, emu: emu, restURL: rest.URL, dir: dir, caCert: caCert, ledger: filepath.Join(dir, "ca", "ledger.jsonl"), roots: roots,
		caOf: map[string]string{}}
	t.Cleanup(func() {
		w.stopAll()
		rest.Close()
		cancel()
		_ = emu.Close()
	})
	return w
}

// addSlowSCEP gives the world's adapters a CA connection "scep": scepserver behind a proxy
// that holds each answer for delay after the CA issued. The adapter's SCEP signer pair is made
// here, once, so that no kill can tear it while an adapter creates it.
func (w *world) addSlowSCEP(delay time.Duration) {
	w.t.Helper()
	w.scep = testservers.StartSCEP(w.t, scepChallenge)
	w.scepProxy = newDelayProxy(w.t, w.scep.URL, delay)
	if _, err := ca.New(scep.Type, ca.Settings{
		"url": w.scepProxy.URL, "challenge": scepChallenge,
		"signerKeyFile": "scep-signer.key", "signerCertFile": "scep-signer.crt",
	}, ca.Env{Name: "scep", BaseDir: w.dir}); err != nil {
		w.t.Fatalf("scep signer: %v", err)
	}
}

// journalConfig is the journal section of an adapter's YAML.
type journalConfig struct {
	typ, path, dsn string
}

// writeConfig writes an adapter configuration and returns its path.
func (w *world) writeConfig(name, instanceID string, j journalConfig) string {
	return w.writeConfigLevel(name, instanceID, j, "warn")
}

// writeConfigLevel is writeConfig with the adapter's log level.
func (w *world) writeConfigLevel(name, instanceID string, j journalConfig, level string) string {
	w.t.Helper()
	var jy string
	switch j.typ {
	case "sqlite":
		jy = fmt.Sprintf("  type: sqlite\n  path: %s\n", j.path)
	case "postgres":
		jy = fmt.Sprintf("  type: postgres\n  dsn: %q\n", j.dsn)
	}
	cfg := fmt.Sprintf(`instanceId: %s
customers: [%s]
pubsub:
  project: crash
  subscription: adapter
  endpoint: %s
  insecure: true
  maxOutstandingMessages: 50
google:
  endpoint: %s/
  credentials: {type: none}
  rateLimit: {requestsPerSecond: 500, burst: 100}
  requestTimeout: 5s
engine:
  workers: 16
  pollInterval: 100ms
  maxPollInterval: 500ms
  retry: {initialBackoff: 100ms, maxBackoff: 1s, maxDuration: 5m}
journal:
%s  leaseDuration: 4s
log: {level: %s, format: json}
ops: {listen: "127.0.0.1:0"}
audit: {path: %s-audit.jsonl}
profiles:
  device:
    subject: {commonName: "{{.Device.SerialNumber}}"}
    extendedKeyUsage: [clientAuth]
    validity: 24h
    signDeadline: 10m
%s  user:
    subject: {commonName: "{{.User.Email}}"}
    subjectAltNames: {email: ["{{.User.Email}}"]}
    extendedKeyUsage: [clientAuth]
    validity: 24h
    signDeadline: 10m
caConnections:
  builtin:
    type: local
    certificateFile: ca/ca.crt
    keyFile: ca/ca.key
    ledgerFile: ca/ledger.jsonl
%s`, instanceID, customer, w.emu.PubSubAddr(), w.restURL, jy, level, name, w.renewalProfile(), w.renewalCA())
	if w.scepProxy != nil {
		cfg += fmt.Sprintf(`  scep:
    type: scep
    url: %s
    challenge: %s
    signerKeyFile: scep-signer.key
    signerCertFile: scep-signer.crt
    timeout: 30s
`, w.scepProxy.URL, scepChallenge)
	}
	path := filepath.Join(w.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
}

// renewalProfile and renewalCA are the device profile's and the built-in CA's settings for
// renewal, or nothing.
func (w *world) renewalProfile() string {
	if !w.renewal {
		return ""
	}
	return "    revokeSuperseded: {enabled: true, gracePeriod: 1s}\n"
}

func (w *world) renewalCA() string {
	if !w.renewal {
		return ""
	}
	return "    crlFile: ca/ca.crl\n"
}

// adapterProc is one running certprov-adapter.
type adapterProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *bytes.Buffer
	out    *syncWriter // stderr's writer, for reading the log while the adapter runs
}

// output is what the adapter logged so far.
func (p *adapterProc) output() string {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	return p.out.w.String()
}

func (w *world) startAdapter(config string) *adapterProc {
	w.t.Helper()
	cmd := exec.Command(adapterBinary, "run", "--config", config)
	var stderr bytes.Buffer
	out := &syncWriter{w: &stderr}
	cmd.Stdout, cmd.Stderr = out, out
	// Keep the environment from steering the adapter elsewhere.
	cmd.Env = filterEnv(os.Environ(), "CERTPROV_", "PUBSUB_EMULATOR_HOST")
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("start adapter: %v", err)
	}
	p := &adapterProc{cmd: cmd, done: make(chan struct{}), stderr: &stderr, out: out}
	go func() { _ = cmd.Wait(); close(p.done) }()
	w.mu.Lock()
	w.adapters = append(w.adapters, p)
	w.mu.Unlock()
	return p
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func filterEnv(env []string, prefixes ...string) []string {
	var out []string
next:
	for _, kv := range env {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		out = append(out, kv)
	}
	return out
}

// kill sends SIGKILL: no shutdown code runs, as in a node failure or an OOM kill.
func (p *adapterProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks for a graceful shutdown.
func (p *adapterProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
	}
}

func (p *adapterProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (w *world) stopAll() {
	w.mu.Lock()
	procs := append([]*adapterProc(nil), w.adapters...)
	w.mu.Unlock()
	for _, p := range procs {
		if !p.exited() {
			p.stop()
		}
	}
}

// outcome summarises the end state of every process.
type outcome struct {
	issued, failed, unfinished int
	maxSignData, maxCA         int
	failures                   map[string]int
	// interruptedCA counts failures set because a CA call was cut by a crash and the CA could not
	// say what it issued: the one failure these tests accept, since it is the safe choice.
	interruptedCA int
	// byCA counts processes by CA connection and end: "builtin issued", "scep failed", …
	byCA map[string]int
}

func (o outcome) String() string {
	return fmt.Sprintf("issued=%d failed=%d unfinished=%d max signData/process=%d max CA issuance/process=%d "+
		"by CA=%v failures=%v",
		o.issued, o.failed, o.unfinished, o.maxSignData, o.maxCA, o.byCA, o.failures)
}

// waitAll waits until every process has ended on the emulator's side or the timeout passes.
func (w *world) waitAll(names []string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		done := 0
		for _, n := range names {
			if s, _ := w.emu.Process(n); s.Finished() {
				done++
			}
		}
		if done == len(names) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// check verifies the invariants for every process and returns the figures: signData at most
// once, at most one certificate issued by the CA the process names (the local CA's ledger,
// scepserver's depot), an issued process uploaded exactly once with a certificate that chains to
// that CA and carries the device key, and no process left unfinished.
func (w *world) check(names []string) outcome {
	w.t.Helper()
	counts := map[string]int{}
	if _, err := os.Stat(w.ledger); err == nil {
		var err error
		if counts, err = local.LedgerCounts(w.ledger); err != nil {
			w.t.Fatal(err)
		}
	}
	var depot map[string]int
	if w.scep != nil {
		depot = depotCounts(w.t, w.scep.Depot)
	}
	o := outcome{failures: map[string]int{}, byCA: map[string]int{}}
	for _, n := range names {
		s, ok := w.emu.Process(n)
		if !ok {
			w.t.Fatalf("emulator lost %s", n)
		}
		caName, roots, issued := "builtin", w.roots, counts[n]
		if w.caOf[n] == "scep" {
			caName, roots, issued = "scep", poolOf(w.scep.CA), depot[string(s.SPKI)]
		}
		o.maxSignData = max(o.maxSignData, s.SignDataCount)
		o.maxCA = max(o.maxCA, issued)
		if s.SignDataCount > 1 {
			w.t.Errorf("%s: signData requested %d times", n, s.SignDataCount)
		}
		if issued > 1 {
			w.t.Errorf("%s: the %s CA issued %d certificates", n, caName, issued)
		}
		uploads := s.Calls[emulator.MethodUploadCertificate]
		switch s.State {
		case emulator.StateIssued:
			o.issued++
			o.byCA[caName+" issued"]++
			if _, err := emulator.VerifyIssued(s, roots, nil); err != nil {
				w.t.Errorf("%s: %v", n, err)
			}
			if issued != 1 {
				w.t.Errorf("%s: uploaded a certificate the %s CA's log does not show (%d)", n, caName, issued)
			}
			// A kill between an upload and its journal write leaves the record in StateIssued;
			// the next holder reads the process before uploading, so the upload goes out once.
			if uploads != 1 {
				w.t.Errorf("%s: uploadCertificate called %d times", n, uploads)
			}
		case emulator.StateFailed:
			o.failed++
			o.byCA[caName+" failed"]++
			o.failures[firstWords(s.FailureMessage)]++
			if strings.HasPrefix(s.FailureMessage, interruptedCA) {
				o.interruptedCA++
			}
			if uploads != 0 {
				w.t.Errorf("%s: failed after %d uploadCertificate calls", n, uploads)
			}
		default:
			o.unfinished++
			w.t.Errorf("%s: unfinished in state %s (calls %v)", n, s.State, s.Calls)
		}
	}
	return o
}

func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 6 {
		f = f[:6]
	}
	return strings.Join(f, " ")
}

// startProcesses starts n processes with a mix of scopes, keys, encodings and device delays,
// all on the built-in CA.
func (w *world) startProcesses(n int, maxDelay time.Duration) []string {
	return w.startProcessesOn(n, maxDelay, func(int) string { return "builtin" })
}

// startProcessesOn is startProcesses with the CA connection of process i chosen by caOf(i).
func (w *world) startProcessesOn(n int, maxDelay time.Duration, caOf func(i int) string) []string {
	w.t.Helper()
	var names []string
	for i := range n {
		spec := emulator.ProcessSpec{
			Customer:   customer,
			Scope:      []string{"device", "user"}[i%2],
			KeyType:    []string{"rsa", "ecdsa", "ecdsa"}[i%3],
			Encoding:   []string{"camel", "snake", "proto"}[i%3],
			CARef:      caOf(i),
			SignDelay:  time.Duration(i*7919%1000) * maxDelay / 1000,
			Duplicates: i % 5 / 4,
		}
		spec.ProfileRef = spec.Scope
		name, err := w.emu.StartProcess(context.Background(), spec)
		if err != nil {
			w.t.Fatal(err)
		}
		names = append(names, name)
		w.caOf[name] = spec.CARef
	}
	return names
}

func (w *world) logAdapterErrors(p *adapterProc) {
	out := p.output()
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, "panic") {
			lines = append(lines, l)
		}
	}
	sort.Strings(lines)
	if len(lines) > 5 {
		lines = lines[:5]
	}
	for _, l := range lines {
		w.t.Logf("adapter: %s", l)
	}
}

// leaseOwner reads the engine's lease owner (instance id and a per-run suffix) from the
// adapter's start-up log line, which needs log level info.
func (p *adapterProc) leaseOwner(t *testing.T) string {
	t.Helper()
	p.waitLog(t, `"lease_owner"`, 30*time.Second)
	for _, line := range strings.Split(p.output(), "\n") {
		var entry struct {
			LeaseOwner string `json:"lease_owner"`
		}
		if json.Unmarshal([]byte(line), &entry) == nil && entry.LeaseOwner != "" {
			return entry.LeaseOwner
		}
	}
	t.Fatalf("no lease_owner in the adapter's log:\n%s", p.output())
	return ""
}

// leaseReader reads the leases in a PostgreSQL journal, on one connection so that a poll is
// quick.
type leaseReader struct {
	t    *testing.T
	conn *pgx.Conn
}

func newLeaseReader(t *testing.T, dsn string) *leaseReader {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return &leaseReader{t: t, conn: conn}
}

// held lists the unfinished records that owner holds under a lease unexpired at now.
func (l *leaseReader) held(owner string, now time.Time) []string {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := l.conn.Query(ctx, `SELECT name FROM `+postgres.DefaultTable+
		` WHERE NOT final AND lease_owner = $1 AND lease_until > $2 ORDER BY name`, owner, now.UnixNano())
	if err != nil {
		l.t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		l.t.Fatal(err)
	}
	return names
}

// journalRow is a journal record as its columns show it.
type journalRow struct {
	state, owner string
	final        bool
}

// rows reads the named records' rows.
func (l *leaseReader) rows(names []string) map[string]journalRow {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := l.conn.Query(ctx, `SELECT name, state, final, coalesce(lease_owner, '') FROM `+postgres.DefaultTable+
		` WHERE name = ANY($1)`, names)
	if err != nil {
		l.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]journalRow{}
	for rows.Next() {
		var name string
		var r journalRow
		if err := rows.Scan(&name, &r.state, &r.final, &r.owner); err != nil {
			l.t.Fatal(err)
		}
		out[name] = r
	}
	if err := rows.Err(); err != nil {
		l.t.Fatal(err)
	}
	return out
}
