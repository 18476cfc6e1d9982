package crashtest

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal/postgres/pgtest"
)

// TestCrashRecovery provisions 300 processes while the adapter is killed with SIGKILL at random
// moments and restarted on the same journal, once per durable backend, so the two runs compare.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs the adapter binary for about a minute per backend")
	}
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t)
			j := journalConfig{typ: backend, path: filepath.Join(w.dir, "journal.db")}
			if backend == "postgres" {
				j = journalConfig{typ: backend, dsn: pgtest.Schema(t, pgtest.DSN(t), "crash")}
			}
			crashRun(t, w, w.writeConfig("adapter", "crash-adapter-1", j), backend)
		})
	}
}

func crashRun(t *testing.T, w *world, cfg, backend string) {
	const processes, kills = 300, 12
	start := time.Now()
	names := w.startProcesses(processes, 3*time.Second)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	p := w.startAdapter(cfg)
	for k := range kills {
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		if p.exited() {
			w.logAdapterErrors(p)
			t.Fatalf("adapter exited on its own before kill %d", k+1)
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
	t.Logf("%s crash test: %d processes, %d SIGKILLs, %s in %s", backend, processes, kills, o, elapsed.Round(time.Millisecond))
	if o.issued != processes {
		w.logAdapterErrors(p)
		t.Errorf("%d of %d processes issued", o.issued, processes)
	}
}

// TestReplicasSharePostgres runs three replicas with one logical instance id on a shared
// PostgreSQL journal; one is killed for good mid-run and the others finish its processes once
// its leases expire.
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
		replicas = append(replicas, w.startAdapter(w.writeConfig(fmt.Sprintf("replica-%d", i), "crash-shared", j)))
	}
	start := time.Now()
	names := w.startProcesses(processes, 3*time.Second)
	time.Sleep(1500 * time.Millisecond)
	replicas[0].kill() // for good
	w.waitAll(names, 3*time.Minute)
	elapsed := time.Since(start)
	trails := []string{w.auditFile("replica-0"), w.auditFile("replica-1"), w.auditFile("replica-2")}
	w.waitAudited(names, trails, 30*time.Second)
	o := w.check(names)
	if n := w.checkAudit(names, trails...); n > 0 {
		t.Logf("%d audit events in two replicas' files (the killed one wrote them, the others found no record of that)", n)
	}
	t.Logf("postgres replicas: %d processes, 3 replicas, 1 killed for good, %s in %s", processes, o, elapsed.Round(time.Millisecond))
	if o.issued+o.failed != processes {
		for _, r := range replicas[1:] {
			w.logAdapterErrors(r)
		}
	}
	if o.issued+o.interruptedCA != processes {
		t.Errorf("issued %d, failed %d of %d", o.issued, o.failed, processes)
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
