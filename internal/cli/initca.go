package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/certprov/certprov-adapter/internal/ca/local"
)

func newInitCACmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init-ca",
		Short: `Create a CA certificate and key for the built-in "local" connector`,
		Long: `Create ca.crt and ca.key in --dir for the built-in "local" CA connector. An existing CA is
never overwritten.`,
		Args: noArgs,
	}
	dir := cmd.Flags().String("dir", "", "directory for ca.crt and ca.key (created if absent)")
	keyType := cmd.Flags().String("key-type", "ecdsa", "CA key type: ecdsa (P-256) or rsa (3072)")
	cn := cmd.Flags().String("cn", "certprov local CA", "CA common name")
	validity := cmd.Flags().Duration("validity", 10*365*24*time.Hour, "CA certificate lifetime")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.RegisterFlagCompletionFunc("key-type", cobra.FixedCompletions([]string{"ecdsa\tP-256", "rsa\tRSA 3072"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(*cobra.Command, []string) error {
		if *dir == "" {
			return usagef("--dir is required")
		}
		certPath, keyPath, err := local.CreateCA(*dir, *keyType, *cn, *validity)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(o.Stdout, "CA certificate: %s\nCA key:         %s\n", certPath, keyPath)
		return nil
	}
	return cmd
}
