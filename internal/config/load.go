package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/certprov/certprov-adapter/internal/audit"
	"github.com/certprov/certprov-adapter/internal/relpath"
	"github.com/certprov/certprov-adapter/internal/suggest"
)

// EnvPrefix starts the name of every environment variable that overrides a configuration key.
const EnvPrefix = "CERTPROV"

// EmulatorHostEnv is the variable the Pub/Sub client libraries honour to reach the emulator; the
// adapter honours it too, so that the usual emulator workflow needs no config change.
const EmulatorHostEnv = "PUBSUB_EMULATOR_HOST"

// The two top-level maps whose keys an administrator typed in the Google Admin console. They are
// decoded separately because viper lowercases keys and these must keep their exact case.
const (
	keyProfiles      = "profiles"
	keyCAConnections = "caConnections"
)

// The Verified Access section and its map of enrollment profiles, whose names keep their case
// like the two maps above. Signal names inside a profile's policy are camelCase too, so the
// policy's signals map is read from the YAML tree as well.
const (
	keyVerifiedAccess = "verifiedAccess"
	keyVAProfiles     = "profiles"
	keyVAPolicy       = "policy"
	keyVASignals      = "signals"
)

// extensionPrefix starts top-level keys that the adapter ignores, as in Compose files: a place
// for YAML anchors shared by several profiles ("x-profile-defaults: &common").
const extensionPrefix = "x-"

// Load reads the YAML file at path, applies environment overrides and defaults, resolves relative
// paths against the file's directory and validates the result.
//
// It returns a *ProblemsError listing every problem when the content is wrong (unknown keys, bad
// values, failed validation), and a plain wrapped error when the file cannot be read.
func Load(path string) (*Config, error) { return LoadWith(path, Options{}) }

// Options changes what LoadWith and ParseWith check.
type Options struct {
	// Offline validates with ValidateOffline: the files the configuration names are not looked
	// at (CheckFiles is not run; the configuration file itself is read, of course).
	Offline bool
}

// LoadWith is Load with options.
func LoadWith(path string, o Options) (*Config, error) {
	if path == "" {
		return nil, errors.New("config: no file given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseWith(data, filepath.Dir(abs), o)
}

// Parse is Load for a document already in memory; baseDir plays the role of the file's directory
// (relative paths resolve against it, and an empty one means the working directory).
func Parse(data []byte, baseDir string) (*Config, error) { return ParseWith(data, baseDir, Options{}) }

// ParseWith is Parse with options.
func ParseWith(data []byte, baseDir string, o Options) (*Config, error) {
	var ps problems
	root := parseYAML(data, &ps)
	if root == nil {
		return nil, &ProblemsError{Problems: ps}
	}
	for k := range root {
		if strings.HasPrefix(k, extensionPrefix) {
			delete(root, k)
		}
	}
	checkKeys(root, reflect.TypeFor[Config](), "", &ps)

	cfg := &Config{BaseDir: baseDir}
	decodeTop(root, cfg, &ps)
	decodeEntries(root, cfg, &ps)

	// PUBSUB_EMULATOR_HOST has the lowest precedence: an explicit endpoint, from the file or from
	// CERTPROV_PUBSUB_ENDPOINT, wins.
	if host := os.Getenv(EmulatorHostEnv); host != "" && cfg.PubSub.Endpoint == "" {
		cfg.PubSub.Endpoint = host
		cfg.PubSub.Insecure = true
	}
	cfg.Google.Credentials.File = cfg.ResolvePath(cfg.Google.Credentials.File)
	if cfg.Journal.Type == JournalSQLite && cfg.Journal.Path == "" {
		cfg.Journal.Path = DefaultJournalPath
	}
	cfg.Journal.Path = cfg.ResolvePath(cfg.Journal.Path)
	if cfg.Audit.Path != audit.Stdout {
		cfg.Audit.Path = cfg.ResolvePath(cfg.Audit.Path)
	}
	cfg.VerifiedAccess.TLS.CertFile = cfg.ResolvePath(cfg.VerifiedAccess.TLS.CertFile)
	cfg.VerifiedAccess.TLS.KeyFile = cfg.ResolvePath(cfg.VerifiedAccess.TLS.KeyFile)
	for name, p := range cfg.VerifiedAccess.Profiles {
		if p.APIVersion == "" {
			p.APIVersion = cfg.VerifiedAccess.APIVersion
			cfg.VerifiedAccess.Profiles[name] = p
		}
	}

	found := cfg.ValidateOffline()
	if !o.Offline {
		found = append(found, cfg.CheckFiles()...)
	}
	for _, p := range found {
		// A value that failed to decode was left at its default; do not report it twice.
		if !ps.has(p.Path) {
			ps = append(ps, p)
		}
	}
	if len(ps) > 0 {
		return nil, &ProblemsError{Problems: ps}
	}
	return cfg, nil
}

// ResolvePath resolves a path of the configuration against the config file's directory
// (relpath.Resolve).
func (c *Config) ResolvePath(p string) string { return relpath.Resolve(c.BaseDir, p) }

// parseYAML decodes the document into a tree of map[string]any, []any and scalars with the keys
// exactly as written. It returns nil (and records why) when there is no usable mapping.
func parseYAML(data []byte, ps *problems) map[string]any {
	// Decoding into a value first reports syntax errors and duplicate keys, which decoding
	// into a yaml.Node does not.
	var check any
	if err := yaml.Unmarshal(data, &check); err != nil {
		ps.add("", "invalid YAML: %v", err)
		return nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		ps.add("", "invalid YAML: %v", err)
		return nil
	}
	tree, err := nodeValue(&doc)
	if err != nil {
		ps.add("", "invalid YAML: %v", err)
		return nil
	}
	switch m := normalize(tree).(type) {
	case nil:
		return map[string]any{}
	case map[string]any:
		return m
	default:
		ps.add("", "the configuration must be a YAML mapping, not %s", describe(m))
		return nil
	}
}

// nodeValue converts a YAML node to plain values. It differs from decoding into an `any` in one
// way: an unquoted date stays the string it was written as, because connectors read their
// settings as strings and the adapter has no date keys of its own.
func nodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case 0:
		return nil, nil
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.ScalarNode:
		if n.Tag == "!!timestamp" {
			return n.Value, nil
		}
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := nodeValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		return mappingValue(n)
	default:
		return nil, fmt.Errorf("line %d: unexpected YAML node kind %d", n.Line, n.Kind)
	}
}

