package journaltest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certprov/certprov-adapter/internal/journal"
	"github.com/certprov/certprov-adapter/internal/process"
)

// Counter reads a backend's own count of its I/O, cumulative, by unit: "fsyncs" and "writes"
// for a file, "roundtrips" and "txns" for a server. Bench reports each as a rate per operation,
// next to the time, so that before/after runs compare with benchstat.
type Counter func() map[string]int64

// Bench runs the journal benchmarks against stores made by open, each sub-benchmark on a new,
// empty store, and reports count's units per operation when count is not nil:
//
//   - Admit: an admission, a Get that finds nothing and the Create of the claim.
//   - LeaseRelease: lease one due record and release it, written back.
//   - Step: one step's outcome written under a held lease, renewing it (a worker's commit).
//   - Renew: one heartbeat.
//   - Certificate/workers=N: every journal call of whole certificates, from the admission to
//     the audit event, made as the engine makes them with N workers (see CertificateWrites);
//     one operation is one certificate.
//   - IssuedTo/records=N: renewal hygiene's lookup of one identity's certificates in a journal
//     of N uploaded records, four per device (a year of quarterly renewals).
func Bench(b *testing.B, open func(b *testing.B) journal.Store, count Counter) {
	b.Run("Admit", func(b *testing.B) { benchAdmit(b, open(b), count) })
	b.Run("LeaseRelease", func(b *testing.B) { benchLeaseRelease(b, open(b), count) })
	b.Run("Step", func(b *testing.B) { benchStep(b, open(b), count) })
	b.Run("Renew", func(b *testing.B) { benchRenew(b, open(b), count) })
	for _, w := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("Certificate/workers=%d", w), func(b *testing.B) { benchCertificates(b, open(b), count, w) })
	}
	b.Run("IssuedTo/records=20000", func(b *testing.B) { benchIssuedTo(b, open(b), count, 20000) })
}

