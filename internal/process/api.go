package process

import "errors"

// What the Certificate Provisioning API answers about a process, as the adapter's API client
// reports it (package chromeapi) and the engine acts on it.
var (
	// ErrNotFound: the process (or the operation) does not exist.
	ErrNotFound = errors.New("process not found")
	// ErrClaimedByOther: another adapter instance owns the process; this one must leave it.
	ErrClaimedByOther = errors.New("process claimed by another adapter instance")
)

// Operation is the state of a signData operation.
type Operation struct {
	Done bool
	// Error is set when the operation failed (the process failed on Google's side).
	Error string
	// Process is the process from the operation's response, when present; it may lack the
	// signature, in which case callers read the process.
	Process *Process
}