// mappingValue converts a mapping, honouring merge keys ("<<: *defaults"): keys written in the
// mapping itself win over merged ones, and earlier merged mappings over later ones.
func mappingValue(n *yaml.Node) (map[string]any, error) {
	out := map[string]any{}
	var merged []map[string]any
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			val, err := nodeValue(v)
			if err != nil {
				return nil, err
			}
			switch x := val.(type) {
			case map[string]any:
				merged = append(merged, x)
			case []any:
				for _, e := range x {
					m, ok := e.(map[string]any)
					if !ok {
						return nil, fmt.Errorf("line %d: a merge key needs mappings", v.Line)
					}
					merged = append(merged, m)
				}
			default:
				return nil, fmt.Errorf("line %d: a merge key needs a mapping", v.Line)
			}
			continue
		}
		key, err := nodeValue(k)
		if err != nil {
			return nil, err
		}
		val, err := nodeValue(v)
		if err != nil {
			return nil, err
		}
		out[fmt.Sprint(key)] = val
	}
	for _, m := range merged {
		for k, v := range m {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
	return out, nil
}

// normalize turns what the YAML decoder produced into string-keyed maps throughout (a key such as
// `1:` becomes "1"), copying as it goes.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	default:
		return v
	}
}

// deepCopy copies a normalized tree. viper lowercases the keys of maps handed to MergeConfigMap
// in place, so it must never see the case-preserving tree itself.
func deepCopy(v any) any { return normalize(v) }

// field describes one struct field as the YAML sees it.
type field struct {
	name   string // YAML key
	remain bool   // collects the keys the struct does not know
	index  int
	typ    reflect.Type
}

// fieldsOf lists the fields of struct type t that have a YAML key or collect the remaining keys.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		remain := strings.Contains(","+opts+",", ",remain,")
		if name == "" && !remain {
			name = f.Name
		}
		out = append(out, field{name: name, remain: remain, index: i, typ: f.Type})
	}
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// isSection reports whether t is a nested section (a struct) rather than a value.
func isSection(t reflect.Type) bool { return t.Kind() == reflect.Struct }

