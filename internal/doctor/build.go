package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
)

// RunTenants runs the checks of every tenant of cfg (the single-customer form is one), each
// against the tenant's own credentials, subscription and CA connections (Config.Single), and
// joins the reports. A named tenant's checks carry its name and are named by their YAML path
// under it (tenants[1].pubsub.subscription). timeout bounds one check.
func RunTenants(ctx context.Context, cfg *config.Config, log *zap.Logger, timeout time.Duration) Report {
	out := Report{OK: true, Checks: []Check{}}
	for _, t := range cfg.AllTenants() {
		o, closeClients := FromConfig(ctx, cfg.Single(t), log)
		o.Timeout = timeout
		r := Run(ctx, o)
		closeClients()
		for _, c := range r.Checks {
			if !t.Implicit {
				c.Tenant = t.Name
				if strings.Contains(c.Name, " ") { // not a key: "provisioning API customers/C0abc"
					c.Name = t.Path + " " + c.Name
				} else {
					c.Name = t.Key(c.Name)
				}
			}
			out.Checks = append(out.Checks, c)
		}
		out.OK = out.OK && r.OK
	}
	return out
}

// FromConfig builds the clients the checks use from cfg, the way the adapter builds them: the
// token source, the Certificate Provisioning API client (one attempt per call), the Pub/Sub
// client and every CA connection. What cannot be built is recorded in the Options for Run to
// report, not returned. close releases the clients.
func FromConfig(ctx context.Context, cfg *config.Config, log *zap.Logger) (o Options, close func()) {
	if log == nil {
		log = zap.NewNop()
	}
	o = Options{Config: cfg}
	var closers []func() error

	cred := cfg.Google.Credentials
	var httpClient *http.Client // nil: chromeapi authenticates by itself (not at all for none)
	if cred.Type != config.CredentialsNone {
		ts, err := chromeapi.TokenSource(ctx, adapter.GoogleCredentials(cred))
		if err != nil {
			o.TokenErr = err
		} else {
			o.Token = oauth2.ReuseTokenSource(nil, ts)
			httpClient = oauth2.NewClient(ctx, o.Token)
		}
		o.Identity = KeyFileIdentity(cred)
	}
	if o.TokenErr == nil {
		opts := adapter.APIOptions(cfg, log.Named("chromeapi"), nil)
		opts.Attempts, opts.HTTPClient = 1, httpClient
		api, err := chromeapi.New(ctx, opts)
		if err != nil {
			o.APIErr = err
		} else {
			o.API = api
		}
	}

	if cfg.Google.Directory.Enabled {
		if dir, _, err := adapter.Directory(ctx, cfg, log.Named("directory"), nil); err != nil {
			o.DirectoryErr = err
		} else {
			o.Directory = dir
		}
	}

	ps, err := adapter.PubSubClient(ctx, cfg, nil)
	if err != nil {
		o.PubSubErr = err
	} else {
		o.Subscriptions = ps.SubscriptionAdminClient
		closers = append(closers, ps.Close)
	}

	conns, err := adapter.Connectors(cfg, log)
	closers = append(closers, func() error { return adapter.CloseConnectors(conns) })
	problems := config.ProblemsIn(err)
	o.CAs = make(map[string]CAConnection, len(cfg.CAConnections))
	for name, c := range cfg.CAConnections {
		cc := CAConnection{Type: c.Type, Timeout: c.Timeout}
		cc.URL, _ = c.Settings["url"].(string)
		if built := conns[name]; built != nil {
			cc.Connector = built.Connector
		} else {
			cc.BuildErr = connectionProblems(name, problems)
		}
		o.CAs[name] = cc
	}
	return o, func() {
		for _, c := range closers {
			_ = c()
		}
	}
}

// connectionProblems joins the problems at caConnections.name.
func connectionProblems(name string, ps []config.Problem) error {
	prefix := "caConnections." + name
	var errs []error
	for _, p := range ps {
		if p.Path == prefix || strings.HasPrefix(p.Path, prefix+".") {
			errs = append(errs, errors.New(p.String()))
		}
	}
	if len(errs) == 0 {
		return errors.New(prefix + ": cannot be built")
	}
	return errors.Join(errs...)
}

// KeyFileIdentity reads who the service account is from its key file (cred.File is resolved by
// config.Load); a key file that cannot be
// read leaves the identity unknown (the token check reports why).
func KeyFileIdentity(cred config.Credentials) Identity {
	if !slices.Contains([]string{config.CredentialsServiceAccountKey, config.CredentialsSelfSignedJWT}, cred.Type) {
		return Identity{}
	}
	b, err := os.ReadFile(cred.File)
	if err != nil {
		return Identity{}
	}
	var key struct {
		Email    string `json:"client_email"`
		ClientID string `json:"client_id"`
	}
	if json.Unmarshal(b, &key) != nil {
		return Identity{}
	}
	return Identity{Email: key.Email, ClientID: key.ClientID}
}
