package verifiedaccess

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/ca"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/csr"
)

// Profile is a compiled enrollment profile, bound to its CA. It is immutable and safe for
// concurrent use.
type Profile struct {
	Name             string
	APIVersion       string
	Scopes           []string
	EnrollmentDomain string
	// UserDomains are the e-mail domains user keys may claim, lower case.
	UserDomains  []string
	Template     *csr.Template
	Policy       *Policy
	Validity     time.Duration
	TemplateName string

	// CAName, CA and CATimeout are the connection that issues.
	CAName    string
	CA        ca.PublicKeyIssuer
	CATimeout time.Duration
}

// CompileProfile compiles the templates and the policy of one enrollment profile; the CA is
// bound by the caller (Bind). Errors name keys relative to the profile ("subject.commonName: …",
// "policy.signals.diskEncryption[0]: …").
func CompileProfile(name string, p config.VerifiedAccessProfile) (*Profile, error) {
	var errs []error
	tmpl, err := csr.CompileData(config.Profile{
		Subject:         p.Subject,
		SubjectAltNames: p.SubjectAltNames,
		KeyUsage:        p.KeyUsage,
		ExtKeyUsage:     p.ExtKeyUsage,
		TemplateName:    p.TemplateName,
	}.Spec(), sampleTemplateData())
	if err != nil {
		errs = append(errs, err)
	}
	if len(p.SubjectAltNames.UPN) > 0 {
		errs = append(errs, errors.New("subjectAltNames.upn: not supported for Verified Access profiles"))
	}
	policy, err := CompilePolicy(p.Policy)
	if err != nil {
		errs = append(errs, prefixLines("policy.", err))
	}
	if p.APIVersion != config.VAv1 && p.APIVersion != config.VAv2 {
		errs = append(errs, fmt.Errorf("apiVersion: %q is not v1 or v2", p.APIVersion))
	} else if p.APIVersion == config.VAv1 && policy != nil && policy.needsV2() {
		errs = append(errs, errors.New("policy: needs apiVersion v2: v1 verify results carry no signals, trust levels or customer ids"))
	}
	if len(p.Scopes) == 0 {
		errs = append(errs, errors.New("scopes: none allowed"))
	}
	for _, s := range p.Scopes {
		if s != config.VAScopeMachine && s != config.VAScopeUser {
			errs = append(errs, fmt.Errorf("scopes: %q is not machine or user", s))
		}
	}
	if slices.Contains(p.Scopes, config.VAScopeMachine) && p.EnrollmentDomain == "" {
		errs = append(errs, errors.New("enrollmentDomain: required for machine keys"))
	}
	userDomains := make([]string, 0, len(p.UserDomains))
	for _, d := range p.UserDomains {
		userDomains = append(userDomains, strings.ToLower(d))
	}
	if len(userDomains) == 0 && p.EnrollmentDomain != "" {
		userDomains = []string{strings.ToLower(p.EnrollmentDomain)}
	}
	if slices.Contains(p.Scopes, config.VAScopeUser) && len(userDomains) == 0 {
		errs = append(errs, errors.New("userDomains: required for user keys"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Profile{
		Name:             name,
		APIVersion:       p.APIVersion,
		Scopes:           slices.Clone(p.Scopes),
		EnrollmentDomain: p.EnrollmentDomain,
		UserDomains:      userDomains,
		Template:         tmpl,
		Policy:           policy,
		Validity:         p.Validity,
		TemplateName:     p.TemplateName,
		CAName:           p.CAConnection,
	}, nil
}

// prefixLines prefixes every line of a joined error, so that each problem keeps its full key.
func prefixLines(prefix string, err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return errors.New(strings.Join(lines, "\n"))
}

// CAConnection is a CA connection as the profiles see it.
type CAConnection struct {
	Type string // the connector type, for messages
	// Connector is nil when the connection failed to build: its profiles are compiled (so that
	// their own problems are reported) but not bound, and no problem is added for it.
	Connector ca.Connector
	Timeout   time.Duration
}

// Profiles compiles every enrollment profile of cfg and binds it to its CA connection. A
// connection whose connector cannot issue for a public key without a CSR (ca.PublicKeyIssuer)
// is a problem of the profile's caConnection key. The error joins every problem, each starting
// with its YAML path (verifiedAccess.profiles.<name>.…).
func Profiles(cfg *config.Config, cas map[string]CAConnection) (map[string]*Profile, error) {
	names := slices.Sorted(maps.Keys(cfg.VerifiedAccess.Profiles))
	out := make(map[string]*Profile, len(names))
	var errs []error
	for _, name := range names {
		p := cfg.VerifiedAccess.Profiles[name]
		if p.APIVersion == "" {
			p.APIVersion = cfg.VerifiedAccess.APIVersion
		}
		path := "verifiedAccess.profiles." + name
		prof, err := CompileProfile(name, p)
		if err != nil {
			errs = append(errs, prefixLines(path+".", err))
		}
		conn, ok := cas[p.CAConnection]
		if !ok {
			errs = append(errs, fmt.Errorf("%s.caConnection: %q is not a CA connection", path, p.CAConnection))
			continue
		}
		if conn.Connector == nil {
			continue // the connection failed to build; that is its own problem, reported with it
		}
		issuer, ok := conn.Connector.(ca.PublicKeyIssuer)
		if !ok {
			errs = append(errs, fmt.Errorf("%s.caConnection: CA connection %q (type %s) cannot issue for a public key without a CSR signed by that key, which Verified Access enrollment needs; use a connector that can (the built-in local CA)",
				path, p.CAConnection, conn.Type))
			continue
		}
		if prof == nil {
			continue
		}
		prof.CA = issuer
		prof.CATimeout = conn.Timeout
		out[name] = prof
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