// checkKeys reports every key of raw that the schema type t does not know, and every section
// that is not a mapping, with its full YAML path. Values themselves are checked when decoded.
func checkKeys(raw any, t reflect.Type, path string, ps *problems) {
	switch {
	case isSection(t):
		m, ok := raw.(map[string]any)
		if !ok {
			if raw != nil {
				ps.add(path, "must be a mapping of keys, not %s", describe(raw))
			}
			return
		}
		fields := fieldsOf(t)
		known := map[string]field{}
		remain := false
		for _, f := range fields {
			if f.remain {
				remain = true
				continue
			}
			known[f.name] = f
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			p := joinPath(path, k)
			if f, ok := known[k]; ok {
				checkKeys(m[k], f.typ, p, ps)
				continue
			}
			if remain {
				// The connector's own keys; but "Type" is surely a typo for "type".
				for name := range known {
					if strings.EqualFold(name, k) {
						ps.add(p, "unknown key (did you mean %q?)", name)
					}
				}
				continue
			}
			if s := suggest.Closest(k, slices.Sorted(maps.Keys(known))); s != "" {
				ps.add(p, "unknown key (did you mean %q?)", s)
			} else {
				ps.add(p, "unknown key")
			}
		}
	case t.Kind() == reflect.Slice && isSection(t.Elem()):
		// A list of sections (profiles.<name>.routes): each entry's keys are checked too.
		if items, ok := raw.([]any); ok {
			for i, item := range items {
				checkKeys(item, t.Elem(), indexPath(path, i), ps)
			}
		}
	case t.Kind() == reflect.Map:
		m, ok := raw.(map[string]any)
		if !ok {
			if raw != nil {
				ps.add(path, "must be a mapping of names to entries, not %s", describe(raw))
			}
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if strings.TrimSpace(k) == "" {
				ps.add(path, "an entry has an empty name")
				continue
			}
			checkKeys(m[k], t.Elem(), joinPath(path, k), ps)
		}
	}
}

// decodeTop decodes everything but the two maps through viper: defaults, then the file, then the
// environment, each overriding the one before.
func decodeTop(root map[string]any, cfg *Config, ps *problems) {
	fixed := deepCopy(root).(map[string]any)
	delete(fixed, keyProfiles)
	delete(fixed, keyCAConnections)
	if va, ok := fixed[keyVerifiedAccess].(map[string]any); ok {
		delete(va, keyVAProfiles)
	}

	v := viper.New()
	setDefaults(v, reflect.ValueOf(Defaults()), "")
	if err := v.MergeConfigMap(fixed); err != nil {
		ps.add("", "merge configuration: %v", err)
		return
	}
	env := map[string]string{}
	for _, key := range leafKeys(reflect.TypeFor[Config](), "") {
		name := envName(EnvPrefix, key)
		env[key] = name
		if err := v.BindEnv(key, name); err != nil {
			ps.add(key, "bind %s: %v", name, err)
		}
	}
	decodeStruct(v, env, reflect.ValueOf(cfg).Elem(), "", "", ps)
}

// binding ties one key of a profile or CA connection to its environment variable.
type binding struct {
	key  string // relative to the entry, as viper sees it
	path string // full YAML path, for messages
	env  string
}

// entry is one profile or CA connection being decoded.
type entry struct {
	name     string
	path     string // YAML path of the entry
	raw      map[string]any
	bindings []binding
	settings []binding // CA connections only: the connector's scalar keys
}

// decodeEntries decodes profiles and caConnections with their map keys exactly as written.
// Each entry gets its own viper so that its defaults and environment overrides work as for the
// top-level keys; the environment names its keys as CERTPROV_PROFILES_<NAME>_<KEY>.
func decodeEntries(root map[string]any, cfg *Config, ps *problems) {
	profiles := collectEntries(root, keyProfiles, keyProfiles, reflect.TypeFor[Profile](), false)
	conns := collectEntries(root, keyCAConnections, keyCAConnections, reflect.TypeFor[CAConnection](), true)
	var vaProfiles []*entry
	if va, ok := root[keyVerifiedAccess].(map[string]any); ok {
		vaProfiles = collectEntries(va, keyVAProfiles, joinPath(keyVerifiedAccess, keyVAProfiles), reflect.TypeFor[VerifiedAccessProfile](), false)
	}
	skip := ambiguousEnv(append(append(append([]*entry{}, profiles...), conns...), vaProfiles...), ps)

	if profiles != nil {
		cfg.Profiles = make(map[string]Profile, len(profiles))
	}
	for _, e := range profiles {
		p := DefaultProfile()
		v := entryViper(e, reflect.ValueOf(p), skip, ps)
		decodeStruct(v, envOf(e.bindings), reflect.ValueOf(&p).Elem(), "", e.path, ps)
		cfg.Profiles[e.name] = p
	}

	if conns != nil {
		cfg.CAConnections = make(map[string]CAConnection, len(conns))
	}
	for _, e := range conns {
		c := DefaultCAConnection()
		v := entryViper(e, reflect.ValueOf(c), skip, ps)
		decodeStruct(v, envOf(e.bindings), reflect.ValueOf(&c).Elem(), "", e.path, ps)
		c.Settings = settingsOf(e, v, ps)
		cfg.CAConnections[e.name] = c
	}

	if vaProfiles != nil {
		cfg.VerifiedAccess.Profiles = make(map[string]VerifiedAccessProfile, len(vaProfiles))
	}
	for _, e := range vaProfiles {
		p := DefaultVerifiedAccessProfile()
		v := entryViper(e, reflect.ValueOf(p), skip, ps)
		decodeStruct(v, envOf(e.bindings), reflect.ValueOf(&p).Elem(), "", e.path, ps)
		p.Policy.Signals = signalsOf(e, ps)
		cfg.VerifiedAccess.Profiles[e.name] = p
	}
}

