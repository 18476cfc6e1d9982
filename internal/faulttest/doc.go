// Package faulttest is the fault-injection suite over the whole flow: the emulator's REST API and
// Pub/Sub, the adapter's engine and intake, the SQLite and PostgreSQL journals and the built-in CA,
// wired as in the daemon (internal/e2etest), with faults injected at every boundary — 429 bursts
// with Retry-After, 5xx, responses lost after the change was applied, duplicate and out-of-order
// notifications, a CA slower than the journal lease, a CA that times out after issuing, a full
// disk under the journal, a journal that fails the write after each side effect, claims that
// cannot be recorded, PostgreSQL connections cut mid-run.
//
// Every scenario asserts the same invariants on the emulator's counts (Snapshot.Calls and
// Snapshot.Injected, per method and process) and on the CA's issuance log: nothing is lost
// (every process ends with a certificate uploaded or a failure reported), signData reaches the
// device at most once, the CA issues at most one certificate per process, and a process that
// succeeds is uploaded once, with that certificate. Only files ending in _test.go are here.
package faulttest