func benchIssuedTo(b *testing.B, s journal.Store, count Counter, records int) {
	ctx := context.Background()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const perDevice = 4
	devices := records / perDevice
	record := func(i int) *journal.Record {
		rec := CertificateRecord(fmt.Sprintf("customers/C0bench/certificateProvisioningProcesses/%012d", i), now)
		rec.Process.User = nil
		rec.Process.Device.DirectoryID = fmt.Sprintf("dev-%06d", i%devices)
		rec.ProfileName, rec.CAName, rec.CertificatePEM, rec.IssuedAt = "wifi", "local", benchCertificatePEM, now
		rec.State, rec.FinishedAt, rec.NextDue = journal.StateUploaded, now, time.Time{}
		return rec
	}
	// Seeded by many writers at once, so that they share commits.
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < records; i = int(next.Add(1)) - 1 {
				if _, err := s.Create(ctx, record(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("seed: %v", err)
	}
	done := measure(b, count)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		got, err := s.IssuedTo(ctx, record(i%devices).Identity())
		if err != nil || len(got) != perDevice {
			b.Fatalf("IssuedTo = %d records, %v; want %d", len(got), err, perDevice)
		}
	}
	done()
}

// measure reports count's growth over the benchmark's operations, and the CPU time the
// process used per operation (the store's and the benchmark's, whatever the machine's load
// does to the time per operation; a server's CPU is not in it).
func measure(b *testing.B, count Counter) func() {
	var before map[string]int64
	if count != nil {
		before = count()
	}
	cpu, cpuOK := processCPU()
	return func() {
		if now, ok := processCPU(); ok && cpuOK {
			b.ReportMetric(float64((now-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		}
		if count == nil {
			return
		}
		for unit, n := range count() {
			b.ReportMetric(float64(n-before[unit])/float64(b.N), unit+"/op")
		}
	}
}

func benchAdmit(b *testing.B, s journal.Store, count Counter) {
	ctx := context.Background()
	done := measure(b, count)
	i := 0
	for b.Loop() {
		if err := admit(ctx, s, fmt.Sprintf("customers/C0bench/certificateProvisioningProcesses/admit-%08d", i), T0.Add(time.Duration(i))); err != nil {
			b.Fatal(err)
		}
		i++
	}
	done()
}

func benchLeaseRelease(b *testing.B, s journal.Store, count Counter) {
	ctx := context.Background()
	leaseAt := T0.Add(time.Second) // the records are due a nanosecond apart, before it
	for i := range 100 {
		rec := CertificateRecord(fmt.Sprintf("customers/C0bench/certificateProvisioningProcesses/lease-%03d", i), T0.Add(time.Duration(i)))
		mustCreate(b, s, rec)
	}
	done := measure(b, count)
	for b.Loop() {
		got, err := s.Lease(ctx, "bench", leaseAt, lease, 1)
		if err != nil || len(got) != 1 {
			b.Fatalf("Lease = %d records, %v", len(got), err)
		}
		got[0].Attempts++
		if err := s.Update(ctx, "bench", got[0], leaseAt, 0); err != nil {
			b.Fatalf("Update: %v", err)
		}
	}
	done()
}

func benchStep(b *testing.B, s journal.Store, count Counter) {
	ctx := context.Background()
	rec := CertificateRecord("customers/C0bench/certificateProvisioningProcesses/step", T0)
	mustCreate(b, s, rec)
	got := mustLease(b, s, "bench", T0, lease, 1)
	if len(got) != 1 {
		b.Fatalf("Lease = %d records", len(got))
	}
	rec = got[0]
	signRequested(rec, T0)
	done := measure(b, count)
	for b.Loop() {
		rec.Attempts++
		if err := s.Update(ctx, "bench", rec, T0, lease); err != nil {
			b.Fatalf("Update: %v", err)
		}
	}
	done()
}

func benchRenew(b *testing.B, s journal.Store, count Counter) {
	ctx := context.Background()
	rec := CertificateRecord("customers/C0bench/certificateProvisioningProcesses/renew", T0)
	mustCreate(b, s, rec)
	got := mustLease(b, s, "bench", T0, lease, 1)
	if len(got) != 1 {
		b.Fatalf("Lease = %d records", len(got))
	}
	done := measure(b, count)
	now := T0
	for b.Loop() {
		// Each heartbeat moves the lease on, as the engine's do.
		now = now.Add(time.Millisecond)
		if err := s.Renew(ctx, "bench", rec.Name, got[0].LeaseToken, now, lease); err != nil {
			b.Fatalf("Renew: %v", err)
		}
	}
	done()
}

// benchCertificates takes b.N certificates through the journal as the engine does, with the
// given number of workers: as many admissions at once (Pub/Sub delivers a burst in parallel),
// and a loop that leases due records for the workers that are free whenever an admission or a
// worker's last write may have made one due, and hands each to a worker of its own.
func benchCertificates(b *testing.B, s journal.Store, count Counter, workers int) {
	ctx := context.Background()
	var (
		n        = int64(b.N)
		clock    atomic.Int64 // nanoseconds after T0: every admission and step has a time of its own, as in the engine
		admitted atomic.Int64
		finished atomic.Int64
		poke     = make(chan struct{}, 1)
		slots    = make(chan struct{}, workers)
		failed   = make(chan error, 2*workers)
		wg       sync.WaitGroup
	)
	wake := func() {
		select {
		case poke <- struct{}{}:
		default:
		}
	}
	fail := func(err error) {
		failed <- err
		finished.Store(n) // stop everyone
		wake()
	}
	done := measure(b, count)
	b.ResetTimer()
	for range workers {
		wg.Go(func() {
			for i := admitted.Add(1); i <= n && finished.Load() < n; i = admitted.Add(1) {
				if err := admit(ctx, s, fmt.Sprintf("customers/C0bench/certificateProvisioningProcesses/cert-%08d", i), T0.Add(time.Duration(clock.Add(1)))); err != nil {
					fail(err)
					return
				}
				wake()
			}
		})
	}
	for finished.Load() < n {
		if free := cap(slots) - len(slots); free > 0 {
			recs, err := s.Lease(ctx, "bench", T0.Add(time.Duration(clock.Add(1))), lease, free)
			if err != nil {
				fail(fmt.Errorf("lease: %w", err))
				break
			}
			for _, rec := range recs {
				slots <- struct{}{}
				wg.Go(func() {
					defer func() { <-slots; wake() }()
					ended, err := CertificateSteps(ctx, s, "bench", rec, T0.Add(time.Duration(clock.Add(1))))
					if err != nil {
						fail(err)
						return
					}
					if ended {
						finished.Add(1)
					}
				})
			}
		}
		<-poke
	}
	wg.Wait()
	b.StopTimer()
	select {
	case err := <-failed:
		b.Fatal(err)
	default:
	}
	done()
}

// admit is the engine's admission of a notified process at now: it looks for a record first,
// and records the claim.
func admit(ctx context.Context, s journal.Store, name string, now time.Time) error {
	if _, err := s.Get(ctx, name); !errors.Is(err, journal.ErrNotFound) {
		return fmt.Errorf("admit %s: Get = %v, want ErrNotFound", name, err)
	}
	created, err := s.Create(ctx, CertificateRecord(name, now))
	if err != nil || !created {
		return fmt.Errorf("admit %s: Create = %v, %v", name, created, err)
	}
	return nil
}

// CertificateWrites are the journal writes the engine makes for one certificate whose device
// signs at once, besides its two leases: the Create of the claim and the Updates of
// CertificateSteps. internal/engine's tests hold the engine to it, so that the benchmarks
// measure what the engine does.
var CertificateWrites = map[string]int{OpCreate: 1, OpUpdate: 6}

// CertificateSteps makes the writes the engine makes for rec, just leased by owner at now,
// until it releases the lease: for a claimed record, the intent to have the device sign and,
// once signData answered, the operation to poll (released until the poll is due, which here
// is at once); for one whose device signed, the CA intent (which carries the signature the
// poll found), the certificate, the final state and the audit event's, which releases it. It reports
// whether the record is done.
func CertificateSteps(ctx context.Context, s journal.Store, owner string, rec *journal.Record, now time.Time) (done bool, err error) {
	write := func(renew time.Duration) error {
		if err := s.Update(ctx, owner, rec, now, renew); err != nil {
			return fmt.Errorf("%s in %s: %w", rec.Name, rec.State, err)
		}
		return nil
	}
	switch rec.State {
	case journal.StateClaimed:
		signRequested(rec, now)
		if err := write(lease); err != nil {
			return false, err
		}
		rec.Operation = "operations/" + rec.Process.ID
		rec.NextDue = now
		rec.Log(now, "operation "+rec.Operation)
		return false, write(0)
	case journal.StateSignRequested:
		rec.Signature = benchBlob(256)
		rec.State, rec.StepStarted, rec.NextDue = journal.StateSigned, now, now
		rec.Log(now, "")
		rec.CSR, rec.CAInFlight = benchBlob(900), true
		if err := write(lease); err != nil {
			return false, err
		}
		rec.CAInFlight, rec.CertificatePEM = false, benchCertificatePEM
		rec.State, rec.StepStarted, rec.NextDue = journal.StateIssued, now, now
		rec.Log(now, "")
		if err := write(lease); err != nil {
			return false, err
		}
		rec.State, rec.FinishedAt, rec.Outcome, rec.AuditPending = journal.StateUploaded, now, "issued", true
		rec.Log(now, "")
		if err := write(lease); err != nil {
			return false, err
		}
		rec.AuditPending = false
		rec.Log(now, "audit event written")
		return true, write(0)
	}
	return false, fmt.Errorf("%s: leased in state %s", rec.Name, rec.State)
}

func signRequested(rec *journal.Record, now time.Time) {
	rec.ProfileName, rec.CAName = "wifi", "local"
	rec.SignData, rec.Algorithm = benchBlob(620), process.AlgorithmRSAPKCS1SHA256
	rec.State, rec.StepStarted, rec.NextDue = journal.StateSignRequested, now, now
	rec.SignDeadline = now.Add(10 * time.Minute)
	rec.Log(now, "")
}

// CertificateRecord is the record of a claim as the engine creates it, sized like one for an
// RSA-2048 device key with a device and a user.
func CertificateRecord(name string, now time.Time) *journal.Record {
	id := name[len(name)-min(len(name), 12):]
	p := &process.Process{
		Name: name, Customer: "C0bench", ID: id, ProfileID: "wifi-eap-tls",
		StartTime:        now.Add(-time.Second),
		SPKI:             benchBlob(294),
		Device:           &process.Device{SerialNumber: "5CD" + id, DirectoryID: "0f6a3c1e-" + id},
		User:             &process.User{Email: "user." + id + "@example.com", DirectoryID: "1045987" + id},
		CAConnectionKind: process.CAConnectionGeneric, CAConnectionRef: "local", ProfileRef: "wifi",
	}
	rec := &journal.Record{
		Name: name, Process: p, State: journal.StateClaimed,
		StepStarted: now, NextDue: now, Created: now, Updated: now,
	}
	rec.Log(now, "claimed as certprov-bench")
	return rec
}

// benchBlob returns n bytes that do not compress, as keys, signatures and DER do not.
func benchBlob(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// benchCertificatePEM is the size of an issued RSA-2048 leaf with a few SANs.
var benchCertificatePEM = func() string {
	const line = "MIIFZjCCBE6gAwIBAgIQBx2mJ3R0c0FjZ2ZtZ1d1b0dQZzRnL1V5dUhnTnB4bGQw\n"
	s := "-----BEGIN CERTIFICATE-----\n"
	for range 26 {
		s += line
	}
	return s + "-----END CERTIFICATE-----\n"
}()