// signalsOf reads policy.signals of a Verified Access profile from the YAML tree, keeping the
// signal names' case. A value is a list of scalars (enum names, true/false for boolean signals,
// identifiers or addresses; an IMEI written as a bare number is its digits); a single scalar is a
// one-item list, as elsewhere in the file.
func signalsOf(e *entry, ps *problems) map[string][]string {
	policy, _ := e.raw[keyVAPolicy].(map[string]any)
	raw, ok := policy[keyVASignals].(map[string]any)
	if !ok {
		return nil // absent, or not a mapping, which checkKeys reported
	}
	out := make(map[string][]string, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		path := joinPath(joinPath(joinPath(e.path, keyVAPolicy), keyVASignals), name)
		items, isList := raw[name].([]any)
		if !isList {
			items = []any{raw[name]}
		}
		values := make([]string, 0, len(items))
		bad := false
		for _, it := range items {
			switch x := it.(type) {
			case string:
				values = append(values, x)
			case bool:
				values = append(values, strconv.FormatBool(x))
			case int:
				values = append(values, strconv.Itoa(x))
			case uint64:
				values = append(values, strconv.FormatUint(x, 10))
			default:
				bad = true
			}
		}
		if bad {
			ps.add(path, "must be a list of values (enum names, true/false, or identifiers), got %s", describe(raw[name]))
			continue
		}
		out[name] = values
	}
	return out
}

// collectEntries lists the entries of the map at parent[key], sorted by name, with the environment
// variable of each of their keys. mapPath is the YAML path of the map ("profiles",
// "verifiedAccess.profiles"); it names the entries in problems and their environment variables
// (CERTPROV_VERIFIEDACCESS_PROFILES_<NAME>_<KEY>). Entries that are not mappings were reported by
// checkKeys.
func collectEntries(parent map[string]any, key, mapPath string, t reflect.Type, withSettings bool) []*entry {
	m, ok := parent[key].(map[string]any)
	if !ok {
		return nil
	}
	out := make([]*entry, 0, len(m))
	known := map[string]bool{}
	for _, f := range fieldsOf(t) {
		if !f.remain {
			known[f.name] = true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		if strings.TrimSpace(name) == "" {
			continue
		}
		raw, ok := m[name].(map[string]any)
		if !ok {
			if m[name] != nil {
				continue
			}
			raw = map[string]any{}
		}
		path := joinPath(mapPath, name)
		e := &entry{name: name, path: path, raw: raw}
		prefix := EnvPrefix + "_" + envSegment(mapPath) + "_" + envSegment(name)
		for _, k := range leafKeys(t, "") {
			e.bindings = append(e.bindings, binding{key: k, path: joinPath(path, k), env: envName(prefix, k)})
		}
		if withSettings {
			for _, k := range slices.Sorted(maps.Keys(raw)) {
				if !known[k] {
					e.settings = appendSettingLeaves(e.settings, raw[k], k, path, prefix)
				}
			}
		}
		out = append(out, e)
	}
	return out
}

// appendSettingLeaves binds the scalar leaves of a connector setting (walking nested mappings;
// lists are not addressable from the environment).
func appendSettingLeaves(out []binding, v any, key, path, prefix string) []binding {
	switch x := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(x)) {
			out = appendSettingLeaves(out, x[k], key+"."+k, path, prefix)
		}
	case []any:
	default:
		out = append(out, binding{key: key, path: joinPath(path, key), env: envName(prefix, key)})
	}
	return out
}

