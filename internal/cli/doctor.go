package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/doctor"
)

func newDoctorCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the configured Google, Pub/Sub and CA endpoints and say what to fix",
		Long: `Check, against the endpoints the configuration names, everything the adapter needs at run time:
that a token can be obtained with the provisioning scope, that the Pub/Sub subscription exists and
the identity may pull from it, that the Certificate Provisioning API answers and authorises the
identity for each customer, and that each CA connection answers. Nothing is changed anywhere.

One line per check: ok, FAIL (with what to fix) or skip (not checkable here). Exit code 1 if any
check failed.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print JSON for scripts")
	timeout := cmd.Flags().Duration("timeout", doctor.DefaultTimeout, "how long one check may take")
	cmd.RunE = func(*cobra.Command, []string) error {
		if *timeout <= 0 {
			return usagef("--timeout must be positive")
		}
		cfg, err := config.Load(*path)
		if err != nil {
			config.PrintProblems(o.Stderr, *path, err)
			return fail(nil)
		}
		ctx := context.Background()
		opts, closeClients := doctor.FromConfig(ctx, cfg, zap.NewNop())
		defer closeClients()
		opts.Timeout = *timeout
		report := doctor.Run(ctx, opts)
		if *asJSON {
			enc := json.NewEncoder(o.Stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(report); err != nil {
				return fail(err)
			}
		} else {
			printReport(o.Stdout, report)
		}
		if !report.OK {
			return fail(nil)
		}
		return nil
	}
	return cmd
}

// printReport writes one line per check: its status, its name, what was found and, for a
// failure, what to fix.
func printReport(w io.Writer, r doctor.Report) {
	counts := map[doctor.Status]int{}
	for _, c := range r.Checks {
		counts[c.Status]++
		line := fmt.Sprintf("%-4s %s: %s", label(c.Status), c.Name, c.Detail)
		if c.Fix != "" {
			line += " -- fix: " + c.Fix
		}
		fmt.Fprintln(w, strings.ReplaceAll(line, "\n", "; "))
	}
	fmt.Fprintf(w, "%d ok, %d failed, %d skipped\n", counts[doctor.OK], counts[doctor.Fail], counts[doctor.Skip])
}

func label(s doctor.Status) string {
	if s == doctor.Fail {
		return "FAIL"
	}
	return string(s)
}
