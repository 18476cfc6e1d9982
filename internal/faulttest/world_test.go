package faulttest

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/ca/local"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/e2etest"
	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
)

// Journal backends a scenario runs on.
const (
	sqliteJournal   = "sqlite"
	postgresJournal = "postgres"
)

// caName is the CA connection every process of the suite names: the built-in CA behind the
// link a scenario shapes (testCA).
const caName = "faulty"

// testCA is the built-in CA behind a link a scenario shapes. It records every certificate the
// CA signed, whether or not the answer reached the adapter: with the CA's own ledger, it is the
// issuance log the suite checks. Bare, it has no Recover, like EST, SCEP and step-ca, so that a
// call whose answer was lost cannot be looked up; recoverableCA adds it.
type testCA struct {
	inner *local.Connector
	// delay is how long the link takes before the CA signs (the call ends early, unsigned, if
	// its context ends first).
	delay time.Duration
	// hangAfterIssue: once the CA signed, the answer never arrives; the call ends when its
	// context does, with the context's error, as a client whose CA timeout fired would.
	hangAfterIssue bool

	mu         sync.Mutex
	calls      map[string]int
	running    map[string]int
	maxRunning map[string]int
	issued     map[string][]*x509.Certificate
}

func newTestCA(inner *local.Connector, delay time.Duration, hangAfterIssue bool) *testCA {
	return &testCA{inner: inner, delay: delay, hangAfterIssue: hangAfterIssue,
		calls: map[string]int{}, running: map[string]int{}, maxRunning: map[string]int{}, issued: map[string][]*x509.Certificate{}}
}

func (c *testCA) Issue(ctx context.Context, req *ca.Request) (*ca.Issued, error) {
	c.mu.Lock()
	c.calls[req.Key]++
	c.running[req.Key]++
	c.maxRunning[req.Key] = max(c.maxRunning[req.Key], c.running[req.Key])
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running[req.Key]--
		c.mu.Unlock()
	}()
	if c.delay > 0 {
		t := time.NewTimer(c.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("test CA: %w", ctx.Err())
		}
	}
	issued, err := c.inner.Issue(ctx, req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.issued[req.Key] = append(c.issued[req.Key], issued.Leaf)
	c.mu.Unlock()
	if c.hangAfterIssue {
		<-ctx.Done()
		return nil, fmt.Errorf("test CA: waiting for the answer: %w", ctx.Err())
	}
	return issued, nil
}

// stats reports the calls for key, the most that ran at once, and the certificates signed.
func (c *testCA) stats(key string) (calls, maxRunning int, issued []*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[key], c.maxRunning[key], append([]*x509.Certificate(nil), c.issued[key]...)
}

// recoverableCA is testCA for a CA that can say what it issued (the built-in CA's ledger).
type recoverableCA struct{ *testCA }

func (r recoverableCA) Recover(ctx context.Context, key string) (*ca.Issued, error) {
	return r.inner.Recover(ctx, key)
}

// caLink shapes the suite's CA connection. The zero value is the built-in CA as the daemon
// configures it (with a ledger, so it can say what it issued).
type caLink struct {
	delay          time.Duration
	hangAfterIssue bool
	noLookup       bool // no ca.Recoverer, like EST, SCEP and step-ca
}

// world is one scenario's running adapter, with its journal and CA under the suite's control.
type world struct {
	*e2etest.Harness
	t       *testing.T
	journal string
	faulty  *journaltest.Faulty
	aimed   *aimedStore // nil unless the scenario aims journal faults (worldOptions.aim)
	ca      *testCA
	// pgDSN and appName, on PostgreSQL: the journal's DSN and the application_name of its
	// connections, which the suite terminates through adminDSN.
	pgDSN, appName, adminDSN string
	// measured holds what a scenario's during measured, by process, for its after.
	measured map[string]int
}

// worldOptions are what a scenario changes in the adapter.
type worldOptions struct {
	lease     time.Duration // journal.leaseDuration (default: the engine's)
	caTimeout time.Duration // caConnections.*.timeout (default: the harness's)
	link      caLink
	// aim, when set, fails the first aimTimes writes of each record in each state it selects
	// (aimedStore), beneath journaltest.Faulty.
	aim      func(*journal.Record) bool
	aimTimes int
}

