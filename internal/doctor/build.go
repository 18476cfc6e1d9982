package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/certprov/certprov-adapter/internal/adapter"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
)

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
