package crashtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
)

// TestCrashRecovery provisions 300 processes while the adapter is killed with SIGKILL at random
// moments and restarted on the same journal, once per durable backend, so the two runs compare.
// A quarter of the processes go to a slow SCEP CA, a connector that cannot say what it issued,
// so that kills land during CA calls that cannot be recovered; the rest go to the built-in CA,
// which recovers them from its ledger.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the adapter binary for about a minute per backend")
	}
	seed := crashSeed(t)
	for i, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t)
			w.addSlowSCEP(time.Second)
			j := journalConfig{typ: backend, path: filepath.Join(w.dir, "journal.db")}
			if backend == "postgres" {
				j = journalConfig{typ: backend, dsn: pgtest.Schema(t, pgtest.DSN(t), "crash")}
			}
			crashRun(t, w, w.writeConfig("adapter", "crash-adapter-1", j), backend, seed+uint64(i))
		})
	}
}

// crashSeedEnv replays a failed crash run: set it to the seed the run logged.
const crashSeedEnv = "CERTPROV_CRASH_SEED"

// crashSeed is the seed of the run's kill schedule: from crashSeedEnv, or the clock.
func crashSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv(crashSeedEnv); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s=%q: want an unsigned integer: %v", crashSeedEnv, v, err)
		}
	}
	t.Logf("crash seed %d (replay with %s=%d; the sqlite run uses the seed, the postgres run seed+1)", seed, crashSeedEnv, seed)
	return seed
}

func crashRun(t *testing.T, w *world, cfg, backend string, seed uint64) {
	const processes, kills = 300, 12
	start := time.Now()
	names := w.startProcessesOn(processes, 3*time.Second, func(i int) string {
		if i%4 == 3 {
			return "scep"
		}
		return "builtin"
	})
	rng := rand.New(rand.NewPCG(seed, 1))
	p := w.startAdapter(cfg)
	killsDuringCA := 0
	for k := range kills {
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		if killsDuringCA == 0 {
			// Until one kill has landed during a slow CA call, wait for one to be in flight.
			w.scepProxy.waitEnrolling(10 * time.Second)
		}
		if p.exited() {
			w.logAdapterErrors(p)
			t.Fatalf("adapter exited on its own before kill %d", k+1)
		}
		if w.scepProxy.enrolling.Load() > 0 {
			killsDuringCA++
		}
		p.kill()
		p = w.startAdapter(cfg)
	}
	w.waitAll(names, 3*time.Minute)
	elapsed := time.Since(start)
	trail := w.auditFile("adapter")
	w.waitAudited(names, []string{trail}, 30*time.Second)
	p.stop()
	o := w.check(names)
	w.checkAudit(names, trail) // one event per process, though kills fell between writing it and journaling that
	t.Logf("%s crash test (seed %d): %d processes, %d SIGKILLs (%d during a SCEP call), %s in %s",
		backend, seed, processes, kills, killsDuringCA, o, elapsed.Round(time.Millisecond))
	if want := processes - processes/4; o.byCA["builtin issued"] != want {
		w.logAdapterErrors(p)
		t.Errorf("%d of %d processes on the built-in CA issued; it recovers interrupted calls", o.byCA["builtin issued"], want)
	}
	// The only failure allowed is the safe one for an interrupted SCEP call, and a kill must have
	// caused at least one, or the test did not test what it is for.
	if o.issued+o.interruptedCA != processes {
		t.Errorf("issued %d, failed because of an interrupted CA call %d, of %d", o.issued, o.interruptedCA, processes)
	}
	if o.interruptedCA == 0 || o.byCA["scep failed"] != o.interruptedCA {
		t.Errorf("%d SCEP processes failed because a kill interrupted their CA call, %d in all; want at least one, all of them SCEP",
			o.byCA["scep failed"], o.interruptedCA)
	}
}

