package ca

import (
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"

	"github.com/certprov/certprov-adapter/internal/relpath"
	"github.com/certprov/certprov-adapter/internal/suggest"
)

// SettingError is a problem with one connector setting. Key is the setting's dotted path below
// caConnections.<name> ("url", "tls.caFile", "headers.Authorization"), so that the adapter can
// report the problem at its full YAML path (caConnections.corp.url). Err never holds a secret.
type SettingError struct {
	Key string
	Err error
}

// Error renders "key: message", the form connector errors have always had.
func (e *SettingError) Error() string { return e.Key + ": " + e.Err.Error() }

// Unwrap returns the problem without its key.
func (e *SettingError) Unwrap() error { return e.Err }

// Path is the setting's key; config.ProblemsAt reads it to build the full YAML path.
func (e *SettingError) Path() string { return e.Key }

// SettingErrorf is a *SettingError at key with a formatted message (%w wraps).
func SettingErrorf(key, format string, args ...any) error {
	return &SettingError{Key: key, Err: fmt.Errorf(format, args...)}
}

// SettingProblem is err as a problem at key, for errors that name their setting themselves
// (cleartext.Exposure: "dynamicChallenge.url: … is plain http"): the message drops that leading
// "key: ", and errors.As still finds err.
func SettingProblem(key string, err error) error {
	return &SettingError{Key: key, Err: keyTrimmed{err: err, key: key}}
}

type keyTrimmed struct {
	err error
	key string
}

func (t keyTrimmed) Error() string {
	s, _ := strings.CutPrefix(t.err.Error(), t.key+": ")
	return s
}

func (t keyTrimmed) Unwrap() error { return t.err }

// WithinSetting places the setting problems of err below prefix: a nested block checked on its
// own (a dynamicChallenge's tls block) reports "tls.caFile", its parent "dynamicChallenge.tls.caFile".
// Other errors in err become problems at prefix itself.
func WithinSetting(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var se *SettingError
		if errors.As(e, &se) {
			out = append(out, &SettingError{Key: prefix + "." + se.Key, Err: se.Err})
			continue
		}
		out = append(out, &SettingError{Key: prefix, Err: e})
	}
	return errors.Join(out...)
}

// flatten lists the leaves of an errors.Join tree.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Decode decodes a connector's settings into dst (a pointer to a struct with mapstructure tags),
// strictly: an unknown key is an error naming it. Durations are written as strings ("30s",
// "720h"); nested structs (e.g. a TLS block) decode the same way. Every problem is a
// *SettingError (joined), an unknown key with the closest known one when there is one.
func Decode(s Settings, dst any) error {
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		ErrorUnused: true,
		DecodeHook:  durationHook,
		Result:      dst,
	})
	if err != nil {
		return fmt.Errorf("settings decoder: %w", err)
	}
	if err := dec.Decode(map[string]any(s)); err != nil {
		return settingErrors(err, reflect.TypeOf(dst))
	}
	return nil
}

// settingErrors turns what mapstructure returned into one *SettingError per problem.
func settingErrors(err error, dst reflect.Type) error {
	var out []error
	for _, e := range decodeLeaves(err) {
		var de *mapstructure.DecodeError
		if !errors.As(e, &de) {
			out = append(out, &SettingError{Key: "settings", Err: e})
			continue
		}
		key := yamlPath(de.Name())
		inner := de.Unwrap()
		if keys, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
			known := knownKeys(dst, key)
			for _, k := range strings.Split(keys, ", ") {
				msg := "unknown key"
				if s := suggest.Closest(k, known); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				out = append(out, &SettingError{Key: joinKey(key, k), Err: errors.New(msg)})
			}
			continue
		}
		var ue *mapstructure.UnconvertibleTypeError
		if errors.As(inner, &ue) {
			inner = fmt.Errorf("must be %s, got %s", kindName(ue.Expected.Type()), describe(ue.Value))
		}
		if key == "" {
			key = "settings"
		}
		out = append(out, &SettingError{Key: key, Err: inner})
	}
	return errors.Join(out...)
}

// decodeLeaves lists the *mapstructure.DecodeError inside err, which mapstructure joins and
// wraps ("decoding failed due to the following error(s): …"), and anything else it holds.
func decodeLeaves(err error) []error {
	var de *mapstructure.DecodeError
	if errors.As(err, &de) && de == err {
		return []error{err}
	}
	switch x := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range x.Unwrap() {
			out = append(out, decodeLeaves(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if inner := x.Unwrap(); inner != nil {
			return decodeLeaves(inner)
		}
	}
	return []error{err}
}

// mapIndex matches a map element in a mapstructure name ("headers[Authorization]").
var mapIndex = regexp.MustCompile(`\[([^\]]*[^\]0-9][^\]]*)\]`)

// yamlPath writes mapstructure's field name as a YAML path: map elements as keys
// (headers.Authorization), list elements as indexes (names[0]).
func yamlPath(name string) string { return mapIndex.ReplaceAllString(name, ".$1") }

func joinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// knownKeys lists the keys the struct at path inside t accepts.
func knownKeys(t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if path != "" {
		head, rest, _ := strings.Cut(path, ".")
		if t.Kind() != reflect.Struct {
			return nil
		}
		for i := range t.NumField() {
			if tagName(t.Field(i)) == head {
				return knownKeys(t.Field(i).Type, rest)
			}
		}
		return nil
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		if n := tagName(t.Field(i)); n != "" && n != "-" {
			out = append(out, n)
		}
	}
	return out
}

func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	if name == "" && f.IsExported() {
		return f.Name
	}
	return name
}

// kindName says what a value of type t is, for a message.
func kindName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return "a duration such as 30s"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "a whole number"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.Map || t.Kind() == reflect.Struct:
		return "a mapping"
	case t.Kind() == reflect.Slice:
		return "a list"
	default:
		return "a " + t.String()
	}
}

// describe names a value in a message without repeating it: a setting of the wrong type may
// be a secret in the wrong place.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case map[string]any, map[any]any:
		return "a mapping"
	case []any:
		return "a list"
	case bool:
		return "true or false"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// durationHook parses duration strings and quotes the value when it cannot.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	d, err := time.ParseDuration(data.(string))
	if err != nil {
		return nil, fmt.Errorf("%q is not a duration (write e.g. 30s or 720h)", data)
	}
	return d, nil
}

// Path resolves a settings path against the config file's directory (relpath.Resolve).
func (e Env) Path(p string) string { return relpath.Resolve(e.BaseDir, p) }

// ParseURL parses a URL setting. Its error does not repeat the URL (url.Parse's does), which may
// carry credentials.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("not a URL: %w", err)
	}
	return u, nil
}
