package adapter

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/buildinfo"
	"github.com/certprov/certprov-adapter/internal/chromeapi"
	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/googleauth"
)

// credentialTypes maps google.credentials.type to the credentials googleauth builds; config
// validates that the type is one of these.
var credentialTypes = map[string]googleauth.Type{
	"":                                  googleauth.ADC,
	config.CredentialsADC:               googleauth.ADC,
	config.CredentialsServiceAccountKey: googleauth.ServiceAccountKey,
	config.CredentialsSelfSignedJWT:     googleauth.SelfSignedJWT,
	config.CredentialsNone:              googleauth.None,
}

// GoogleCredentials is google.credentials as the Google API clients take it. config.Load has
// resolved the key file against the configuration's directory already.
func GoogleCredentials(c config.Credentials) googleauth.Credentials {
	t, ok := credentialTypes[c.Type]
	if !ok {
		t = googleauth.Type(c.Type) // refused by googleauth.TokenSource, with the type named
	}
	return googleauth.Credentials{Type: t, File: c.File, Subject: c.Subject}
}

// APIOptions are the Certificate Provisioning API client's options from the google section of
// cfg: the client the adapter runs with, and the one doctor checks. TenantAPIOptions are those of
// a named tenant.
func APIOptions(cfg *config.Config, log *zap.Logger, reg prometheus.Registerer) chromeapi.Options {
	return TenantAPIOptions(cfg.Implicit(), log, reg)
}

// TenantAPIOptions are the Certificate Provisioning API client's options from tenant t's google
// section.
func TenantAPIOptions(t config.Tenant, log *zap.Logger, reg prometheus.Registerer) chromeapi.Options {
	g := t.Google
	return chromeapi.Options{
		Endpoint:               g.Endpoint,
		Credentials:            GoogleCredentials(g.Credentials),
		UserAgent:              UserAgent(),
		InsecureAllowCleartext: g.InsecureAllowCleartext,
		Cleartext:              config.EndpointRule(config.SectionGoogle),
		RateLimit:              APIRateLimit(g.RateLimit),
		RequestTimeout:         g.RequestTimeout,
		Logger:                 log,
		Registerer:             reg,
	}
}

// UserAgent is the adapter's product token in every request to Google: its name and version.
func UserAgent() string { return googleauth.DefaultUserAgent + "/" + buildinfo.Get().Version }

// APIRateLimit is google.rateLimit as the API client takes it.
func APIRateLimit(r config.RateLimit) chromeapi.RateLimit {
	return chromeapi.RateLimit{RequestsPerSecond: r.RequestsPerSecond, Burst: r.Burst}
}
