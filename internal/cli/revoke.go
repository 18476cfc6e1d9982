package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/inspect"
	"github.com/certprov/certprov-adapter/internal/logging"
	"github.com/certprov/certprov-adapter/internal/pemutil"
)

// revokeTimeout bounds the journal lookup; the revocation itself is bounded by the connection's
// own timeout.
const revokeTimeout = 30 * time.Second

func newRevokeCmd(o Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke (--process ID | --serial S | --certificate FILE) --reason R",
		Short: "Revoke a certificate at the CA that issued it",
		Long: `Revoke a certificate through the CA connection that issued it, with an RFC 5280 reason
(keyCompromise, superseded, affiliationChanged, cessationOfOperation, privilegeWithdrawn,
certificateHold, cACompromise, aACompromise, unspecified; case, '-' and '_' do not matter).

--process ID (or the full process name) takes the certificate and the CA connection from the
journal. --serial S (hexadecimal, as inspect and openssl print it; colons allowed) and
--certificate FILE (a PEM certificate, e.g. from inspect --pem) name a certificate the journal
may not hold, such as a Verified Access one; give --ca NAME unless the configuration has a
single CA connection. Revoking a revoked certificate succeeds. Connections whose CA cannot
revoke (scep, est) are refused. Works beside a running adapter.`,
		Args: noArgs,
	}
	path := configFlag(cmd)
	processID := cmd.Flags().String("process", "", "the process whose certificate to revoke (id or full name)")
	serialFlag := cmd.Flags().String("serial", "", "serial number of the certificate, hexadecimal")
	certFile := cmd.Flags().String("certificate", "", "PEM file of the certificate")
	caName := cmd.Flags().String("ca", "", "the CA connection (caConnections key) that issued it")
	reasonFlag := cmd.Flags().String("reason", "", "RFC 5280 revocation reason, e.g. keyCompromise or superseded")
	cmd.MarkFlagsMutuallyExclusive("process", "serial", "certificate")
	cmd.MarkFlagsOneRequired("process", "serial", "certificate")
	_ = cmd.MarkFlagFilename("certificate", "pem", "crt")
	_ = cmd.RegisterFlagCompletionFunc("reason", cobra.FixedCompletions(reasonNames(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("ca", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		cfg, err := config.LoadWith(*path, config.Options{Offline: true})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return slices.Sorted(maps.Keys(cfg.CAConnections)), cobra.ShellCompDirectiveNoFileComp
	})
	cmd.RunE = func(*cobra.Command, []string) error {
		if *reasonFlag == "" {
			return usagef("--reason is required (one of %s)", strings.Join(reasonNames(), ", "))
		}
		reason, err := ca.ParseReason(*reasonFlag)
		if err != nil {
			return usagef("--reason: %v", err)
		}
		req := &ca.RevokeRequest{Reason: reason}
		switch {
		case *serialFlag != "":
			if req.Serial, err = parseSerial(*serialFlag); err != nil {
				return usagef("--serial: %v", err)
			}
		case *certFile != "":
			certs, err := pemutil.ReadCertificates(*certFile)
			if err != nil {
				return fail(fmt.Errorf("--certificate %s: %w", *certFile, err))
			}
			if len(certs) != 1 {
				return fail(fmt.Errorf("--certificate %s: holds %d certificates; give the one to revoke alone", *certFile, len(certs)))
			}
			req.Certificate, req.Serial = certs[0], certs[0].SerialNumber
		}

		cfg, err := config.Load(*path)
		if err != nil {
			config.PrintProblems(o.Stderr, *path, err)
			return fail(nil)
		}
		name := *caName
		if *processID != "" {
			if name, err = fromJournal(cfg, *processID, name, req); err != nil {
				return fail(err)
			}
		} else if name == "" {
			if len(cfg.CAConnections) != 1 {
				return usagef("--ca is required: the configuration has %d CA connections (%s)", len(cfg.CAConnections), strings.Join(slices.Sorted(maps.Keys(cfg.CAConnections)), ", "))
			}
			name = slices.Sorted(maps.Keys(cfg.CAConnections))[0]
		}
		return revoke(o, cfg, name, req)
	}
	return cmd
}

// fromJournal completes req from the journal's record of the process: its certificate and
// request key, and returns the CA connection that issued it (which --ca, if given, must name).
func fromJournal(cfg *config.Config, id, caName string, req *ca.RevokeRequest) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), revokeTimeout)
	defer cancel()
	store, err := adapter.OpenJournal(ctx, cfg.Journal, true, nil)
	if err != nil {
		return "", fmt.Errorf("open journal: %w", err)
	}
	defer store.Close()
	rec, err := inspect.Find(ctx, store, cfg.Customers, id)
	if err != nil {
		return "", err
	}
	if rec.CertificatePEM == "" {
		return "", fmt.Errorf("process %s has no certificate (state %s): nothing to revoke", rec.Name, rec.State)
	}
	certs, err := pemutil.ParseCertificates([]byte(rec.CertificatePEM))
	if err != nil || len(certs) == 0 {
		return "", fmt.Errorf("process %s: the journal's certificate cannot be read: %v", rec.Name, err)
	}
	switch {
	case rec.CAName == "":
		return "", fmt.Errorf("process %s: the journal does not say which CA connection issued it; use --serial with --ca", rec.Name)
	case caName != "" && caName != rec.CAName:
		return "", fmt.Errorf("process %s was issued through caConnections.%s, not %s", rec.Name, rec.CAName, caName)
	}
	req.Certificate, req.Serial, req.Key = certs[0], certs[0].SerialNumber, rec.Name
	return rec.CAName, nil
}

