package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certprov/certprov-adapter/internal/emulator"
)

// kind is one entry of --mix: the scope and key type of a process.
type kind struct {
	scope, key string
}

// parseMix parses "device-rsa,device-ec,user-rsa,user-ec" (ecdsa is accepted for ec).
func parseMix(s string) ([]kind, error) {
	var out []kind
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		scope, key, ok := strings.Cut(item, "-")
		if !ok {
			return nil, fmt.Errorf("mix entry %q: want scope-key such as device-rsa", item)
		}
		switch scope {
		case emulator.ScopeDevice, emulator.ScopeUser:
		default:
			return nil, fmt.Errorf("mix entry %q: scope %q, want device or user", item, scope)
		}
		switch key {
		case "rsa":
			key = emulator.KeyRSA
		case "ec", "ecdsa":
			key = emulator.KeyECDSA
		default:
			return nil, fmt.Errorf("mix entry %q: key %q, want rsa or ec", item, key)
		}
		out = append(out, kind{scope: scope, key: key})
	}
	if len(out) == 0 {
		return nil, errors.New("mix is empty")
	}
	return out, nil
}

// plan is what provision asks the emulator to start.
type plan struct {
	count                int
	mix                  []kind
	customer             string
	profile, userProfile string
	caRef                string
	signDelay            time.Duration
}

// specs rotates through the mix; user-scoped processes use the user profile.
func (p plan) specs() []emulator.ProcessSpec {
	out := make([]emulator.ProcessSpec, p.count)
	for i := range out {
		k := p.mix[i%len(p.mix)]
		profile := p.profile
		if k.scope == emulator.ScopeUser {
			profile = p.userProfile
		}
		out[i] = emulator.ProcessSpec{
			Customer: p.customer, Scope: k.scope, KeyType: k.key,
			ProfileRef: profile, CARef: p.caRef, SignDelay: p.signDelay,
		}
	}
	return out
}

// Outcome kinds of one process.
const (
	outcomeIssued     = "issued"     // issued and verified
	outcomeInvalid    = "invalid"    // issued, but the certificate does not verify
	outcomeFailed     = "failed"     // the adapter (or device) set a failure
	outcomeUnfinished = "unfinished" // still running at the deadline
	outcomeMissing    = "missing"    // the emulator does not know the process
)

// outcome is one row of the provision table.
type outcome struct {
	ID, Scope, Key string
	Kind           string // outcome* constant
	Detail         string // CN, failure message, verification error or state
}

func (o outcome) String() string {
	switch o.Kind {
	case outcomeIssued:
		return "issued CN=" + o.Detail
	case outcomeFailed:
		return "failed: " + o.Detail
	case outcomeInvalid:
		return "invalid: " + o.Detail
	case outcomeUnfinished:
		return "unfinished (" + o.Detail + ")"
	default:
		return o.Kind
	}
}

// evaluate judges every started process, in the order of names.
func evaluate(names []string, snaps []emulator.Snapshot, roots, intermediates *x509.CertPool) []outcome {
	byName := make(map[string]emulator.Snapshot, len(snaps))
	for _, s := range snaps {
		byName[s.Name] = s
	}
	out := make([]outcome, 0, len(names))
	for _, name := range names {
		s, ok := byName[name]
		if !ok {
			out = append(out, outcome{ID: lastSegment(name), Kind: outcomeMissing})
			continue
		}
		o := outcome{ID: s.ID(), Scope: s.Scope, Key: s.KeyType}
		switch s.State {
		case emulator.StateIssued:
			cert, err := emulator.VerifyIssued(s, roots, intermediates)
			if err != nil {
				o.Kind, o.Detail = outcomeInvalid, err.Error()
			} else {
				o.Kind, o.Detail = outcomeIssued, cert.Subject.CommonName
			}
		case emulator.StateFailed:
			o.Kind, o.Detail = outcomeFailed, s.FailureMessage
		default:
			o.Kind, o.Detail = outcomeUnfinished, s.State
		}
		out = append(out, o)
	}
	return out
}

// writeTable prints one row per process, with sanitized cells so hostile values cannot break
// the layout.
func writeTable(w io.Writer, outcomes []outcome) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROCESS\tSCOPE\tKEY\tOUTCOME")
	for _, o := range outcomes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", cell(o.ID), cell(o.Scope), cell(o.Key), cell(o.String()))
	}
	return tw.Flush()
}

