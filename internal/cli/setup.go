package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/doctor"
	"github.com/certprov/certprov-adapter/internal/pubsubsetup"
)

func newSetupCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Set up what the adapter needs outside itself",
		Args:  noArgs,
		RunE:  groupRunE(o, "a subcommand is required"),
	}
	cmd.AddCommand(newSetupPubSubCmd(o))
	return cmd
}

func newSetupPubSubCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pubsub",
		Short: "Create or check the Pub/Sub subscription, and list what is left to do by hand",
		Long: `Create the subscription pubsub.subscription on the topic Google publishes to, or check an existing
one, with what the adapter needs: an ack deadline of twice google.requestTimeout, 7 days of
message retention, exponential retry backoff from 10 s to 10 min, no expiration, exactly-once
delivery off, pull delivery, and with --dead-letter-topic a dead-letter policy (20 delivery
attempts) on that topic, which is created when missing together with a subscription that keeps
what is dead-lettered. Each setting of an existing subscription that differs is reported and
updated; one Pub/Sub cannot change (its topic, a filter, detached) is reported with what to do.
Nothing is ever deleted. Running it again changes nothing and says so.

Then it lists what is left to do by hand: the IAM bindings and the Admin console's steps.

It authenticates as the adapter does (pubsub.endpoint and pubsub.insecure for an emulator,
google.credentials otherwise), but needs an identity that may administer Pub/Sub in the project
(e.g. roles/pubsub.editor), not only the adapter's roles/pubsub.subscriber.

--check changes nothing and exits 1 if anything is missing or differs; --dry-run changes nothing
and says what would be done. --json prints the report and the steps as JSON.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	topic := cmd.Flags().String("topic", "", "the topic Google publishes to, projects/P/topics/T or an id in pubsub.project (needed to create the subscription)")
	deadLetter := cmd.Flags().String("dead-letter-topic", "", "the dead-letter topic, projects/P/topics/T or an id in pubsub.project; created when missing")
	check := cmd.Flags().Bool("check", false, "change nothing; exit 1 if anything is missing or differs")
	dryRun := cmd.Flags().Bool("dry-run", false, "change nothing; say what would be done")
	timeout := cmd.Flags().Duration("timeout", pubsubsetup.DefaultTimeout, "how long one call to Pub/Sub may take")
	asJSON := cmd.Flags().Bool("json", false, "print JSON for scripts: {report, steps}")
	for _, f := range []string{"topic", "dead-letter-topic"} {
		_ = cmd.RegisterFlagCompletionFunc(f, cobra.NoFileCompletions)
	}
	cmd.RunE = func(*cobra.Command, []string) error {
		if *check && *dryRun {
			return usagef("--check and --dry-run exclude each other")
		}
		if *timeout <= 0 {
			return usagef("--timeout must be positive")
		}
		// The set-up opens none of the files the profiles and CA connections name: it may run
		// on an administrator's machine. The credentials file is read by the Pub/Sub client.
		cfg, err := config.LoadWith(*path, config.Options{Offline: true})
		if err != nil {
			config.PrintProblems(o.Stderr, *path, err)
			return fail(nil)
		}
		settings, err := pubsubsetup.For(cfg.PubSub, cfg.Google.RequestTimeout, *topic, *deadLetter)
		if err != nil {
			return usagef("%v", err)
		}
		mode := pubsubsetup.Apply
		switch {
		case *check:
			mode = pubsubsetup.Check
		case *dryRun:
			mode = pubsubsetup.DryRun
		}
		ctx := context.Background()
		ps, err := adapter.PubSubClient(ctx, cfg, nil)
		if err != nil {
			return fail(err)
		}
		defer func() { _ = ps.Close() }()
		report, err := pubsubsetup.Run(ctx, pubsubsetup.Options{
			Subscriptions: ps.SubscriptionAdminClient, Topics: ps.TopicAdminClient,
			Settings: settings, Mode: mode, Timeout: *timeout,
		})
		var steps []pubsubsetup.Step
		if err == nil && mode != pubsubsetup.Check {
			id := doctor.KeyFileIdentity(cfg.Google.Credentials)
			steps = pubsubsetup.HandSteps(pubsubsetup.StepsOptions{
				Settings: settings, Topic: report.Topic,
				Profiles: slices.Collect(maps.Keys(cfg.Profiles)), CAConnections: slices.Collect(maps.Keys(cfg.CAConnections)),
				ServiceAccount: id.Email, ClientID: id.ClientID, ConfigPath: *path,
			})
		}
		if *asJSON {
			enc := json.NewEncoder(o.Stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(struct {
				Report pubsubsetup.Report `json:"report"`
				Steps  []pubsubsetup.Step `json:"steps,omitempty"`
			}{report, steps}); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			printSetup(o.Stdout, report, settings, mode)
			if len(steps) > 0 {
				printSteps(o.Stdout, steps)
			}
		}
		if errors.Is(err, pubsubsetup.ErrTopicRequired) {
			return usagef("%s: %v: --topic", settings.Subscription, err)
		}
		if err != nil {
			return fail(err)
		}
		if report.Problems {
			return fail(nil)
		}
		return nil
	}
	return cmd
}

// printSetup writes one block per resource: what happened to it, then its settings (created)
// or the settings that differ (existing), then a summary line.
func printSetup(w io.Writer, r pubsubsetup.Report, s pubsubsetup.Settings, mode pubsubsetup.Mode) {
	for _, res := range r.Resources {
		fmt.Fprintf(w, "%s %s: %s\n", res.Kind, res.Name, res.Action)
		if res.Note != "" {
			fmt.Fprintf(w, "  note: %s\n", res.Note)
		}
		if len(res.Differences) == 0 && res.Kind == pubsubsetup.KindSubscription &&
			(res.Action == pubsubsetup.Created || res.Action == pubsubsetup.WouldCreate || res.Action == pubsubsetup.Missing) {
			for _, st := range res.Settings {
				line := fmt.Sprintf("  %-20s %s", st.Name, st.Value)
				if why := s.Why[st.Name]; why != "" {
					line += " -- " + why
				}
				fmt.Fprintln(w, line)
			}
		}
		for _, d := range res.Differences {
			line := fmt.Sprintf("  %s: %s, want %s", d.Setting, d.Have, d.Want)
			switch {
			case d.Fix != "":
				line += " -- " + d.Fix
			case d.Fixed:
				line += " (updated)"
			case mode == pubsubsetup.DryRun:
				line += " (would be updated)"
			}
			if why := s.Why[d.Setting]; why != "" && d.Fix == "" {
				line += " -- " + why
			}
			fmt.Fprintln(w, line)
		}
	}
	switch {
	case mode == pubsubsetup.DryRun:
		fmt.Fprintln(w, "dry run: nothing was changed")
	case mode == pubsubsetup.Check && r.Problems:
		fmt.Fprintln(w, "check: the Pub/Sub set-up differs from what the adapter needs (run without --check to fix what can be)")
	case mode == pubsubsetup.Check:
		fmt.Fprintln(w, "check: the Pub/Sub set-up is as the adapter needs it")
	case !r.Changed && !r.Problems && len(r.Resources) > 0:
		fmt.Fprintln(w, "nothing changed: the Pub/Sub set-up was already as the adapter needs it")
	}
}

// printSteps writes the steps left to do by hand, numbered, with their commands indented.
func printSteps(w io.Writer, steps []pubsubsetup.Step) {
	fmt.Fprintln(w, "\nStill to do by hand:")
	for i, st := range steps {
		fmt.Fprintf(w, "%d. %s\n", i+1, st.Title)
		for _, c := range st.Commands {
			fmt.Fprintf(w, "     %s\n", c)
		}
		if st.Detail != "" {
			fmt.Fprintf(w, "   %s\n", st.Detail)
		}
	}
}
