package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/journal"
)

// inspectTimeout bounds opening and reading the journal.
const inspectTimeout = 30 * time.Second

func newInspectCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect [PROCESS]",
		Short: "List processes, or show one process's history and certificate",
		Long: `Without PROCESS, list the unfinished processes of the journal: state, age, next step, due in,
attempts, last error; with --all the finished ones too (outcome, serial, failure; newest first,
at most --limit), with --state only those in one state. With PROCESS (its id or full name), show
that process's history, finished or not, and its certificate (subject, issuer, serial, SANs,
validity, SPKI SHA-256; --pem the PEM too). Works beside a running adapter, for SQLite and
PostgreSQL journals.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("at most one process")
			}
			return nil
		},
	}
	path := configFlag(cmd)
	asJSON := cmd.Flags().Bool("json", false, "print JSON for scripts")
	all := cmd.Flags().Bool("all", false, "list finished processes too, most recent first")
	stateName := cmd.Flags().String("state", "", "list only processes in this state (uploaded and failed: finished ones)")
	limit := cmd.Flags().Int("limit", inspect.DefaultLimit, "list at most this many finished processes")
	withPEM := cmd.Flags().Bool("pem", false, "with PROCESS: print the certificate's PEM too")
	cmd.MarkFlagsMutuallyExclusive("all", "state")
	_ = cmd.RegisterFlagCompletionFunc("state", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var names []string
		for _, st := range journal.States() {
			names = append(names, string(st))
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	})
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return unfinishedIDs(*path), cobra.ShellCompDirectiveNoFileComp
	}
	cmd.RunE = func(_ *cobra.Command, args []string) error {
		filter := inspect.Filter{All: *all, Limit: *limit}
		if *stateName != "" {
			st, err := inspect.ParseState(*stateName)
			if err != nil {
				return usagef("--state: %v", err)
			}
			filter.State = st
		}
		cfg, err := config.Load(*path)
		if err != nil {
			config.PrintProblems(o.Stderr, *path, err)
			return fail(nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), inspectTimeout)
		defer cancel()
		store, err := adapter.OpenJournal(ctx, cfg.Journal, true, nil)
		if err != nil {
			return fail(fmt.Errorf("open journal: %w", err))
		}
		defer store.Close()
		now := time.Now()
		if len(args) == 0 {
			if err := inspect.Run(ctx, o.Stdout, store, filter, now, *asJSON); err != nil {
				return fail(err)
			}
			return nil
		}
		rec, err := inspect.Find(ctx, store, cfg.Customers, args[0])
		if err != nil {
			return fail(err)
		}
		var opts []inspect.ShowOption
		if *withPEM {
			opts = append(opts, inspect.WithPEM())
		}
		// A journal an older adapter wrote cannot be searched by identity; the rest is shown.
		if by, err := inspect.RevokedBy(ctx, store, rec); err == nil {
			opts = append(opts, inspect.WithRevokedBy(by))
		} else {
			fmt.Fprintf(o.Stderr, "superseding processes not looked up: %v\n", err)
		}
		if err := inspect.Show(o.Stdout, rec, now, *asJSON, opts...); err != nil {
			return fail(err)
		}
		return nil
	}
	return cmd
}

// unfinishedIDs lists the ids of the unfinished processes, for shell completion; it is quiet
// about every failure, since a completion cannot report one.
func unfinishedIDs(path string) []string {
	cfg, err := config.LoadWith(path, config.Options{Offline: true})
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	store, err := adapter.OpenJournal(ctx, cfg.Journal, true, nil)
	if err != nil {
		return nil
	}
	defer store.Close()
	recs, err := store.Unfinished(ctx)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(recs))
	for _, r := range recs {
		if r.Process != nil {
			out = append(out, r.Process.ID+"\t"+string(r.State))
		}
	}
	return out
}
