package crashtest

import (
	"bytes"
	"context"
	"crypto/x509"
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

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/emulator"
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
	w := &world{t: t, emu: emu, restURL: rest.URL, dir: dir, caCert: caCert, ledger: filepath.Join(dir, "ca", "ledger.jsonl"), roots: roots}
	t.Cleanup(func() {
		w.stopAll()
		rest.Close()
		cancel()
		_ = emu.Close()
	})
	return w
}

// journalConfig is the journal section of an adapter's YAML.
type journalConfig struct {
	typ, path, dsn string
}

// writeConfig writes an adapter configuration and returns its path.
func (w *world) writeConfig(name, instanceID string, j journalConfig) string {
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
log: {level: warn, format: json}
ops: {listen: "127.0.0.1:0"}
profiles:
  device:
    subject: {commonName: "{{.Device.SerialNumber}}"}
    extendedKeyUsage: [clientAuth]
    validity: 24h
    signDeadline: 10m
  user:
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
`, instanceID, customer, w.emu.PubSubAddr(), w.restURL, jy)
	path := filepath.Join(w.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return path
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
}

func (o outcome) String() string {
	return fmt.Sprintf("issued=%d failed=%d unfinished=%d max signData/process=%d max CA issuance/process=%d failures=%v",
		o.issued, o.failed, o.unfinished, o.maxSignData, o.maxCA, o.failures)
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

// check verifies the invariants for every process and returns the figures.
func (w *world) check(names []string) outcome {
	w.t.Helper()
	counts := map[string]int{}
	if _, err := os.Stat(w.ledger); err == nil {
		var err error
		if counts, err = local.LedgerCounts(w.ledger); err != nil {
			w.t.Fatal(err)
		}
	}
	o := outcome{failures: map[string]int{}}
	for _, n := range names {
		s, ok := w.emu.Process(n)
		if !ok {
			w.t.Fatalf("emulator lost %s", n)
		}
		o.maxSignData = max(o.maxSignData, s.SignDataCount)
		o.maxCA = max(o.maxCA, counts[n])
		if s.SignDataCount > 1 {
			w.t.Errorf("%s: signData requested %d times", n, s.SignDataCount)
		}
		if counts[n] > 1 {
			w.t.Errorf("%s: the CA issued %d certificates", n, counts[n])
		}
		switch s.State {
		case emulator.StateIssued:
			o.issued++
			if _, err := emulator.VerifyIssued(s, w.roots, nil); err != nil {
				w.t.Errorf("%s: %v", n, err)
			}
			if counts[n] != 1 {
				w.t.Errorf("%s: uploaded a certificate the CA ledger does not show (%d)", n, counts[n])
			}
		case emulator.StateFailed:
			o.failed++
			o.failures[firstWords(s.FailureMessage)]++
			if strings.HasPrefix(s.FailureMessage, interruptedCA) {
				o.interruptedCA++
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

// startProcesses starts n processes with a mix of scopes, keys, encodings and device delays.
func (w *world) startProcesses(n int, maxDelay time.Duration) []string {
	w.t.Helper()
	var names []string
	for i := range n {
		spec := emulator.ProcessSpec{
			Customer:   customer,
			Scope:      []string{"device", "user"}[i%2],
			KeyType:    []string{"rsa", "ecdsa", "ecdsa"}[i%3],
			Encoding:   []string{"camel", "snake", "proto"}[i%3],
			CARef:      "builtin",
			SignDelay:  time.Duration(i*7919%1000) * maxDelay / 1000,
			Duplicates: i % 5 / 4,
		}
		spec.ProfileRef = spec.Scope
		name, err := w.emu.StartProcess(context.Background(), spec)
		if err != nil {
			w.t.Fatal(err)
		}
		names = append(names, name)
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
