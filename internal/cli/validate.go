package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/config"
)

func newValidateCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Check a configuration and print every problem with its YAML path",
		Long: `Load a configuration and check everything that can go wrong before the adapter starts: unknown
keys, bad values, templates, CA connection settings and the files they name. Every problem is
printed with its YAML path; the exit code is 1 if there is any.

--check-connections also contacts every CA (the connector's health check).
--offline reads nothing but the configuration file and contacts nobody: for CI of a production
configuration whose key and certificate files exist only in production. It says what it skipped.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	check := cmd.Flags().Bool("check-connections", false, "also contact every CA connection and report its health")
	offline := cmd.Flags().Bool("offline", false, "do not open the files the configuration names nor contact anything")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *check && *offline {
			return usagef("--check-connections and --offline exclude each other")
		}
		if *offline {
			return validateOffline(o, *path)
		}
		return validate(o, *path, *check)
	}
	return cmd
}

func validate(o Options, path string, check bool) error {
	cfg, loadErr := config.Load(path)
	if loadErr != nil {
		// When only the checks that read files failed, the rest is checked too, so that every
		// problem comes out at once; problems of the file itself stop here.
		var err error
		if cfg, err = config.LoadWith(path, config.Options{Offline: true}); err != nil {
			config.PrintProblems(o.Stderr, path, loadErr)
			return fail(nil)
		}
	}
	printWarnings(o.Stderr, path, cfg)
	_, perr := adapter.Profiles(cfg)
	conns, cerr := adapter.Connectors(cfg, zap.NewNop())
	defer func() { _ = adapter.CloseConnectors(conns) }()
	// Enrollment profiles are checked whether or not the section is enabled, so that enabling
	// it later holds no surprise.
	var vaerr error
	if len(cfg.VerifiedAccess.Profiles) > 0 {
		_, vaerr = adapter.VerifiedAccessProfiles(cfg, conns)
	}
	if err := errors.Join(loadErr, perr, cerr, vaerr, adapter.CheckRevokers(cfg, conns)); err != nil {
		config.PrintProblems(o.Stderr, path, err)
		return fail(nil)
	}
	if check && !printPings(o, adapter.PingConnectors(context.Background(), conns)) {
		return fail(nil)
	}
	fmt.Fprintf(o.Stdout, "%s: OK (%s)\n", path, counts(cfg))
	return nil
}

// validateOffline checks what can be checked from the file alone and says what it left out.
func validateOffline(o Options, path string) error {
	cfg, err := config.LoadWith(path, config.Options{Offline: true})
	if err != nil {
		config.PrintProblems(o.Stderr, path, err)
		return fail(nil)
	}
	printWarnings(o.Stderr, path, cfg)
	_, perr := adapter.Profiles(cfg)
	unchecked, cerr := adapter.CheckConnectors(cfg)
	var vaerr error
	if len(cfg.VerifiedAccess.Profiles) > 0 {
		// Without built connectors the profiles are compiled but not bound to their CA.
		_, vaerr = adapter.VerifiedAccessProfiles(cfg, nil)
	}
	if err := errors.Join(perr, cerr, vaerr); err != nil {
		config.PrintProblems(o.Stderr, path, err)
		return fail(nil)
	}
	fmt.Fprintf(o.Stdout, "%s: OK offline (%s)\n", path, counts(cfg))
	for _, s := range offlineSkips(cfg, unchecked) {
		fmt.Fprintf(o.Stdout, "%s: not checked offline: %s\n", path, s)
	}
	return nil
}

// offlineSkips lists what validate checks and validate --offline does not.
func offlineSkips(cfg *config.Config, unchecked []string) []string {
	var out []string
	for _, f := range cfg.Files() {
		out = append(out, fmt.Sprintf("%s: the file %s is not opened", f.Path, f.File))
	}
	if cfg.Journal.Type == config.JournalPostgres && cfg.Journal.DSN != "" {
		out = append(out, "journal.dsn: whether it protects the connection (telling reads sslrootcert and the PostgreSQL service and password files)")
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.CAConnections)) {
		c := cfg.CAConnections[name]
		p := "caConnections." + name
		if files := settingFiles(c.Settings, ""); len(files) > 0 {
			out = append(out, fmt.Sprintf("%s: the files of %s are not opened", p, strings.Join(files, ", ")))
		}
		if slices.Contains(unchecked, name) {
			out = append(out, fmt.Sprintf("%s: the %s connector has no offline check; its settings are checked only when it is built", p, c.Type))
		}
	}
	if len(cfg.VerifiedAccess.Profiles) > 0 {
		out = append(out, "verifiedAccess.profiles.*.caConnection: whether the connection can issue for a public key (known only once its connector is built)")
	}
	out = append(out, "no CA, Google API or Pub/Sub endpoint is contacted (see validate --check-connections and doctor)")
	return out
}

// settingFiles lists the settings of a CA connection that name files (keys ending in File or
// Files, as ca.Settings documents), as dotted keys.
func settingFiles(settings map[string]any, prefix string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		key := k
		if prefix != "" {
			key = prefix + "." + k
		}
		switch v := settings[k].(type) {
		case map[string]any:
			if strings.HasSuffix(k, "Files") {
				for _, name := range slices.Sorted(maps.Keys(v)) {
					out = append(out, key+"."+name)
				}
				continue
			}
			out = append(out, settingFiles(v, key)...)
		case string:
			if strings.HasSuffix(k, "File") && v != "" {
				out = append(out, key)
			}
		}
	}
	return out
}

func counts(cfg *config.Config) string {
	s := fmt.Sprintf("%d profiles, %d CA connections", len(cfg.Profiles), len(cfg.CAConnections))
	if n := len(cfg.VerifiedAccess.Profiles); n > 0 {
		s += fmt.Sprintf(", %d Verified Access profiles", n)
	}
	return s
}

func printWarnings(w io.Writer, path string, cfg *config.Config) {
	for _, p := range cfg.Warnings() {
		fmt.Fprintf(w, "%s: %s: warning: %s\n", path, p.Path, p.Message)
	}
}

// printPings reports each connection's answer to its health check and returns whether all
// answered.
func printPings(o Options, pings []adapter.ConnectorPing) bool {
	ok := true
	for _, p := range pings {
		switch {
		case !p.Checked:
			fmt.Fprintf(o.Stdout, "caConnections.%s: no health check for this connector type\n", p.Name)
		case p.Err != nil:
			ok = false
			fmt.Fprintf(o.Stderr, "caConnections.%s: unreachable or misconfigured: %v\n", p.Name, p.Err)
		default:
			fmt.Fprintf(o.Stdout, "caConnections.%s: OK\n", p.Name)
		}
	}
	return ok
}
