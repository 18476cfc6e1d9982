package adapter

import (
	"context"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certprov/certprov-adapter/internal/config"
	"github.com/certprov/certprov-adapter/internal/directory"
	"github.com/certprov/certprov-adapter/internal/engine"
)

// DirectoryOptions are the Directory client's options from cfg: google.directory, with
// google.credentials acting as google.directory.subject, and google.endpoint (an emulator
// serves the Directory too). TenantDirectoryOptions are a named tenant's.
func DirectoryOptions(cfg *config.Config, log *zap.Logger, reg prometheus.Registerer) directory.Options {
	return TenantDirectoryOptions(cfg.Implicit(), log, reg)
}

// TenantDirectoryOptions are the Directory client's options from tenant t's google section.
func TenantDirectoryOptions(t config.Tenant, log *zap.Logger, reg prometheus.Registerer) directory.Options {
	g, d := t.Google, t.Google.Directory
	creds := GoogleCredentials(g.Credentials)
	creds.Subject = d.Subject // the Directory's own: the provisioning API is not called as an admin
	return directory.Options{
		Endpoint:               g.Endpoint,
		Credentials:            creds,
		UserAgent:              UserAgent(),
		InsecureAllowCleartext: g.InsecureAllowCleartext,
		Cleartext:              config.EndpointRule(config.SectionGoogle),
		RateLimit:              directory.RateLimit{RequestsPerSecond: d.RateLimit.RequestsPerSecond, Burst: d.RateLimit.Burst},
		RequestTimeout:         g.RequestTimeout,
		CacheTTL:               d.CacheTTL,
		NegativeTTL:            d.NegativeCacheTTL,
		CacheSize:              d.CacheSize,
		Logger:                 log,
		Registerer:             reg,
	}
}

// Directory builds the Directory client when google.directory.enabled, and nil (the engine's
// "no Directory") otherwise.
func Directory(ctx context.Context, cfg *config.Config, log *zap.Logger, reg prometheus.Registerer) (engine.Directory, *directory.Client, error) {
	return TenantDirectory(ctx, cfg.Implicit(), log, reg)
}

// TenantDirectory is Directory for tenant t: its own client, credentials, cache and rate limit.
func TenantDirectory(ctx context.Context, t config.Tenant, log *zap.Logger, reg prometheus.Registerer) (engine.Directory, *directory.Client, error) {
	if !t.Google.Directory.Enabled {
		return nil, nil, nil
	}
	c, err := directory.New(ctx, TenantDirectoryOptions(t, log, reg))
	if err != nil {
		return nil, nil, err
	}
	return c, c, nil
}

// needsNoDirectory refuses, for a reload of an adapter started without the Directory, profiles
// that would need it: google.directory takes a restart.
func needsNoDirectory(t config.Tenant, profiles map[string]*engine.Profile) error {
	var ps []config.Problem
	for _, name := range slices.Sorted(maps.Keys(profiles)) {
		if p := profiles[name]; p.Template.Needs().Any() || len(p.Routes) > 0 {
			ps = append(ps, config.Problem{Path: t.Key("profiles." + name),
				Message: "uses Directory data, but the adapter was started without google.directory.enabled, which takes a restart"})
		}
	}
	return problemsError(ps)
}
