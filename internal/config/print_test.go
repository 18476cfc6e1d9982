package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/certprov/certprov-adapter/internal/logging"
)

// printYAML is a configuration with a secret of every kind config print must hide.
const printYAML = `
instanceId: a1
customers: [C01b2c3d4]
pubsub: {project: corp, subscription: certprov}
google:
  credentials: {type: serviceAccountKey, file: keys/sa.json}
journal:
  type: postgres
  dsn: "postgres://certprov:pg-Secret-1@db.internal:5432/certprov?sslmode=verify-full&password=pg-Secret-2"
profiles:
  wifi:
    subject: {commonName: "{{.Device.SerialNumber}}"}
    validity: 720h
caConnections:
  ndes:
    type: scep
    url: "https://svc:url-Secret-3@ndes.example.com/certsrv/mscep/mscep.dll?key=url-Secret-4"
    challenge: scep-Secret-5
    signerKeyFile: state/signer.key
    signerCertFile: state/signer.crt
    dynamicChallenge: {url: "https://ndes.example.com/admin/", username: CORP\svc, passwordFile: secrets/ndes.pw}
  hook:
    type: webhook
    url: https://ca.example.com/issue
    hmacSecretFile: secrets/hmac
    headers: {Authorization: "Bearer hdr-Secret-6", X-Tenant: corp}
    headerFiles: {X-Api-Key: secrets/api.key}
    apiToken: tok-Secret-7
    inlineKey: "-----BEGIN PRIVATE KEY-----\npem-Secret-8\n-----END PRIVATE KEY-----"
    retries: 3
`

// TestMarshalRedacted: config print shows the effective configuration (defaults, environment
// overrides, resolved paths) and no secret; what it prints loads back into the same
// configuration, but for the redacted values.
func TestMarshalRedacted(t *testing.T) {
	cleanEnv(t)
	t.Setenv("CERTPROV_ENGINE_WORKERS", "7")
	t.Setenv("CERTPROV_CACONNECTIONS_HOOK_URL", "https://ca2.example.com/issue")
	path := writeConfig(t, printYAML)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.MarshalRedacted()
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	if strings.Contains(text, "Secret-") {
		t.Errorf("a secret is printed:\n%s", text)
	}
	dir := filepath.Dir(path)
	for _, want := range []string{
		"workers: 7",                                  // environment override
		"url: https://ca2.example.com/issue",          // … of a connector setting
		"shutdownGracePeriod: 25s",                    // default
		"validity: 720h\n",                            // written as in a file
		"file: " + filepath.Join(dir, "keys/sa.json"), // resolved path
		"signerKeyFile: state/signer.key",             // paths are not secrets
		"passwordFile: secrets/ndes.pw",
		"X-Api-Key: secrets/api.key",
		"username: CORP\\svc",
		"X-Tenant: '[redacted]'", // every header value
		"dsn: postgres://certprov:[redacted]@db.internal:5432/certprov?password=[redacted]&sslmode=verify-full",
		"url: https://svc:[redacted]@ndes.example.com/certsrv/mscep/mscep.dll?key=[redacted]",
		"retries: 3",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}

	// Loaded back (from another directory, with the same environment), the printed
	// configuration is the effective one, secrets aside.
	again, err := Parse(out, t.TempDir())
	if err != nil {
		t.Fatalf("the printed configuration does not load: %v\n%s", err, text)
	}
	want := *cfg
	want.BaseDir = again.BaseDir
	want.Journal.DSN = "postgres://certprov:[redacted]@db.internal:5432/certprov?password=[redacted]&sslmode=verify-full"
	redact := func(conn, key string) {
		want.CAConnections[conn].Settings[key] = logging.Redacted
	}
	want.CAConnections = map[string]CAConnection{"ndes": cloneConn(cfg.CAConnections["ndes"]), "hook": cloneConn(cfg.CAConnections["hook"])}
	redact("ndes", "challenge")
	want.CAConnections["ndes"].Settings["url"] = "https://svc:[redacted]@ndes.example.com/certsrv/mscep/mscep.dll?key=[redacted]"
	redact("hook", "apiToken")
	redact("hook", "inlineKey")
	want.CAConnections["hook"].Settings["headers"] = map[string]any{"Authorization": logging.Redacted, "X-Tenant": logging.Redacted}
	if !reflect.DeepEqual(emptyToNil(reflect.ValueOf(want)).Interface(), emptyToNil(reflect.ValueOf(*again)).Interface()) {
		t.Errorf("loaded back:\n%+v\nwant\n%+v", *again, want)
	}
}

func cloneConn(c CAConnection) CAConnection {
	var s map[string]any
	b, _ := yaml.Marshal(c.Settings)
	_ = yaml.Unmarshal(b, &s)
	c.Settings = s
	return c
}

// emptyToNil copies v with empty slices and maps made nil, which YAML cannot tell apart.
func emptyToNil(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		for i := range v.NumField() {
			if out.Field(i).CanSet() {
				out.Field(i).Set(emptyToNil(v.Field(i)))
			}
		}
		return out
	case reflect.Slice:
		if v.Len() == 0 {
			return reflect.Zero(v.Type())
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(emptyToNil(v.Index(i)))
		}
		return out
	case reflect.Map:
		if v.Len() == 0 {
			return reflect.Zero(v.Type())
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for _, k := range v.MapKeys() {
			out.SetMapIndex(k, emptyToNil(v.MapIndex(k)))
		}
		return out
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		e := emptyToNil(v.Elem())
		out := reflect.New(v.Type()).Elem()
		out.Set(e)
		return out
	default:
		return v
	}
}

func TestRedactDSN(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://u:p%40ss@h:5432/db?sslmode=disable", "postgres://u:[redacted]@h:5432/db?sslmode=disable"},
		{"host=db user=u password=s3cret dbname=x", "host=db user=u password=[redacted] dbname=x"},
		{"host=db password = 'with space' user=u", "host=db password = [redacted] user=u"},
		{"host=db PASSWORD='it\\'s' user=u", "host=db PASSWORD=[redacted] user=u"},
		{"postgres://u:p@h/db?%zz", "postgres://u:[redacted]@h/db?[redacted]"},
	}
	for _, tt := range tests {
		if got := redactDSN(tt.in); got != tt.want {
			t.Errorf("redactDSN(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[string]string{"720h": "720h", "90m": "1h30m", "25s": "25s", "1h0m30s": "1h0m30s", "500ms": "500ms", "0s": "0s"} {
		parsed, err := time.ParseDuration(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := FormatDuration(parsed); got != want {
			t.Errorf("FormatDuration(%s) = %q, want %q", d, got, want)
		}
	}
}
