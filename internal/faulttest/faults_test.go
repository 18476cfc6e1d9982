package faulttest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
	"github.com/certprov/certprov-adapter/internal/emulator/frontend"
	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/journal/journaltest"
)

// scenario is one fault over the whole flow.
type scenario struct {
	name     string
	journals []string // backends it runs on (default: SQLite)
	world    worldOptions
	n        int                              // processes (default 6)
	spec     func(i int) emulator.ProcessSpec // nil: the suite's mix
	want     func(i int) want                 // nil: every process issued
	// inject aims faults at the processes before their notifications go out.
	inject func(w *world, names []string)
	// order is the sequence notifications are published in, duplicates included (default: each
	// once, in creation order).
	order func(names []string) []string
	// during runs beside the flow, from the first notification until every process ended
	// (done is closed then); for faults that follow the flow's progress.
	during func(w *world, names []string, done <-chan struct{})
	// after asserts what is particular to the scenario, once every process ended.
	after func(w *world, names []string)
}

// claimOutage is how long the journal refuses claims in "journal cannot record claims for a
// while", and maxClaimAttempts the most attempts a process may make meanwhile. Redeliveries
// back off from the harness's engine.retry.initialBackoff (20ms), doubling, with jitter above
// each doubled floor, up to its maxBackoff (500ms): the floors alone add up to 6.1s over 16
// attempts, so a bound of 16 in 4s holds however fast the machine, and leaves 2s for a slow
// heal. Without a backoff each redelivery came at once: 6 to 60 a second, by machine.
const (
	claimOutage      = 4 * time.Second
	maxClaimAttempts = 16
)

// unknownProfile is a profile reference the adapter has no profile for: the process fails at
// once, which is how the suite gets processes whose failure must be reported.
const unknownProfile = "no-such-profile"

// mixedFailing is where the mixed workload's processes stop succeeding: from the fifth on they
// name unknownProfile and must be failed, so a scenario sees both an upload and a setFailure.
const mixedFailing = 4

// mixedSpec alternates device and user scope, and names unknownProfile from mixedFailing on.
func mixedSpec(i int) emulator.ProcessSpec {
	s := emulator.ProcessSpec{KeyType: emulator.KeyECDSA, Scope: []string{emulator.ScopeDevice, emulator.ScopeUser}[i%2]}
	if i >= mixedFailing {
		s.ProfileRef = unknownProfile
	}
	return s
}

// mixedWant is what mixedSpec's processes must end with.
func mixedWant(i int) want {
	if i >= mixedFailing {
		return want{failure: `no profile named "` + unknownProfile + `"`}
	}
	return want{}
}