// TestReplicasSharePostgres runs three replicas with one logical instance id on a shared
// PostgreSQL journal; one is killed for good mid-run while it holds leases, and the others
// finish its processes once its leases expire.
func TestReplicasSharePostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test runs three adapter binaries")
	}
	dsn := pgtest.DSN(t)
	const processes = 300
	w := newWorld(t)
	j := journalConfig{typ: "postgres", dsn: pgtest.Schema(t, dsn, "replicas")}
	var replicas []*adapterProc
	for i := range 3 {
		// The victim logs at info, so that its lease owner can be read from its start-up line.
		level := "warn"
		if i == 0 {
			level = "info"
		}
		replicas = append(replicas, w.startAdapter(w.writeConfigLevel(fmt.Sprintf("replica-%d", i), "crash-shared", j, level)))
	}
	victim := replicas[0].leaseOwner(t)
	// Every API call takes a moment, so that a replica holds leases through its steps, not only
	// between two polls.
	w.emu.SetLatency(200 * time.Millisecond)
	start := time.Now()
	names := w.startProcesses(processes, 3*time.Second)
	time.Sleep(1500 * time.Millisecond)
	leases := newLeaseReader(t, j.dsn)
	var before []string
	for deadline := time.Now().Add(time.Minute); len(before) == 0 && time.Now().Before(deadline); {
		before = leases.held(victim, time.Now())
	}
	replicas[0].kill() // for good
	// Read again right after the kill: a dead replica renews and releases nothing, and no other
	// may take its records before their leases expire, so these are exactly the leases it died
	// with.
	held := leases.held(victim, time.Now())
	t.Logf("the victim held %d leases right before the kill, %d when it died", len(before), len(held))
	w.waitAll(names, 3*time.Minute)
	elapsed := time.Since(start)
	trails := []string{w.auditFile("replica-0"), w.auditFile("replica-1"), w.auditFile("replica-2")}
	w.waitAudited(names, trails, 30*time.Second)
	o := w.check(names)
	if n := w.checkAudit(names, trails...); n > 0 {
		t.Logf("%d audit events in two replicas' files (the killed one wrote them, the others found no record of that)", n)
	}
	t.Logf("postgres replicas: %d processes, 3 replicas, 1 killed for good holding %d leases (owner %s), %s in %s",
		processes, len(held), victim, o, elapsed.Round(time.Millisecond))
	if o.issued+o.failed != processes {
		for _, r := range replicas[1:] {
			w.logAdapterErrors(r)
		}
	}
	if o.issued+o.interruptedCA != processes {
		t.Errorf("issued %d, failed %d of %d", o.issued, o.failed, processes)
	}
	if len(held) == 0 {
		t.Fatalf("the killed replica (lease owner %s) held no lease when it died: the test proved no takeover", victim)
	}
	// Google's side ends a moment before the journal records it.
	var rows map[string]journalRow
	for deadline := time.Now().Add(30 * time.Second); ; {
		rows = leases.rows(held)
		final := 0
		for _, r := range rows {
			if r.final {
				final++
			}
		}
		if final == len(held) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range held {
		if s, _ := w.emu.Process(n); !s.Finished() {
			t.Errorf("%s, leased by the killed replica, is unfinished on Google's side (%s)", n, s.State)
		}
		if r := rows[n]; !r.final || r.owner != "" {
			t.Errorf("%s, leased by the killed replica: journal state %s, final %v, lease owner %q; want finished by the others",
				n, r.state, r.final, r.owner)
		}
	}
}

// interruptedCA is how the failure set for a CA call cut by a crash begins.
const interruptedCA = "the certificate adapter restarted while"

// TestReplicasOwnJournals runs three replicas with their own instance ids and SQLite files on one
// subscription (a StatefulSet). Duplicate deliveries reach several replicas; Google's claim lets
// exactly one work each process. One replica is killed and restarted on its own file.
func TestReplicasOwnJournals(t *testing.T) {
	if testing.Short() {
		t.Skip("replica test runs three adapter binaries")
	}
	const processes = 150
	w := newWorld(t)
	var configs []string
	var replicas []*adapterProc
	for i := range 3 {
		cfg := w.writeConfig(fmt.Sprintf("replica-%d", i), fmt.Sprintf("crash-replica-%d", i),
			journalConfig{typ: "sqlite", path: filepath.Join(w.dir, fmt.Sprintf("journal-%d.db", i))})
		configs = append(configs, cfg)
		replicas = append(replicas, w.startAdapter(cfg))
	}
	names := w.startProcesses(processes, 2*time.Second)
	time.Sleep(time.Second)
	replicas[1].kill()
	replicas[1] = w.startAdapter(configs[1])
	w.waitAll(names, 3*time.Minute)
	trails := []string{w.auditFile("replica-0"), w.auditFile("replica-1"), w.auditFile("replica-2")}
	w.waitAudited(names, trails, 30*time.Second)
	o := w.check(names)
	if n := w.checkAudit(names, trails...); n > 0 {
		t.Errorf("%d processes audited by two replicas with their own journals", n)
	}
	owners := map[string]int{}
	for _, n := range names {
		s, _ := w.emu.Process(n)
		owners[s.ClaimedBy]++
	}
	t.Logf("own journals: %d processes, 3 replicas, 1 restart, %s, claims by instance %v", processes, o, owners)
	if o.issued != processes {
		t.Errorf("%d of %d issued", o.issued, processes)
	}
	if len(owners) < 2 {
		t.Errorf("work was not spread over replicas: %v", owners)
	}
}
