//go:build !unix

package local

import "os"

// lockExclusive does nothing where flock is missing: appends are ordered within the process
// only, so on such systems one process at a time may use a ledger file.
func lockExclusive(*os.File) error { return nil }
