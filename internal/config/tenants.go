package config

import (
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Tenant is one customer, or one group of customers, that a deployment serves through a pipeline
// of its own: its own credentials and API client with its own rate limit, its own Pub/Sub
// subscription, profiles and CA connections, its own engine and its own part of the journal
// (docs/tenants.md). The single-customer form of the file (top-level customers, google, pubsub,
// profiles, caConnections) is one implicit tenant, named ImplicitTenant.
type Tenant struct {
	// Name labels the tenant's metrics (tenant="..."), readiness checks, logs, audit events and
	// journal partition: lower-case letters, digits and _, starting with a letter.
	Name string `mapstructure:"name"`
	// Customers are the customer ids the tenant serves; each belongs to one tenant only.
	Customers []string `mapstructure:"customers"`

	PubSub PubSub `mapstructure:"pubsub"`
	Google Google `mapstructure:"google"`

	// Profiles are keyed by profileAdapterConfigReference, as at the top level.
	Profiles map[string]Profile `mapstructure:"profiles"`
	// CAConnections are keyed by caConnectionAdapterConfigReference, as at the top level.
	CAConnections map[string]CAConnection `mapstructure:"caConnections"`

	// Path is the YAML path of the tenant ("tenants[1]"), empty for the implicit tenant, whose
	// keys are at the top level: what problems about the tenant's keys are prefixed with.
	Path string `mapstructure:"-"`
	// Implicit marks the tenant of the single-customer form: its metrics carry no tenant label
	// and its journal is journal.path (or the default table) itself, as before tenants existed.
	Implicit bool `mapstructure:"-"`
}

// ImplicitTenant names the tenant of the single-customer form in logs, /readyz details, the
// status page and `inspect`. Its metrics, readiness check names, journal and audit events are
// those of an adapter without tenants.
const ImplicitTenant = "default"

// keyTenants is the YAML key of the tenants list.
const keyTenants = "tenants"

// MaxTenantNameLength keeps a tenant's PostgreSQL journal table (certprov_journal_<name>) within
// the 48 characters the journal allows.
const MaxTenantNameLength = 31

var tenantNamePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// HasTenants reports whether the file uses the tenants form.
func (c *Config) HasTenants() bool { return len(c.Tenants) > 0 }

// AllTenants lists the pipelines the configuration asks for: the tenants, each with its Path,
// or the implicit tenant made of the top-level keys.
func (c *Config) AllTenants() []Tenant {
	if !c.HasTenants() {
		return []Tenant{c.Implicit()}
	}
	out := make([]Tenant, len(c.Tenants))
	for i, t := range c.Tenants {
		t.Path, t.Implicit = indexPath(keyTenants, i), false
		out[i] = t
	}
	return out
}

// Implicit is the tenant of the single-customer form: the top-level customers, google, pubsub,
// profiles and caConnections.
func (c *Config) Implicit() Tenant {
	return Tenant{
		Name: ImplicitTenant, Customers: c.Customers, PubSub: c.PubSub, Google: c.Google,
		Profiles: c.Profiles, CAConnections: c.CAConnections, Implicit: true,
	}
}

// Single is the configuration as the single-customer form of tenant t: t's customers, pubsub,
// google, profiles and CA connections at the top level, no tenants, the rest shared; for tools
// that check one tenant at a time as they check a single-customer file (doctor).
func (c *Config) Single(t Tenant) *Config {
	s := *c
	s.Tenants = nil
	s.Customers, s.PubSub, s.Google, s.Profiles, s.CAConnections = t.Customers, t.PubSub, t.Google, t.Profiles, t.CAConnections
	s.Journal = c.TenantJournal(t)
	return &s
}

// key is the YAML path of key inside the tenant.
func (t Tenant) key(key string) string { return joinPath(t.Path, key) }

// Key is the YAML path of key inside the tenant: "tenants[1].pubsub.subscription", or
// "pubsub.subscription" for the implicit tenant.
func (t Tenant) Key(key string) string { return t.key(key) }

// TenantJournal is the part of the journal that belongs to tenant t: journal itself for the
// implicit tenant; for a named one, with the SQLite journal, a file of its own beside
// journal.path (journal.db becomes journal.<name>.db), and with PostgreSQL a table of its own in
// the same database (Journal.Tenant, which the journal opener turns into the table name). Each
// tenant's engine leases from its part alone, so that one tenant's backlog never stands before
// another's records.
func (c *Config) TenantJournal(t Tenant) Journal {
	j := c.Journal
	if t.Implicit {
		return j
	}
	j.Tenant = t.Name
	if j.Type == JournalSQLite && j.Path != "" {
		ext := filepath.Ext(j.Path)
		j.Path = strings.TrimSuffix(j.Path, ext) + "." + t.Name + ext
	}
	return j
}

// validateTenants checks the tenants list, and that the single-customer keys are not set beside
// it; each tenant's own keys are checked like the top-level ones, under its path.
func (c *Config) validateTenants(ps *problems) {
	def := Defaults()
	single := []struct {
		key string
		set bool
	}{
		{"customers", len(c.Customers) > 0},
		{"pubsub", c.PubSub != def.PubSub},
		{"google", c.Google != def.Google},
		{keyProfiles, len(c.Profiles) > 0},
		{keyCAConnections, len(c.CAConnections) > 0},
	}
	for _, s := range single {
		if s.set {
			ps.add(s.key, "must not be set with tenants (or by its environment variables): with tenants every tenant has its own %s; move it into tenants[].%s", s.key, s.key)
		}
	}
	if c.VerifiedAccess.Enabled {
		ps.add(joinPath(keyVerifiedAccess, "enabled"), "Verified Access is served for the single-customer form only, not with tenants (docs/tenants.md)")
	}
	names := map[string]int{}
	customers := map[string]string{}
	subscriptions := map[string]string{}
	for i, t := range c.AllTenants() {
		switch {
		case t.Name == "":
			ps.add(t.key("name"), "must not be empty: it labels the tenant's metrics and names its journal")
		case len(t.Name) > MaxTenantNameLength:
			ps.add(t.key("name"), "must be at most %d characters", MaxTenantNameLength)
		case !tenantNamePattern.MatchString(t.Name):
			ps.add(t.key("name"), "%q may contain only lower-case letters, digits and _, starting with a letter", t.Name)
		default:
			if j, dup := names[t.Name]; dup {
				ps.add(t.key("name"), "%q is the name of tenants[%d] too", t.Name, j)
			}
			names[t.Name] = i
		}
		for j, id := range t.Customers {
			path := indexPath(t.key("customers"), j)
			if id == CustomerMyCustomer {
				ps.add(path, "my_customer cannot be told apart from another tenant's customers: name the customer id (Admin console > Account settings)")
				continue
			}
			if other, dup := customers[id]; dup && other != t.Path {
				ps.add(path, "%q is served by %s too: a customer belongs to one tenant", id, other)
			}
			if _, dup := customers[id]; !dup {
				customers[id] = t.Path
			}
		}
		if sub := t.subscriptionName(); sub != "" {
			if other, dup := subscriptions[sub]; dup {
				ps.add(t.key("pubsub.subscription"), "%s is the subscription of %s too: two receivers on one subscription each get a share of its messages, and drop the other tenant's", sub, other)
			} else {
				subscriptions[sub] = t.Path
			}
		}
		c.validateTenant(t, ps)
	}
}

// subscriptionName is the tenant's subscription as a full resource name, for comparing tenants;
// empty while it is incomplete (reported elsewhere).
func (t Tenant) subscriptionName() string {
	s := strings.TrimSpace(t.PubSub.Subscription)
	if s == "" || strings.Contains(s, "/") {
		return s
	}
	if strings.TrimSpace(t.PubSub.Project) == "" {
		return ""
	}
	return "projects/" + t.PubSub.Project + "/subscriptions/" + s
}

// validateTenant checks what one tenant says: its customers, Pub/Sub, Google API client,
// profiles and CA connections, with every problem under the tenant's path.
func (c *Config) validateTenant(t Tenant, ps *problems) {
	t.validateCustomers(ps)
	t.validatePubSub(ps)
	t.validateGoogle(ps)
	t.validateDirectory(ps)
	if len(t.Profiles) == 0 {
		ps.add(t.key(keyProfiles), "at least one profile is required")
	}
	for _, name := range slices.Sorted(maps.Keys(t.Profiles)) {
		p := t.Profiles[name]
		p.validate(joinPath(t.key(keyProfiles), name), ps)
		t.validateRevokeSuperseded(joinPath(joinPath(t.key(keyProfiles), name), "revokeSuperseded"), p.RevokeSuperseded, ps)
	}
	if len(t.CAConnections) == 0 {
		ps.add(t.key(keyCAConnections), "at least one CA connection is required")
	}
	for _, name := range slices.Sorted(maps.Keys(t.CAConnections)) {
		path := joinPath(t.key(keyCAConnections), name)
		conn := t.CAConnections[name]
		if strings.TrimSpace(conn.Type) == "" {
			ps.add(joinPath(path, "type"), "must not be empty: name the connector type")
		}
		positive(ps, joinPath(path, "timeout"), conn.Timeout)
	}
}
