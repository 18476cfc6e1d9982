package cli

import (
	"context"
	"fmt"
	"strings"
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
PostgreSQL journals. With tenants (docs/tenants.md) every tenant's journal is read, under a
heading naming the tenant, unless --tenant names one; --json needs --tenant then.`,
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
	tenantName := cmd.Flags().String("tenant", "", "with tenants: read this tenant's journal only (default: every tenant's)")
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
		tenants, err := selectTenants(cfg, *tenantName)
		if err != nil {
			return err
		}
		if *asJSON && len(tenants) > 1 {
			return usagef("--json with tenants: name one with --tenant (%s)", strings.Join(tenantNames(tenants), ", "))
		}
		ctx, cancel := context.WithTimeout(context.Background(), inspectTimeout)
		defer cancel()
		now := time.Now()
		var findErr error
		for _, t := range tenants {
			store, err := adapter.OpenJournal(ctx, cfg.TenantJournal(t), true, nil)
			if err != nil {
				return fail(fmt.Errorf("open journal%s: %w", tenantSuffix(t), err))
			}
			done, err := inspectTenant(ctx, o, cfg, t, store, args, filter, now, *asJSON, *withPEM, len(tenants) > 1)
			_ = store.Close()
			if len(args) == 0 && err != nil {
				return fail(err)
			}
			if done {
				return nil
			}
			findErr = err
		}
		if len(args) == 0 {
			return nil
		}
		if len(tenants) > 1 {
			findErr = fmt.Errorf("no process %q in the journal of any tenant (%s)", args[0], strings.Join(tenantNames(tenants), ", "))
		}
		return fail(findErr)
	}
	return cmd
}

// inspectTenant lists the records of tenant t's journal (no args) or shows the process args
// names; done reports that the process was found and shown. heading prints the tenant's name
// first (several tenants).
func inspectTenant(ctx context.Context, o Options, cfg *config.Config, t config.Tenant, store journal.Store, args []string,
	filter inspect.Filter, now time.Time, asJSON, withPEM, heading bool) (done bool, err error) {
	if len(args) == 0 {
		if heading {
			fmt.Fprintf(o.Stdout, "tenant %s:\n", t.Name)
		}
		return false, inspect.Run(ctx, o.Stdout, store, filter, now, asJSON)
	}
	rec, err := inspect.Find(ctx, store, t.Customers, args[0])
	if err != nil {
		return false, err
	}
	if !t.Implicit && !asJSON {
		fmt.Fprintf(o.Stdout, "Tenant:       %s\n", t.Name)
	}
	var opts []inspect.ShowOption
	if withPEM {
		opts = append(opts, inspect.WithPEM())
	}
	// A journal an older adapter wrote cannot be searched by identity; the rest is shown.
	if by, err := inspect.RevokedBy(ctx, store, rec); err == nil {
		opts = append(opts, inspect.WithRevokedBy(by))
	} else {
		fmt.Fprintf(o.Stderr, "superseding processes not looked up: %v\n", err)
	}
	return true, inspect.Show(o.Stdout, rec, now, asJSON, opts...)
}

// selectTenants is the tenant named name, or every tenant when name is empty.
func selectTenants(cfg *config.Config, name string) ([]config.Tenant, error) {
	all := cfg.AllTenants()
	if name == "" {
		return all, nil
	}
	for _, t := range all {
		if t.Name == name && (cfg.HasTenants() || name == config.ImplicitTenant) {
			return []config.Tenant{t}, nil
		}
	}
	return nil, usagef("--tenant %s: the configuration's tenants are %s", name, strings.Join(tenantNames(all), ", "))
}

// singleTenant is cfg as the single-customer form of the tenant named (config.Single: its
// journal, pubsub, google, profiles and CA connections at the top level), for commands that act
// on one tenant; without tenants, cfg itself. The name is required when cfg has tenants.
func singleTenant(cfg *config.Config, name string) (*config.Config, error) {
	if !cfg.HasTenants() && name == "" {
		return cfg, nil
	}
	if name == "" {
		return nil, usagef("--tenant is required: the configuration has tenants (%s)", strings.Join(tenantNames(cfg.AllTenants()), ", "))
	}
	tenants, err := selectTenants(cfg, name)
	if err != nil {
		return nil, err
	}
	return cfg.Single(tenants[0]), nil
}

func tenantNames(ts []config.Tenant) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

// tenantSuffix names a named tenant in a message.
func tenantSuffix(t config.Tenant) string {
	if t.Implicit {
		return ""
	}
	return " of tenant " + t.Name
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
	var out []string
	for _, t := range cfg.AllTenants() {
		store, err := adapter.OpenJournal(ctx, cfg.TenantJournal(t), true, nil)
		if err != nil {
			continue
		}
		recs, err := store.Unfinished(ctx)
		_ = store.Close()
		for _, r := range recs {
			if err == nil && r.Process != nil {
				out = append(out, r.Process.ID+"\t"+string(r.State))
			}
		}
	}
	return out
}
