package config

import (
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/certprov/certprov-adapter/internal/suggest"
)

// Defaults of google.directory (docs/directory.md explains each).
const (
	// DefaultDirectoryCacheTTL: devices and users are annotated rarely, and a certificate
	// renders them once a year; ten minutes spares the quota when a fleet renews at once.
	DefaultDirectoryCacheTTL = 10 * time.Minute
	// DefaultDirectoryNegativeCacheTTL is short: an admin adding the device now should not wait.
	DefaultDirectoryNegativeCacheTTL = time.Minute
	DefaultDirectoryCacheSize        = 10_000
	DefaultDirectoryRateLimit        = 10.0 // the Directory's quota is about 40/s per project
	DefaultDirectoryRateBurst        = 20
	// MaxDirectoryCacheSize bounds the memory the cache may take (a record is under 1 KiB).
	MaxDirectoryCacheSize = 1_000_000
)

// Directory configures the Admin SDK Directory lookups that profile templates
// ({{.Device.Directory.AssetID}}) and routes use. It authenticates with google.credentials and
// the read-only Directory scopes, impersonating Subject; google.endpoint, when set (an
// emulator), serves it too.
type Directory struct {
	// Enabled allows profiles to use Directory data; a profile that uses none never calls it.
	Enabled bool `mapstructure:"enabled"`
	// Subject is the administrator the service account acts as through domain-wide delegation.
	Subject string `mapstructure:"subject"`
	// CacheTTL is how long a record read is used; NegativeCacheTTL how long "no such device or
	// user" is; CacheSize how many of both are kept, the least recently used dropped first.
	CacheTTL         time.Duration `mapstructure:"cacheTTL"`
	NegativeCacheTTL time.Duration `mapstructure:"negativeCacheTTL"`
	CacheSize        int           `mapstructure:"cacheSize"`
	// RateLimit bounds Directory calls per second across this replica: its quota is not the
	// Certificate Provisioning API's.
	RateLimit RateLimit `mapstructure:"rateLimit"`
}

// DefaultDirectory is google.directory's defaults: off.
func DefaultDirectory() Directory {
	return Directory{CacheTTL: DefaultDirectoryCacheTTL, NegativeCacheTTL: DefaultDirectoryNegativeCacheTTL,
		CacheSize: DefaultDirectoryCacheSize, RateLimit: RateLimit{RequestsPerSecond: DefaultDirectoryRateLimit, Burst: DefaultDirectoryRateBurst}}
}

// Route picks a CA connection, validity or CA template name for the processes whose org unit
// (the device's for a device process, the user's for a user process) is OrgUnit or below it.
// The routes of a profile are tried in order and the first that matches wins; a process no
// route matches gets the profile's own settings and its process's CA connection.
type Route struct {
	// OrgUnit is an org unit path, /Sales: it matches /Sales and /Sales/EMEA, not /SalesOps,
	// ignoring case. / matches every org unit.
	OrgUnit string `mapstructure:"orgUnit"`
	// CAConnection, when set, replaces the process's caConnectionAdapterConfigReference.
	CAConnection string `mapstructure:"caConnection"`
	// Validity and TemplateName, when set, replace the profile's.
	Validity     time.Duration `mapstructure:"validity"`
	TemplateName string        `mapstructure:"templateName"`
}

// OrgUnitMatches reports whether the org unit path ou is route's org unit or below it. It is the
// one definition of a match: the engine routes with it and Warnings finds unreachable routes.
func OrgUnitMatches(route, ou string) bool {
	route = strings.TrimSuffix(route, "/")
	if route == "" {
		return true // "/": the root, every org unit
	}
	if len(ou) < len(route) || !strings.EqualFold(ou[:len(route)], route) {
		return false
	}
	return len(ou) == len(route) || ou[len(route)] == '/'
}

const keyDirectory = "google.directory"

