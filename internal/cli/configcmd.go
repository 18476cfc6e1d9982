package cli

import (
	"github.com/spf13/cobra"

	"github.com/certprov/certprov-adapter/internal/config"
)

func newConfigCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with the configuration",
		Args:  noArgs,
		RunE:  groupRunE(o, "a subcommand is required"),
	}
	cmd.AddCommand(newConfigPrintCmd(o))
	return cmd
}

func newConfigPrintCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as YAML, secrets redacted",
		Long: `Print the configuration the adapter would run with: the file with every default filled in and
the CERTPROV_* environment overrides applied, relative paths resolved, as YAML. Secrets are
replaced by [redacted]: passwords (the journal DSN's too), tokens, challenge passwords, HMAC keys,
header values, key material. Paths are printed; the files they name are not read.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg, err := config.LoadWith(*path, config.Options{Offline: true})
		if err != nil {
			config.PrintProblems(o.Stderr, *path, err)
			return fail(nil)
		}
		out, err := cfg.MarshalRedacted()
		if err != nil {
			return fail(err)
		}
		if _, err := o.Stdout.Write(out); err != nil {
			return fail(err)
		}
		return nil
	}
	return cmd
}