// revoke builds the one CA connection named and revokes through it.
func revoke(o Options, cfg *config.Config, name string, req *ca.RevokeRequest) error {
	conf, ok := cfg.CAConnections[name]
	if !ok {
		return fail(fmt.Errorf("no CA connection %q in the configuration (known: %s)", name, strings.Join(slices.Sorted(maps.Keys(cfg.CAConnections)), ", ")))
	}
	log, err := logging.New(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		log = zap.NewNop()
	}
	defer func() { _ = log.Sync() }()
	conn, err := adapter.Connector(cfg, name, log)
	if err != nil {
		config.PrintProblems(o.Stderr, "caConnections."+name, err)
		return fail(nil)
	}
	if c, ok := conn.(io.Closer); ok {
		defer func() { _ = c.Close() }()
	}
	rv, ok := conn.(ca.Revoker)
	if !ok {
		return fail(fmt.Errorf("caConnections.%s (type %s) cannot revoke: its CA offers no revocation to the adapter; revoke serial %s at the CA itself",
			name, conf.Type, req.Serial.Text(16)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
	defer cancel()
	err = rv.Revoke(ctx, req)
	// The audit trail records every attempt that reached the CA connection, refused or not.
	trail, aerr := audit.Open(cfg.Audit.Path, log.Named("audit"))
	if aerr == nil {
		aerr = trail.Write(audit.Revocation(time.Now(), cfg.InstanceID, name, req.Serial.Text(16), req.Certificate, req.Reason.String(), err))
		aerr = errors.Join(aerr, trail.Close())
	}
	if aerr != nil {
		log.Error("audit event of the revocation not written", zap.String("serial", req.Serial.Text(16)), zap.Error(aerr))
	}
	if err != nil {
		hint := "the CA refused; this will not change by trying again"
		if c, _ := ca.Classify(err); c != ca.ClassPermanent {
			hint = "temporary: try again"
		}
		return fail(fmt.Errorf("serial %s: %w (%s)", req.Serial.Text(16), err, hint))
	}
	subject := ""
	if req.Certificate != nil {
		subject = fmt.Sprintf(" (%s)", req.Certificate.Subject)
	}
	fmt.Fprintf(o.Stdout, "revoked serial %s%s through caConnections.%s, reason %s\n", req.Serial.Text(16), subject, name, req.Reason)
	return nil
}

// parseSerial reads a hexadecimal serial number as tools print it: "7f3a…", "0x7F3A…",
// "7f:3a:…".
func parseSerial(s string) (*big.Int, error) {
	h := strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s))
	h = strings.TrimPrefix(strings.TrimPrefix(h, "0x"), "0X")
	n, ok := new(big.Int).SetString(h, 16)
	if !ok || h == "" {
		return nil, fmt.Errorf("%q is not a hexadecimal serial number", s)
	}
	if n.Sign() <= 0 {
		return nil, errors.New("a serial number is positive")
	}
	return n, nil
}

// reasonNames are the reasons --reason takes, for help and completion.
func reasonNames() []string {
	var out []string
	for _, r := range []ca.Reason{ca.ReasonKeyCompromise, ca.ReasonSuperseded, ca.ReasonAffiliationChanged,
		ca.ReasonCessationOfOperation, ca.ReasonPrivilegeWithdrawn, ca.ReasonCertificateHold,
		ca.ReasonCACompromise, ca.ReasonAACompromise, ca.ReasonUnspecified} {
		out = append(out, r.String())
	}
	return out
}
