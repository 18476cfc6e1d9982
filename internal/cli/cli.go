// Package cli is the command tree of certprov-adapter: run, validate, inspect, doctor, config
// print, init-ca, revoke, setup pubsub, version and shell completion, on spf13/cobra. cmd/certprov-adapter
// only hands it the arguments and exits with what Run returns.
//
// Exit codes: 0 success, 1 problems found or a runtime failure, 2 a usage error (unknown
// command or flag, a missing or contradictory argument).
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	_ "github.com/certprov/certprov-adapter/internal/ca/install" // the connector types this binary offers
	"github.com/certprov/certprov-adapter/internal/suggest"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Options are what the command tree needs from main.
type Options struct {
	// Build is printed by `version` and `--version`, and logged by `run`.
	Build  buildinfo.Info
	Stdout io.Writer
	Stderr io.Writer
}

// failed is the error of a command that found problems or failed at run time. The command has
// reported why already when err is nil.
type failed struct{ err error }

func (f *failed) Error() string {
	if f.err == nil {
		return "failed"
	}
	return f.err.Error()
}

// fail ends a command with exit code 1; err, if any, is printed.
func fail(err error) error { return &failed{err: err} }

// usageError ends a command with exit code 2 and its message.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// Run executes the command line args (without the program name) and returns the exit code.
func Run(args []string, o Options) int {
	root := newRoot(o)
	root.SetArgs(longFlags(root, args))
	cmd, err := root.ExecuteC()
	if err == nil {
		return ExitOK
	}
	var f *failed
	if errors.As(err, &f) {
		if f.err != nil {
			fmt.Fprintf(o.Stderr, "%s: %v\n", cmd.Name(), f.err)
		}
		return ExitFailure
	}
	// Everything else comes from parsing the command line: cobra's own errors (unknown command
	// or flag, wrong number of arguments) and ours.
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(o.Stderr, "%s: %v\nRun '%s --help' for usage.\n", cmd.CommandPath(), err, cmd.CommandPath())
	return ExitUsage
}

func newRoot(o Options) *cobra.Command {
	root := &cobra.Command{
		Use:   "certprov-adapter",
		Short: "ChromeOS certificate provisioning adapter: plugs your CA into Google's Certificate Provisioning API",
		Long: `certprov-adapter receives Google's certificate provisioning notifications, has each device sign
a certificate request, gets the certificate from a configured CA and hands it back to the device.

Every command that reads a configuration takes --config FILE (default: $CERTPROV_CONFIG, else
/etc/certprov/adapter.yaml). Exit codes: 0 success, 1 problems found or a failure, 2 usage error.`,
		Version:       o.Build.String(),
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noArgs,
		// Without a command there is nothing to do: say how to use it, as a usage error.
		RunE: groupRunE(o, "a command is required"),
	}
	root.SetOut(o.Stdout)
	root.SetErr(o.Stderr)
	root.SetVersionTemplate("certprov-adapter {{.Version}}\n")
	// The root runs only to report a missing command: its usage shows the commands, not a
	// "certprov-adapter [flags]" line.
	root.SetUsageTemplate(strings.Replace(root.UsageTemplate(), "{{if .Runnable}}", "{{if and .Runnable .HasParent}}", 1))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	root.AddCommand(
		newRunCmd(o),
		newValidateCmd(o),
		newInspectCmd(o),
		newDoctorCmd(o),
		newConfigCmd(o),
		newInitCACmd(o),
		newRevokeCmd(o),
		newSetupCmd(o),
		newVersionCmd(o),
	)
	// cobra's completion command (bash, zsh, fish, powershell), made to refuse an unknown shell
	// as a usage error instead of printing its help.
	root.InitDefaultCompletionCmd()
	if comp, _, err := root.Find([]string{"completion"}); err == nil && comp != root {
		comp.Args = noArgs
		comp.RunE = groupRunE(o, "a shell is required")
	}
	return root
}

// groupRunE is the RunE of a command that only groups others: without one of them it is a
// usage error, with the usage on standard error.
func groupRunE(o Options, msg string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cmd.SetOut(o.Stderr)
		_ = cmd.Usage()
		return usagef("%s", msg)
	}
}

// noArgs refuses arguments with cobra's wording for an unknown command.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	var names []string
	for _, c := range cmd.Commands() {
		if c.IsAvailableCommand() {
			names = append(names, c.Name())
		}
	}
	if s := suggest.Closest(args[0], names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return &usageError{msg: msg}
}

func newVersionCmd(o Options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date and Go version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "certprov-adapter", o.Build)
			return nil
		},
	}
}

// configFlag adds --config, whose default is $CERTPROV_CONFIG or /etc/certprov/adapter.yaml.
func configFlag(cmd *cobra.Command) *string {
	def := os.Getenv("CERTPROV_CONFIG")
	if def == "" {
		def = "/etc/certprov/adapter.yaml"
	}
	p := cmd.Flags().String("config", def, "configuration file (env CERTPROV_CONFIG)")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	return p
}

// longFlags rewrites the single-dash long flags the standard flag package accepted
// ("-config F", "-json") as pflag wants them ("--config F"), so that scripts written for
// earlier versions keep working. Only names of flags the command tree defines are rewritten,
// and nothing after "--".
func longFlags(root *cobra.Command, args []string) []string {
	names := map[string]bool{}
	var collect func(*cobra.Command)
	collect = func(c *cobra.Command) {
		visit := func(f *pflag.Flag) { names[f.Name] = true }
		c.Flags().VisitAll(visit)
		c.PersistentFlags().VisitAll(visit)
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	names["help"], names["version"] = true, true
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		if a == "--" {
			break
		}
		if len(a) < 3 || a[0] != '-' || a[1] == '-' {
			continue
		}
		name, _, _ := strings.Cut(a[1:], "=")
		if names[name] {
			out[i] = "-" + a
		}
	}
	return out
}