func newWorld(t *testing.T, backend string, o worldOptions) *world {
	t.Helper()
	w := &world{t: t, journal: backend}
	opts := e2etest.Options{
		SignDeadline:  30 * time.Second,
		RetryFor:      30 * time.Second,
		LeaseDuration: o.lease,
		CATimeout:     o.caTimeout,
		Journal:       w.openJournal,
		Store: func(s journal.Store) journal.Store {
			if o.aim != nil {
				w.aimed = newAimedStore(s, o.aimTimes, o.aim)
				s = w.aimed
			}
			w.faulty = journaltest.NewFaulty(s)
			return w.faulty
		},
		CAs: func(h *e2etest.Harness) map[string]ca.Connector {
			w.ca = newTestCA(h.Local, o.link.delay, o.link.hangAfterIssue)
			if o.link.noLookup {
				return map[string]ca.Connector{caName: w.ca}
			}
			return map[string]ca.Connector{caName: recoverableCA{w.ca}}
		},
	}
	w.Harness = e2etest.New(t, opts)
	return w
}

// openJournal opens the scenario's journal as the daemon does (adapter.OpenJournal): a SQLite
// file, or a PostgreSQL schema of the test's own whose connections carry an application_name
// that names them alone.
func (w *world) openJournal(t testing.TB) journal.Store {
	t.Helper()
	j := config.Journal{Type: config.JournalSQLite, Path: filepath.Join(t.TempDir(), "journal.db")}
	if w.journal == postgresJournal {
		w.adminDSN = pgtest.DSN(t)
		dsn := pgtest.Schema(t, w.adminDSN, "faults")
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		w.appName = fmt.Sprintf("certprov_faults_%d", time.Now().UnixNano())
		q := u.Query()
		q.Set("application_name", w.appName)
		u.RawQuery = q.Encode()
		w.pgDSN = u.String()
		j = config.Journal{Type: config.JournalPostgres, DSN: w.pgDSN}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := adapter.OpenJournal(ctx, j, false, nil)
	if err != nil {
		t.Fatalf("open %s journal: %v", w.journal, err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// terminateJournalConnections ends, from the server side, every PostgreSQL backend serving the
// adapter's journal, as a restart of the server does to its clients, and returns how many it
// ended. Other tests sharing the server are not touched.
// It may be called from any goroutine: an error fails the test and ends nothing.
func (w *world) terminateJournalConnections() int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, w.adminDSN)
	if err != nil {
		w.t.Errorf("connect to terminate journal connections: %v", err)
		return 0
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`, w.appName).Scan(&n); err != nil {
		w.t.Errorf("terminate journal connections: %v", err)
	}
	return n
}

// startProcesses creates n processes on the emulator without publishing their notifications,
// so that faults can be aimed at them first. Process i takes spec(i), with the customer, the
// suite's CA connection and the profile of its scope filled in where spec leaves them empty.
func (w *world) startProcesses(n int, spec func(i int) emulator.ProcessSpec) []string {
	w.t.Helper()
	names := make([]string, n)
	for i := range n {
		s := emulator.ProcessSpec{
			Scope:    []string{emulator.ScopeDevice, emulator.ScopeUser}[i%2],
			KeyType:  emulator.KeyECDSA,
			Encoding: []string{emulator.EncodingCamel, emulator.EncodingSnake, emulator.EncodingProto}[i%3],
		}
		if i == 0 {
			s.KeyType = emulator.KeyRSA // one RSA key per scenario: they are slow to make under -race
		}
		if spec != nil {
			s = spec(i)
		}
		if s.CARef == "" {
			s.CARef = caName
		}
		s.NoPublish = true
		names[i] = w.Start(s)
	}
	return names
}

// deliver publishes the notifications of names in that order, duplicates included.
func (w *world) deliver(names []string) {
	w.t.Helper()
	for _, n := range names {
		if err := w.Emu.Notify(context.Background(), n); err != nil {
			w.t.Fatal(err)
		}
	}
}

// inject queues faults and fails the test on a bad one.
func (w *world) inject(faults ...frontend.Fault) {
	w.t.Helper()
	for _, f := range faults {
		if err := w.Emu.Inject(f); err != nil {
			w.t.Fatal(err)
		}
	}
}

// want is how a process must end.
type want struct {
	failure string // "" for issued; otherwise a part of the failure message
}

// figures are a scenario's counts, for its log line.
type figures struct {
	issued, failed, caIssued, reuploads int
	calls, injected                     map[string]int
}

func (f figures) String() string {
	return fmt.Sprintf("issued=%d failed=%d certificates=%d refused re-uploads=%d calls=%s injected=%s",
		f.issued, f.failed, f.caIssued, f.reuploads, counts(f.calls), counts(f.injected))
}

func counts(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// check asserts the invariants for every process, once all have ended, and returns the
// figures. Per process:
//   - it ended as wanted, on Google's side and in the journal (nothing lost);
//   - signData reached the device at most once (once when it succeeded), and the adapter sent
//     it at most once outside injected faults;
//   - the CA issued at most one certificate; a process that succeeded carries exactly that one,
//     chained to the CA and for the device key;
//   - a process that succeeded was uploaded once: every uploadCertificate call beyond the first
//     is explained by an injected fault, or by an upload that happened while the journal could
//     not record it (Google then refuses the repeat; the certificate is the same);
//   - a failed process was never uploaded, and its failure was reported once in the same sense.
func (w *world) check(names []string, wantOf func(i int) want) figures {
	w.t.Helper()
	f := figures{calls: map[string]int{}, injected: map[string]int{}}
	ctx := context.Background()
	for i, n := range names {
		s, ok := w.Emu.Process(n)
		if !ok {
			w.t.Fatalf("emulator lost %s", n)
		}
		for m, c := range s.Calls {
			f.calls[m] += c
		}
		for m, c := range s.Injected {
			f.injected[m] += c
		}
		wt := want{}
		if wantOf != nil {
			wt = wantOf(i)
		}
		truthful := func(m string) int { return s.Calls[m] - s.Injected[m] }
		_, _, issued := w.ca.stats(n)
		f.caIssued += len(issued)
		if len(issued) > 1 || w.Local.Issued(n) > 1 {
			w.t.Errorf("%s: the CA issued %d certificates (ledger: %d), want at most 1", n, len(issued), w.Local.Issued(n))
		}
		if s.SignDataCount > 1 || truthful(emulator.MethodSignData) > 1 {
			w.t.Errorf("%s: signData reached the device %d times, sent %d times outside injected faults",
				n, s.SignDataCount, truthful(emulator.MethodSignData))
		}
		rec, err := w.Store.Get(ctx, n)
		if err != nil {
			w.t.Errorf("%s: journal: %v", n, err)
			continue
		}
		if wt.failure == "" {
			f.issued++
			if s.State != emulator.StateIssued {
				w.t.Errorf("%s: state %s (failure %q), want issued", n, s.State, s.FailureMessage)
				continue
			}
			cert, err := emulator.VerifyIssued(s, w.Roots, nil)
			if err != nil {
				w.t.Errorf("%s: %v", n, err)
				continue
			}
			if len(issued) != 1 || !bytes.Equal(issued[0].Raw, cert.Raw) || w.Local.Issued(n) != 1 {
				w.t.Errorf("%s: the uploaded certificate is not the one certificate the CA issued (%d issued)", n, len(issued))
			}
			if s.SignDataCount != 1 {
				w.t.Errorf("%s: signData reached the device %d times, want 1", n, s.SignDataCount)
			}
			uploads, allowed := truthful(emulator.MethodUploadCertificate), 1+w.faulty.Unwritten(n, journal.StateUploaded)
			if uploads < 1 || uploads > allowed {
				w.t.Errorf("%s: %d uploadCertificate calls outside injected faults, want 1 (up to %d where the journal could not record the upload)",
					n, uploads, allowed)
			}
			f.reuploads += uploads - 1
			if rec.State != journal.StateUploaded {
				w.t.Errorf("%s: journal state %s, want %s", n, rec.State, journal.StateUploaded)
			}
			continue
		}
		f.failed++
		if s.State != emulator.StateFailed || !strings.Contains(s.FailureMessage, wt.failure) {
			w.t.Errorf("%s: state %s, failure %q; want failed with %q", n, s.State, s.FailureMessage, wt.failure)
		}
		if s.Calls[emulator.MethodUploadCertificate] != 0 {
			w.t.Errorf("%s: failed after %d uploads", n, s.Calls[emulator.MethodUploadCertificate])
		}
		reports, allowed := truthful(emulator.MethodSetFailure), 1+w.faulty.Unwritten(n, journal.StateFailed)
		if reports < 1 || reports > allowed {
			w.t.Errorf("%s: %d setFailure calls outside injected faults, want 1 (up to %d where the journal could not record it)", n, reports, allowed)
		}
		if rec.State != journal.StateFailed {
			w.t.Errorf("%s: journal state %s, want %s", n, rec.State, journal.StateFailed)
		}
	}
	if n := w.Emu.PendingFaults(); n != 0 {
		w.t.Errorf("%d injected faults were never hit: the scenario did not test what it says", n)
	}
	return f
}

// waitUntil polls cond until it holds and reports whether it did within timeout; if not, the
// test fails (it may be called from any goroutine).
func (w *world) waitUntil(what string, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Errorf("%s: not within %s", what, timeout)
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
