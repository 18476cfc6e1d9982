package config

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestYAMLAnchorsAndDates(t *testing.T) {
	cleanEnv(t)
	cfg := mustLoad(t, `
instanceId: a1
customers: [C0abc123]
pubsub: {project: p, subscription: s}
x-profile-defaults: &common
  keyUsage: [digitalSignature]
  extendedKeyUsage: [clientAuth]
  validity: 720h
profiles:
  dev:
    <<: *common
    validity: 48h
    subject: {commonName: "{{.Device.SerialNumber}}"}
  user:
    <<: *common
    subject: {commonName: "{{.User.Email}}"}
caConnections:
  ca:
    type: local
    notAfter: 2030-01-02
    quoted: "2030-01-02"
    count: 3
`)
	if p := cfg.Profiles["dev"]; p.Validity != 48*time.Hour || !slices.Equal(p.KeyUsage, []string{"digitalSignature"}) {
		t.Errorf("dev: explicit keys must win over merged ones: %+v", p)
	}
	if p := cfg.Profiles["user"]; p.Validity != 720*time.Hour || !slices.Equal(p.ExtKeyUsage, []string{"clientAuth"}) {
		t.Errorf("user: merged keys missing: %+v", p)
	}
	want := map[string]any{"notAfter": "2030-01-02", "quoted": "2030-01-02", "count": 3}
	if got := cfg.CAConnections["ca"].Settings; !reflect.DeepEqual(got, want) {
		t.Errorf("settings %#v; want %#v (dates stay strings)", got, want)
	}
}

func TestExtensionKeysOnlyAtTopLevel(t *testing.T) {
	cleanEnv(t)
	problemAt(t, loadProblems(t, minimalYAML+"log: {x-note: 1}\n"), "log.x-note")
	mustLoad(t, minimalYAML+"x-note: anything\n")
}