func (c *Config) validateDirectory(ps *problems) {
	d := c.Google.Directory
	cred := c.Google.Credentials
	if d.Subject != "" {
		switch {
		case !strings.Contains(d.Subject, "@"):
			ps.add(joinPath(keyDirectory, "subject"), "%q must be the e-mail address of the administrator to act as", d.Subject)
		case cred.Type == CredentialsNone:
			ps.add(joinPath(keyDirectory, "subject"), "needs credentials to impersonate with (google.credentials.type is none)")
		case cred.Type == CredentialsSelfSignedJWT:
			ps.add(joinPath(keyDirectory, "subject"), "cannot be impersonated with a self-signed JWT: use google.credentials.type serviceAccountKey")
		}
	}
	if positive(ps, joinPath(keyDirectory, "cacheTTL"), d.CacheTTL) &&
		positive(ps, joinPath(keyDirectory, "negativeCacheTTL"), d.NegativeCacheTTL) && d.NegativeCacheTTL > d.CacheTTL {
		ps.add(joinPath(keyDirectory, "negativeCacheTTL"), "must not be longer than google.directory.cacheTTL (%s)", d.CacheTTL)
	}
	if d.CacheSize < 1 || d.CacheSize > MaxDirectoryCacheSize {
		ps.add(joinPath(keyDirectory, "cacheSize"), "must be between 1 and %d, got %d", MaxDirectoryCacheSize, d.CacheSize)
	}
	if r := d.RateLimit.RequestsPerSecond; r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		ps.add(joinPath(keyDirectory, "rateLimit.requestsPerSecond"), "must be a positive number")
	}
	if d.RateLimit.Burst < 1 {
		ps.add(joinPath(keyDirectory, "rateLimit.burst"), "must be at least 1")
	}

	conns := slices.Sorted(maps.Keys(c.CAConnections))
	for _, name := range slices.Sorted(maps.Keys(c.Profiles)) {
		routes := c.Profiles[name].Routes
		path := joinPath(joinPath(keyProfiles, name), "routes")
		if len(routes) > 0 && !d.Enabled {
			ps.add(path, "routes read the org unit from the Directory: set google.directory.enabled (docs/directory.md)")
		}
		for i, r := range routes {
			rp := indexPath(path, i)
			switch ou := r.OrgUnit; {
			case ou == "":
				ps.add(joinPath(rp, "orgUnit"), "must not be empty: an org unit path such as /Sales, or / for every org unit")
			case !strings.HasPrefix(ou, "/") || strings.Contains(ou, "//") || (len(ou) > 1 && strings.HasSuffix(ou, "/")):
				ps.add(joinPath(rp, "orgUnit"), "%q must be an org unit path as the Admin console shows it: /Sales/EMEA", ou)
			}
			if r.CAConnection != "" && c.CAConnections != nil {
				if _, ok := c.CAConnections[r.CAConnection]; !ok {
					msg := "no caConnections entry is named %q"
					if s := suggest.Closest(r.CAConnection, conns); s != "" {
						msg += " (did you mean " + s + "?)"
					}
					ps.add(joinPath(rp, "caConnection"), msg, r.CAConnection)
				}
			}
			if r.Validity < 0 || r.Validity > MaxValidity {
				ps.add(joinPath(rp, "validity"), "must be between 0 (the profile's) and ten years (%s), got %s", MaxValidity, r.Validity)
			}
			if r.CAConnection == "" && r.Validity == 0 && r.TemplateName == "" {
				ps.add(rp, "changes nothing: set caConnection, validity or templateName")
			}
		}
	}
}

// warnRoutes warns of routes that can never match: an earlier route of the profile matches every
// org unit they do.
func (c *Config) warnRoutes(ps *problems) {
	if !c.Google.Directory.Enabled {
		return
	}
	if c.Google.Directory.Subject == "" && c.Google.Credentials.Type != CredentialsNone {
		ps.add(joinPath(keyDirectory, "subject"), "is empty: the service account reads the Directory as itself, "+
			"which works only if it was given an administrator role; otherwise name the administrator it acts as (domain-wide delegation)")
	}
	for _, name := range slices.Sorted(maps.Keys(c.Profiles)) {
		routes := c.Profiles[name].Routes
		for j, later := range routes {
			for i := range j {
				if OrgUnitMatches(routes[i].OrgUnit, later.OrgUnit) {
					ps.add(indexPath(joinPath(joinPath(keyProfiles, name), "routes"), j),
						"never matches: routes[%d] (orgUnit %s) comes first and matches every org unit under %s; put the more specific route first",
						i, routes[i].OrgUnit, later.OrgUnit)
					break
				}
			}
		}
	}
}