// ambiguousEnv finds environment variables that name more than one key (entries "a-b" and "a_b",
// or a key that differs only in case) and are set: applying them to either key would be a guess,
// so each such key is reported and left unbound.
func ambiguousEnv(entries []*entry, ps *problems) map[string]bool {
	paths := map[string][]string{}
	for _, e := range entries {
		for _, b := range append(append([]binding{}, e.bindings...), e.settings...) {
			paths[b.env] = append(paths[b.env], b.path)
		}
	}
	skip := map[string]bool{}
	for _, env := range slices.Sorted(maps.Keys(paths)) {
		if len(paths[env]) < 2 || os.Getenv(env) == "" {
			continue
		}
		skip[env] = true
		for _, p := range paths[env] {
			ps.add(p, "environment variable %s is ambiguous: it names %s; rename an entry or set the value in the file",
				env, strings.Join(paths[env], " and "))
		}
	}
	return skip
}

// entryViper builds the viper instance of one entry: defaults, the entry's own typed keys from
// the file, and environment bindings. Connector settings are bound but not merged, so that
// Get on them answers only from the environment.
func entryViper(e *entry, defaults reflect.Value, skip map[string]bool, ps *problems) *viper.Viper {
	v := viper.New()
	setDefaults(v, defaults, "")
	typed := map[string]any{}
	for _, f := range fieldsOf(defaults.Type()) {
		if val, ok := e.raw[f.name]; ok && !f.remain {
			typed[f.name] = deepCopy(val)
		}
	}
	if err := v.MergeConfigMap(typed); err != nil {
		ps.add(e.path, "merge configuration: %v", err)
	}
	for _, b := range append(append([]binding{}, e.bindings...), e.settings...) {
		if skip[b.env] {
			continue
		}
		if err := v.BindEnv(b.key, b.env); err != nil {
			ps.add(b.path, "bind %s: %v", b.env, err)
		}
	}
	return v
}

// envOf maps an entry's keys to their environment variables, for messages.
func envOf(bs []binding) map[string]string {
	out := make(map[string]string, len(bs))
	for _, b := range bs {
		out[b.key] = b.env
	}
	return out
}

// settingsOf collects a CA connection's own keys, exactly as written, with environment overrides
// applied. An override keeps the type the file gave the key, so that a connector decoding its
// settings strictly sees an int where the file had an int.
func settingsOf(e *entry, v *viper.Viper, ps *problems) map[string]any {
	known := map[string]bool{}
	for _, f := range fieldsOf(reflect.TypeFor[CAConnection]()) {
		if !f.remain {
			known[f.name] = true
		}
	}
	settings := map[string]any{}
	for k, val := range e.raw {
		if !known[k] {
			settings[k] = deepCopy(val)
		}
	}
	for _, b := range e.settings {
		override, ok := v.Get(b.key).(string)
		if !ok {
			continue // not set in the environment
		}
		if err := setSetting(settings, strings.Split(b.key, "."), override); err != nil {
			ps.add(b.path, "%v (from environment variable %s)", err, b.env)
		}
	}
	if len(settings) == 0 {
		return nil
	}
	return settings
}

// setSetting replaces the scalar at keys inside settings with s, converted to the type of the
// value it replaces.
func setSetting(settings map[string]any, keys []string, s string) error {
	m := settings
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			return fmt.Errorf("cannot override: %s is not a mapping", k)
		}
		m = next
	}
	last := keys[len(keys)-1]
	switch m[last].(type) {
	case bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", s)
		}
		m[last] = b
	case int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("must be a whole number, got %q", s)
		}
		m[last] = n
	case float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("must be a number, got %q", s)
		}
		m[last] = f
	default:
		m[last] = s
	}
	return nil
}

// leafKeys lists the dotted keys of every value (not section) of struct type t, skipping the
// maps and the connector settings, which have no fixed keys.
func leafKeys(t reflect.Type, prefix string) []string {
	var out []string
	for _, f := range fieldsOf(t) {
		if f.remain || f.typ.Kind() == reflect.Map {
			continue
		}
		key := joinPath(prefix, f.name)
		if isSection(f.typ) {
			out = append(out, leafKeys(f.typ, key)...)
			continue
		}
		out = append(out, key)
	}
	return out
}

