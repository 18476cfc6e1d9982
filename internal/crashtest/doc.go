// Package crashtest holds the adapter's crash and scale-out tests: the real certprov-adapter
// binary runs as a child process against the in-process emulator and the built-in CA, and is
// killed with SIGKILL at random moments. The emulator counts signData calls per process and the
// CA's ledger counts issuances, so the tests can assert that nothing was done twice or lost.
package crashtest