// summarize returns the summary line and whether every process was issued and verified.
func summarize(outcomes []outcome) (string, bool) {
	counts := map[string]int{}
	for _, o := range outcomes {
		counts[o.Kind]++
	}
	line := fmt.Sprintf("%d processes: %d issued, %d failed, %d invalid, %d unfinished",
		len(outcomes), counts[outcomeIssued], counts[outcomeFailed], counts[outcomeInvalid], counts[outcomeUnfinished])
	if n := counts[outcomeMissing]; n > 0 {
		line += fmt.Sprintf(", %d missing", n)
	}
	ok := len(outcomes) > 0 && counts[outcomeIssued] == len(outcomes)
	if ok {
		line += " - OK"
	} else {
		line += " - FAIL"
	}
	return line, ok
}

func cell(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func lastSegment(name string) string {
	return name[strings.LastIndex(name, "/")+1:]
}

// runProvision starts processes on a running emulator, waits for the adapter to finish them and
// verifies the issued certificates. Exit 0 only if every process was issued and verified; 1 if
// any was not; 2 for usage and setup errors.
func runProvision(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("emulator", "http://127.0.0.1:8480", "base URL of the emulator's REST/control API")
	count := fs.Int("count", 24, "number of processes to start")
	mix := fs.String("mix", "device-rsa,device-ec,user-rsa,user-ec", "comma-separated scope-key kinds, used in rotation")
	customer := fs.String("customer", emulator.DefaultCustomer, "customer id of the processes")
	profile := fs.String("profile", "device", "profileAdapterConfigReference of device-scoped processes")
	userProfile := fs.String("user-profile", "user", "profileAdapterConfigReference of user-scoped processes")
	caRef := fs.String("ca-ref", "builtin", "caConnectionAdapterConfigReference of every process")
	caCert := fs.String("ca-cert", "", "PEM file with the CA certificate(s) the issued certificates must chain to (required)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for all processes to finish")
	signDelay := fs.Duration("sign-delay", 500*time.Millisecond, "how long each simulated device takes to sign")
	poll := fs.Duration("poll", 250*time.Millisecond, "how often to poll the emulator")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	kinds, err := parseMix(*mix)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "provision: --mix: %v\n", err)
		return exitUsage
	case fs.NArg() != 0:
		fmt.Fprintf(stderr, "provision: unexpected arguments %q\n", fs.Args())
		return exitUsage
	case *count <= 0:
		fmt.Fprintln(stderr, "provision: --count must be positive")
		return exitUsage
	case *caCert == "":
		fmt.Fprintln(stderr, "provision: --ca-cert is required")
		return exitUsage
	case *timeout <= 0 || *poll <= 0 || *signDelay < 0:
		fmt.Fprintln(stderr, "provision: --timeout and --poll must be positive, --sign-delay not negative")
		return exitUsage
	}
	caPEM, err := os.ReadFile(*caCert)
	if err != nil {
		fmt.Fprintf(stderr, "provision: --ca-cert: %v\n", err)
		return exitUsage
	}
	roots, intermediates, err := emulator.CertPoolFromPEM(caPEM)
	if err != nil {
		fmt.Fprintf(stderr, "provision: --ca-cert %s: %v\n", *caCert, err)
		return exitUsage
	}

	c := emulator.NewControlClient(*base, nil)
	p := plan{count: *count, mix: kinds, customer: *customer, profile: *profile, userProfile: *userProfile,
		caRef: *caRef, signDelay: *signDelay}
	names, err := c.Create(ctx, p.specs())
	if err != nil {
		fmt.Fprintf(stderr, "provision: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "provision: started %d processes, waiting up to %s\n", len(names), *timeout)

	snaps, err := waitFinished(ctx, c, names, *timeout, *poll)
	if err != nil {
		fmt.Fprintf(stderr, "provision: %v\n", err)
		return exitFail
	}
	outcomes := evaluate(names, snaps, roots, intermediates)
	if err := writeTable(stdout, outcomes); err != nil {
		fmt.Fprintf(stderr, "provision: write table: %v\n", err)
		return exitFail
	}
	line, ok := summarize(outcomes)
	fmt.Fprintln(stdout, line)
	if !ok {
		return exitFail
	}
	return exitOK
}

// waitFinished polls until every named process finished or the timeout passed, and returns the
// last snapshots. Only a failure to reach the emulator, or ctx ending, is an error.
func waitFinished(ctx context.Context, c *emulator.ControlClient, names []string, timeout, poll time.Duration) ([]emulator.Snapshot, error) {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		snaps, err := c.List(ctx)
		if err != nil {
			return nil, err
		}
		if allFinished(names, snaps) || !time.Now().Before(deadline) {
			return snaps, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for processes: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

func allFinished(names []string, snaps []emulator.Snapshot) bool {
	finished := make(map[string]bool, len(snaps))
	for _, s := range snaps {
		finished[s.Name] = s.Finished()
	}
	for _, n := range names {
		if !finished[n] {
			return false
		}
	}
	return true
}