// setDefaults registers the non-zero values of the struct v as viper defaults.
func setDefaults(vp *viper.Viper, v reflect.Value, prefix string) {
	for _, f := range fieldsOf(v.Type()) {
		if f.remain || f.typ.Kind() == reflect.Map {
			continue
		}
		key := joinPath(prefix, f.name)
		fv := v.Field(f.index)
		if isSection(f.typ) {
			setDefaults(vp, fv, key)
			continue
		}
		if !fv.IsZero() {
			vp.SetDefault(key, fv.Interface())
		}
	}
}

// envName is the environment variable for key: prefix, "_", then the key upper-cased with its
// dots (and any other character that cannot appear in a variable name) turned into "_".
func envName(prefix, key string) string {
	return prefix + "_" + envSegment(key)
}

// envSegment upper-cases s and replaces every character other than A-Z and 0-9 with "_".
func envSegment(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		default:
			return '_'
		}
	}, s)
}

// decodeStruct fills the values of the struct out from vp, one key at a time so that each bad
// value becomes its own Problem naming its path. Keys vp does not have keep their current value.
func decodeStruct(vp *viper.Viper, env map[string]string, out reflect.Value, keyPrefix, pathPrefix string, ps *problems) {
	for _, f := range fieldsOf(out.Type()) {
		if f.remain || f.typ.Kind() == reflect.Map {
			continue
		}
		key := joinPath(keyPrefix, f.name)
		if isSection(f.typ) {
			decodeStruct(vp, env, out.Field(f.index), key, pathPrefix, ps)
			continue
		}
		raw := vp.Get(key)
		if raw == nil {
			continue
		}
		name := env[key]
		fromEnv := name != "" && os.Getenv(name) != ""
		val, msg := decodeValue(raw, f.typ, fromEnv)
		if msg != "" {
			if fromEnv {
				msg += " (from environment variable " + name + ")"
			}
			ps.add(joinPath(pathPrefix, key), "%s", msg)
			continue
		}
		out.Field(f.index).Set(val)
	}
}

// decodeValue converts one raw value (from YAML, the environment or a default) to type t.
// A list from the environment is comma-separated; in YAML a plain string is a one-item list, so
// that "organization: Example Corp, Inc." stays whole. It returns a message for an operator
// instead of an error when the value does not fit.
func decodeValue(raw any, t reflect.Type, fromEnv bool) (reflect.Value, string) {
	if t == durationType {
		switch x := raw.(type) {
		case time.Duration:
			return reflect.ValueOf(x), ""
		case string:
			if _, err := time.ParseDuration(strings.TrimSpace(x)); err != nil {
				return reflect.Value{}, fmt.Sprintf("invalid duration %q: use a number with a unit (ms, s, m, h), e.g. 30s, 90m, 24h", x)
			}
			raw = strings.TrimSpace(x)
		default:
			// mapstructure would read a bare 30 as 30 nanoseconds.
			return reflect.Value{}, fmt.Sprintf("invalid duration %s: a duration needs a unit (ms, s, m, h), e.g. 30s, 90m, 24h", describe(raw))
		}
	}
	if f, ok := raw.(float64); ok && isInt(t) && f != math.Trunc(f) {
		return reflect.Value{}, "must be a whole number, got " + describe(raw)
	}
	hooks := []mapstructure.DecodeHookFunc{mapstructure.StringToTimeDurationHookFunc()}
	if fromEnv {
		hooks = append(hooks, commaListHook)
	}
	out := reflect.New(t)
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(hooks...),
		// Values from the environment are strings; "16" must become 16 and "true" true.
		WeaklyTypedInput: true,
		Result:           out.Interface(),
	})
	if err != nil {
		return reflect.Value{}, fmt.Sprintf("internal error: %v", err)
	}
	if err := dec.Decode(raw); err != nil {
		return reflect.Value{}, expectation(t) + ", got " + describe(raw)
	}
	return out.Elem(), ""
}

// commaListHook splits a string from the environment into a list of strings at commas:
// CERTPROV_CUSTOMERS="C0abc123, C0def456".
func commaListHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice || to.Elem().Kind() != reflect.String {
		return data, nil
	}
	var out []string
	for _, s := range strings.Split(data.(string), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

func isInt(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// expectation says what a value of type t must look like.
func expectation(t reflect.Type) string {
	switch {
	case t.Kind() == reflect.String:
		return "must be a string"
	case t.Kind() == reflect.Bool:
		return "must be true or false"
	case isInt(t):
		return "must be a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "must be a number"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "must be a list of strings"
	default:
		return "must be a " + t.String()
	}
}

// describe names a raw value in a message: strings quoted, sections and lists by their kind.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	default:
		return fmt.Sprint(x)
	}
}