func scenarios() []scenario {
	return []scenario{
		{
			name: "429 bursts with Retry-After",
			inject: func(w *world, names []string) {
				for _, n := range names {
					w.inject(
						frontend.Fault{Method: emulator.MethodClaim, Process: n, Times: 2, Status: 429, RetryAfter: time.Second},
						frontend.Fault{Method: emulator.MethodSignData, Process: n, Times: 1, Status: 429, RetryAfter: time.Second},
						frontend.Fault{Method: emulator.MethodOperationsGet, Process: n, Times: 2, Status: 429, RetryAfter: time.Second},
						frontend.Fault{Method: emulator.MethodUploadCertificate, Process: n, Times: 3, Status: 429, RetryAfter: 2 * time.Second},
					)
				}
				// And the whole project over quota for a moment: whatever comes next.
				w.inject(frontend.Fault{Times: 12, Status: 429, RetryAfter: time.Second})
			},
		},
		{
			name: "5xx from every method",
			inject: func(w *world, names []string) {
				for _, n := range names {
					w.inject(
						frontend.Fault{Method: emulator.MethodGet, Process: n, Times: 1, Status: 503},
						frontend.Fault{Method: emulator.MethodClaim, Process: n, Times: 1, Status: 500},
						frontend.Fault{Method: emulator.MethodSignData, Process: n, Times: 1, Status: 503},
						frontend.Fault{Method: emulator.MethodOperationsGet, Process: n, Times: 2, Status: 502},
						frontend.Fault{Method: emulator.MethodUploadCertificate, Process: n, Times: 1, Status: 500},
					)
				}
			},
		},
		{
			// The change happened, the adapter cannot know: it must find out from the process
			// instead of doing it again (a second signData fails the process on the device).
			name:     "responses lost after the change was applied",
			journals: []string{sqliteJournal, postgresJournal},
			spec:     mixedSpec,
			want:     mixedWant,
			inject: func(w *world, names []string) {
				for i, n := range names {
					lost := func(m string) frontend.Fault {
						return frontend.Fault{Method: m, Process: n, Times: 1, AfterApply: true}
					}
					if i >= mixedFailing {
						w.inject(lost(emulator.MethodClaim), lost(emulator.MethodSetFailure))
						continue
					}
					w.inject(lost(emulator.MethodClaim), lost(emulator.MethodSignData), lost(emulator.MethodUploadCertificate))
				}
			},
		},
		{
			name:     "duplicate and out-of-order deliveries",
			journals: []string{sqliteJournal, postgresJournal},
			n:        8,
			order: func(names []string) []string {
				rev := slices.Clone(names)
				slices.Reverse(rev)
				return slices.Concat(rev, rev, names) // newest first, each three times
			},
			after: func(w *world, names []string) {
				// A late duplicate of each, once everything ended: recognised from the journal.
				w.deliver(names)
				w.waitUntil("every notification handled", 30*time.Second, func() bool {
					return w.Metric("certprov_pubsub_messages_total", "result", "admitted") == float64(4*len(names))
				})
				for _, n := range names {
					if s, _ := w.Emu.Process(n); s.Calls[emulator.MethodClaim] != 1 {
						w.t.Errorf("%s: claimed %d times for 4 deliveries, want 1", n, s.Calls[emulator.MethodClaim])
					}
				}
			},
		},
		{
			// Before heartbeats the engine re-leased its own record mid-call and asked the CA
			// again; the lease must hold for as long as the call takes.
			name:     "slow CA longer than the lease",
			journals: []string{sqliteJournal, postgresJournal},
			n:        3,
			world:    worldOptions{lease: time.Second, link: caLink{delay: 3 * time.Second, noLookup: true}},
			after: func(w *world, names []string) {
				for _, n := range names {
					if calls, most, _ := w.ca.stats(n); calls != 1 || most != 1 {
						w.t.Errorf("%s: the CA was asked %d times, %d at once; want once", n, calls, most)
					}
				}
			},
		},
		{
			// The CA signed, the answer did not arrive before the adapter's CA timeout: the CA
			// can say what it issued, so the adapter recovers that certificate instead of asking
			// for another.
			name:  "CA times out after issuing, with lookup",
			n:     4,
			world: worldOptions{caTimeout: 500 * time.Millisecond, link: caLink{hangAfterIssue: true}},
			after: func(w *world, names []string) {
				for _, n := range names {
					if calls, _, _ := w.ca.stats(n); calls != 1 {
						w.t.Errorf("%s: the CA was asked %d times, want once (then looked up)", n, calls)
					}
				}
			},
		},
		{
			// Same, with a CA that cannot say what it issued: asking again could issue a second
			// certificate, so the process fails, and the one certificate issued is never used.
			name:  "CA times out after issuing, without lookup",
			n:     4,
			world: worldOptions{caTimeout: 500 * time.Millisecond, link: caLink{hangAfterIssue: true, noLookup: true}},
			want:  func(int) want { return want{failure: "the CA did not answer within 500ms"} },
			after: func(w *world, names []string) {
				for _, n := range names {
					if calls, _, issued := w.ca.stats(n); calls != 1 || len(issued) != 1 {
						w.t.Errorf("%s: the CA was asked %d times and issued %d certificates; want once, one", n, calls, len(issued))
					}
				}
			},
		},
		{
			// A full disk: first the claims cannot be recorded (the notifications come again),
			// then every write fails for a while — intents, outcomes, lease grants and renewals.
			name:     "journal disk full",
			journals: []string{sqliteJournal, postgresJournal},
			world:    worldOptions{lease: time.Second},
			// Devices that take a moment to sign keep processes mid-flow when the disk fills.
			spec: func(i int) emulator.ProcessSpec {
				return emulator.ProcessSpec{KeyType: emulator.KeyECDSA, SignDelay: 2 * time.Second}
			},
			inject: func(w *world, names []string) {
				w.faulty.FailWrites(2*len(names), journaltest.ErrDiskFull, journaltest.OpCreate)
			},
			during: func(w *world, names []string, done <-chan struct{}) {
				// The disk fills once every claim is recorded and every device asked to sign,
				// while the adapter polls: each poll's outcome is a write.
				if !w.waitUntil("every process waiting for its device", 30*time.Second, func() bool {
					for _, n := range names {
						if s, _ := w.Emu.Process(n); s.State != emulator.StateSigning {
							return false
						}
					}
					return true
				}) {
					return
				}
				// First the outcomes and lease renewals cannot be written: each step's result is
				// lost and its lease runs out. Then nothing can, not even a lease grant.
				defer w.faulty.Heal()
				w.faulty.FailWrites(-1, journaltest.ErrDiskFull, journaltest.OpUpdate, journaltest.OpRenew)
				if !w.waitUntil("outcomes refused", 30*time.Second, func() bool {
					return w.faulty.Refused()[journaltest.OpUpdate] >= 2*len(names)
				}) {
					return
				}
				w.faulty.FailWrites(-1, journaltest.ErrDiskFull)
				w.waitUntil("lease grants refused", 30*time.Second, func() bool {
					return w.faulty.Refused()[journaltest.OpLease] >= 3
				})
			},
			after: func(w *world, names []string) {
				w.t.Logf("journal writes refused: %v", w.faulty.Refused())
			},
		},
		{
			// The journal fails the write that follows each side effect, twice: the operation
			// name signData answered, the certificate the CA issued (a CA that cannot say what
			// it issued), the upload and the setFailure that landed. The worker must keep what
			// it holds and write it again under the same lease, not drop it: a dropped
			// certificate failed the process as if the adapter had restarted mid-call, and a
			// dropped write kept the record leased, untouched, until the lease (here the
			// default two minutes) ran out.
			name:     "journal blip after every side effect",
			journals: []string{sqliteJournal, postgresJournal},
			world: worldOptions{link: caLink{noLookup: true}, aimTimes: 2, aim: func(rec *journal.Record) bool {
				switch rec.State {
				case journal.StateSignRequested:
					return rec.Operation != "" // signData answered
				case journal.StateIssued, journal.StateUploaded, journal.StateFailed:
					return true
				}
				return false
			}},
			spec: mixedSpec,
			want: mixedWant,
			after: func(w *world, names []string) {
				refused, blips := 0, 0
				for i, n := range names {
					states := []journal.State{journal.StateSignRequested, journal.StateIssued, journal.StateUploaded}
					if i >= mixedFailing {
						states = []journal.State{journal.StateFailed}
					}
					for _, st := range states {
						got := w.aimed.refusedIn(n, st)
						if got != 2 {
							w.t.Errorf("%s: %d writes in state %s refused, want 2: the fault missed", n, got, st)
						}
						refused += got
						blips++
					}
					for _, f := range w.aimed.followUps(n) {
						if f.landed != f.refusedToken {
							w.t.Errorf("%s: the outcome refused in state %s under lease grant %d was journaled only under grant %d: "+
								"the worker let it go and the record waited for its lease to run out", n, f.state, f.refusedToken, f.landed)
						}
					}
					s, _ := w.Emu.Process(n)
					if i < 4 {
						if calls, _, _ := w.ca.stats(n); calls != 1 || s.Calls[emulator.MethodUploadCertificate] != 1 {
							w.t.Errorf("%s: the CA was asked %d times, %d uploads; want once each", n, calls, s.Calls[emulator.MethodUploadCertificate])
						}
					} else if s.Calls[emulator.MethodSetFailure] != 1 {
						w.t.Errorf("%s: %d setFailure calls, want 1", n, s.Calls[emulator.MethodSetFailure])
					}
				}
				// Each refused write was retried under its lease, each blip ended in a write that
				// landed, and none was given up.
				retried, recovered, dropped := w.Metric("certprov_journal_write_retries_total"),
					w.Metric("certprov_journal_writes_recovered_total"), w.Metric("certprov_journal_writes_dropped_total")
				if retried != float64(refused) || recovered != float64(blips) || dropped != 0 {
					w.t.Errorf("journal writes retried %v, recovered %v, dropped %v; want %d, %d, 0", retried, recovered, dropped, refused, blips)
				}
			},
		},
		{
			// The claims cannot be recorded for a while (disk full): every notification is
			// nacked and comes again. Each redelivery used to read and claim the process again
			// at once, tens of times a second per process. The claim is known to be this
			// instance's after the first, and the redeliveries back off.
			name:     "journal cannot record claims for a while",
			journals: []string{sqliteJournal, postgresJournal},
			n:        4,
			inject: func(w *world, names []string) {
				w.faulty.FailWrites(-1, journaltest.ErrDiskFull, journaltest.OpCreate)
			},
			during: func(w *world, names []string, done <-chan struct{}) {
				defer w.faulty.Heal()
				attempts := func(n string) int { return w.faulty.Unwritten(n, journal.StateClaimed) }
				if !w.waitUntil("every claim refused once", 30*time.Second, func() bool {
					for _, n := range names {
						if attempts(n) == 0 {
							return false
						}
					}
					return true
				}) {
					return
				}
				before := map[string]int{}
				for _, n := range names {
					before[n] = attempts(n)
				}
				// The outage lasts a while whatever the adapter does; what is counted is how
				// often it tried meanwhile.
				select {
				case <-time.After(claimOutage):
				case <-done:
				}
				w.measured = map[string]int{}
				for _, n := range names {
					w.measured[n] = attempts(n) - before[n]
				}
			},
			after: func(w *world, names []string) {
				refused := 0
				for _, n := range names {
					refused += w.faulty.Unwritten(n, journal.StateClaimed)
					s, _ := w.Emu.Process(n)
					if s.Calls[emulator.MethodGet] != 1 || s.Calls[emulator.MethodClaim] != 1 {
						w.t.Errorf("%s: %d gets and %d claims, want one each: a claim this instance holds is not asked for again",
							n, s.Calls[emulator.MethodGet], s.Calls[emulator.MethodClaim])
					}
					if got := w.measured[n]; got > maxClaimAttempts {
						w.t.Errorf("%s: %d attempts to record the claim in %s, want at most %d", n, got, claimOutage, maxClaimAttempts)
					}
					w.t.Logf("%s: %d attempts to record the claim in %s; %d gets, %d claims in all",
						n, w.measured[n], claimOutage, s.Calls[emulator.MethodGet], s.Calls[emulator.MethodClaim])
				}
				// Every refused record was a failed admission, and every admission after the
				// first of a process (the one that landed included) reused its claim.
				failures, reused := w.Metric("certprov_admission_failures_total"), w.Metric("certprov_admission_claims_reused_total")
				if failures != float64(refused) || reused != float64(refused) {
					w.t.Errorf("admission failures %v, claims reused %v; want %d each (the claims refused)", failures, reused, refused)
				}
			},
		},
		{
			// What a PostgreSQL restart does to its clients, without restarting the server other
			// tests share: every backend of the adapter's journal is terminated, again and again,
			// while the flow runs.
			name:     "PostgreSQL connections terminated mid-run",
			journals: []string{postgresJournal},
			n:        8,
			// A step whose outcome could not be written keeps its lease until it expires.
			world: worldOptions{lease: time.Second},
			during: func(w *world, names []string, done <-chan struct{}) {
				terminated, rounds := 0, 0
				for rounds < 6 {
					select {
					case <-done:
						rounds = 6
						continue
					default:
					}
					errs := sum(w.faulty.StoreErrors())
					terminated += w.terminateJournalConnections()
					rounds++
					// Let the adapter run into the cut connections before the next round.
					deadline := time.Now().Add(2 * time.Second)
					for sum(w.faulty.StoreErrors()) == errs && time.Now().Before(deadline) {
						select {
						case <-done:
							deadline = time.Now()
						case <-time.After(20 * time.Millisecond):
						}
					}
				}
				w.t.Logf("terminated %d journal connections in %d rounds", terminated, rounds)
				if terminated == 0 {
					w.t.Error("no journal connection was terminated")
				}
			},
			after: func(w *world, names []string) {
				errs := w.faulty.StoreErrors()
				w.t.Logf("journal calls the database failed: %v", errs)
				if sum(errs) == 0 {
					w.t.Error("no journal call failed: the terminated connections were never hit")
				}
			},
		},
	}
}

