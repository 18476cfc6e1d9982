package config

import (
	"bytes"
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certprov/certprov-adapter/internal/logging"
)

// MarshalRedacted renders the configuration as YAML, every key in the order of the schema and
// with its effective value (defaults and environment overrides applied, paths resolved), for
// `certprov-adapter config print`. Secrets are replaced by "[redacted]" so that the output can
// be pasted into a ticket: the password of journal.dsn, and in CA connection settings every
// value whose key says it is a secret (password, secret, token, challenge, hmac, apiKey,
// credential, privateKey, auth), every value of a headers map (headers carry credentials),
// every value that holds PEM key material, and the password and query values of URLs. Keys that
// name files (ending in File or Files) keep their value: a path is not a secret, and the files
// themselves are never read.
func (c *Config) MarshalRedacted() ([]byte, error) {
	root := structNode(reflect.ValueOf(*c))
	if dsn := findKey(root, "journal", "dsn"); dsn != nil {
		dsn.Value = redactDSN(dsn.Value)
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// structNode renders a struct of the schema as a mapping in field order.
func structNode(v reflect.Value) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for _, f := range fieldsOf(v.Type()) {
		fv := v.Field(f.index)
		if f.remain {
			// A CA connection's own settings sit beside its typed keys, as in the file.
			settings, _ := fv.Interface().(map[string]any)
			for _, k := range slices.Sorted(maps.Keys(settings)) {
				n.Content = append(n.Content, scalar(k), settingNode(k, settings[k], ""))
			}
			continue
		}
		n.Content = append(n.Content, scalar(f.name), valueNode(fv))
	}
	return n
}

// valueNode renders a typed value of the schema.
func valueNode(v reflect.Value) *yaml.Node {
	if v.Type() == durationType {
		return scalar(FormatDuration(time.Duration(v.Int())))
	}
	switch v.Kind() {
	case reflect.Struct:
		return structNode(v)
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode}
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		slices.Sort(keys)
		for _, k := range keys {
			n.Content = append(n.Content, scalar(k), valueNode(v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key()))))
		}
		return n
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for i := range v.Len() {
			n.Content = append(n.Content, valueNode(v.Index(i)))
		}
		return n
	case reflect.String:
		return scalar(v.String())
	default: // numbers and booleans
		n := &yaml.Node{}
		if err := n.Encode(v.Interface()); err != nil {
			return scalar(fmt.Sprint(v.Interface()))
		}
		return n
	}
}

// settingNode renders one value of a CA connection's settings; parent is the key of the mapping
// it is in ("" at the top).
func settingNode(key string, v any, parent string) *yaml.Node {
	isFile := isFileKey(key) || isFileKey(parent)
	secret := parent == "headers" || (!isFile && secretKey(key))
	switch x := v.(type) {
	case map[string]any:
		// A block (dynamicChallenge, tls) is judged key by key; every value of headers is a
		// credential whatever the header is called (headerFiles maps header names to paths).
		n := &yaml.Node{Kind: yaml.MappingNode}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			n.Content = append(n.Content, scalar(k), settingNode(k, x[k], key))
		}
		return n
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, e := range x {
			n.Content = append(n.Content, settingNode(key, e, parent))
		}
		return n
	case nil:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	case string:
		switch {
		case secret && x != "", strings.Contains(x, "-----BEGIN"):
			return scalar(logging.Redacted)
		case !isFile && strings.Contains(x, "://"):
			return scalar(redactURL(x, func(string) bool { return true }))
		}
		return scalar(x)
	default:
		if secret {
			return scalar(logging.Redacted)
		}
		n := &yaml.Node{}
		if err := n.Encode(x); err != nil {
			return scalar(fmt.Sprint(x))
		}
		return n
	}
}

// secretWords mark a CA connection setting as a secret when its key contains one of them.
var secretWords = []string{"password", "passwd", "secret", "token", "challenge", "hmac", "apikey", "api_key", "api-key", "credential", "privatekey", "auth"}

// isFileKey says whether a setting names a file (or a map of files): its value is a path.
func isFileKey(key string) bool {
	return strings.HasSuffix(key, "File") || strings.HasSuffix(key, "Files")
}

func secretKey(key string) bool {
	k := strings.ToLower(key)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// redactURL hides the password of a URL and the values of the query parameters secret says
// may carry a key. A string that does not parse as a URL with a scheme is returned unchanged,
// unless it looked like one: then all of it is hidden, since the password cannot be located.
func redactURL(s string, secret func(param string) bool) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return logging.Redacted
	}
	var b strings.Builder
	b.WriteString(u.Scheme + "://")
	if u.User != nil {
		b.WriteString(u.User.Username())
		if _, ok := u.User.Password(); ok {
			b.WriteString(":" + logging.Redacted)
		}
		b.WriteString("@")
	}
	b.WriteString(u.Host + u.EscapedPath())
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			b.WriteString("?" + logging.Redacted)
			return b.String()
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(q)) {
			for _, v := range q[k] {
				if secret(k) {
					v = logging.Redacted
				}
				parts = append(parts, url.QueryEscape(k)+"="+v)
			}
		}
		b.WriteString("?" + strings.Join(parts, "&"))
	}
	return b.String()
}

// dsnPassword matches the password of a keyword/value PostgreSQL connection string
// ("host=db password='x y' user=a"), quoted or not.
var dsnPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactDSN hides the password of a PostgreSQL connection string in URL or keyword/value form.
func redactDSN(dsn string) string {
	if strings.Contains(dsn, "://") {
		return redactURL(dsn, func(k string) bool { return strings.EqualFold(k, "password") })
	}
	return dsnPassword.ReplaceAllString(dsn, "${1}"+logging.Redacted)
}

// findKey returns the scalar at the path of keys in a mapping node, or nil.
func findKey(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}

func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// FormatDuration writes d as the configuration would: 720h rather than 720h0m0s.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