// TestFaults runs every scenario on each of its journals. The scenarios run in parallel: most
// of their time is spent waiting out Retry-After, slow CAs and leases.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs the whole flow under faults for a minute")
	}
	for _, sc := range scenarios() {
		journals := sc.journals
		if len(journals) == 0 {
			journals = []string{sqliteJournal}
		}
		for _, j := range journals {
			t.Run(sc.name+"/"+j, func(t *testing.T) {
				t.Parallel()
				run(t, sc, j)
			})
		}
	}
}

func run(t *testing.T, sc scenario, backend string) {
	start := time.Now()
	w := newWorld(t, backend, sc.world)
	n := sc.n
	if n == 0 {
		n = 6
	}
	names := w.startProcesses(n, sc.spec)
	if sc.inject != nil {
		sc.inject(w, names)
	}
	order := names
	if sc.order != nil {
		order = sc.order(names)
	}
	done, during := make(chan struct{}), make(chan struct{})
	var finish sync.Once
	end := func() { finish.Do(func() { close(done) }); <-during }
	go func() {
		defer close(during)
		if sc.during != nil {
			sc.during(w, names, done)
		}
	}()
	t.Cleanup(end) // also when the test fails before the flow ends
	w.deliver(order)
	w.WaitFinished(names, 90*time.Second)
	end()
	w.WaitJournalIdle(30 * time.Second)
	f := w.check(names, sc.want)
	if sc.after != nil {
		sc.after(w, names)
	}
	t.Logf("%s on %s: %d processes, %s, in %s", sc.name, backend, n, f, time.Since(start).Round(time.Millisecond))
}
