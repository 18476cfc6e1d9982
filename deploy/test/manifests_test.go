package deploytest

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The overlays and components of deploy/kubernetes.
const (
	overlaySQLite   = "sqlite"
	overlayPostgres = "postgres"
	compVA          = "verified-access"
	compSM          = "service-monitor"
)

// rendering is one way an operator deploys: the manifests it produces and what they must hold.
type rendering struct {
	name   string
	render func(t *testing.T) ([]byte, error)
	expect expect
}

func renderings() []rendering {
	k := func(overlay string, comps ...string) func(t *testing.T) ([]byte, error) {
		return func(t *testing.T) ([]byte, error) { return kustomizeWith(t, overlay, comps...) }
	}
	h := func(values string) func(t *testing.T) ([]byte, error) {
		return func(t *testing.T) ([]byte, error) { return helmTemplate(t, values) }
	}
	kust := expect{namespace: true, workloadIdentity: true, pdb: true}
	with := func(e expect, f func(*expect)) expect { f(&e); return e }
	return []rendering{
		{"kustomize/sqlite", k(overlaySQLite), with(kust, func(e *expect) { e.mode = "sqlite" })},
		{"kustomize/postgres", k(overlayPostgres), with(kust, func(e *expect) { e.mode = "postgres" })},
		{"kustomize/sqlite+components", k(overlaySQLite, compVA, compSM), with(kust, func(e *expect) {
			e.mode, e.verifiedAccess, e.serviceMonitor = "sqlite", true, true
		})},
		{"kustomize/postgres+components", k(overlayPostgres, compVA, compSM), with(kust, func(e *expect) {
			e.mode, e.verifiedAccess, e.serviceMonitor = "postgres", true, true
		})},
		{"helm/defaults", h(""), expect{mode: "sqlite", pdb: true}},
		{"helm/postgres", h(helmPostgres), expect{mode: "postgres", pdb: true, workloadIdentity: true}},
		{"helm/everything", h(helmEverything), expect{mode: "sqlite", verifiedAccess: true, serviceMonitor: true, workloadIdentity: true}},
		{"helm/postgres+verified-access", h(helmPostgres + "verifiedAccess: {enabled: true}\nserviceMonitor: {enabled: true}\npodDisruptionBudget: {enabled: false}\n"),
			expect{mode: "postgres", verifiedAccess: true, serviceMonitor: true, workloadIdentity: true}},
	}
}

// helmPostgres is the shared-journal mode with a CA connection that recovers from the CA itself.
const helmPostgres = `
journal: {type: postgres}
serviceAccount: {gcpServiceAccount: certprov-adapter@my-project.iam.gserviceaccount.com}
secretMounts:
  - {name: ca, secretName: certprov-ca, mountPath: /var/run/secrets/certprov/ca}
  - {name: ca-webhook, secretName: certprov-ca-webhook, mountPath: /var/run/secrets/certprov/ca-webhook}
config:
  customers: [C01abc2de]
  pubsub: {project: my-project, subscription: certprov-adapter}
  google: {credentials: {type: adc}}
  profiles:
    wifi-device:
      subject: {commonName: "{{.Device.SerialNumber}}"}
      extendedKeyUsage: [clientAuth]
  caConnections:
    corp-ca:
      type: webhook
      # Helm merges these values into the chart's defaults: null drops the local CA's keys.
      certificateFile: null
      keyFile: null
      ledgerFile: null
      url: https://ca-webhook.pki.svc.cluster.local/v1/certificates
      tls: {caFile: /var/run/secrets/certprov/ca-webhook/tls-ca.crt}
      hmacSecretFile: /var/run/secrets/certprov/ca-webhook/hmac.key
      caCertsFile: /var/run/secrets/certprov/ca-webhook/ca-certs.pem
    enroll-ca:
      type: local
      certificateFile: /var/run/secrets/certprov/ca/ca.crt
      keyFile: /var/run/secrets/certprov/ca/ca.key
  verifiedAccess:
    profiles:
      wifi-machine:
        scopes: [machine]
        enrollmentDomain: example.com
        caConnection: enroll-ca
        subject: {commonName: "{{.Signals.SerialNumber}}"}
        extendedKeyUsage: [clientAuth]
`

// helmEverything turns on every optional part of the chart.
const helmEverything = `
replicas: 2
image: {tag: "1.2.3"}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
verifiedAccess: {enabled: true}
podDisruptionBudget: {enabled: false}
serviceAccount: {gcpServiceAccount: certprov-adapter@my-project.iam.gserviceaccount.com}
secretMounts:
  - {name: ca, secretName: certprov-ca, mountPath: /var/run/secrets/certprov/ca}
  - {name: google, secretName: certprov-google-sa, mountPath: /var/run/secrets/certprov/google}
env:
  - name: CERTPROV_LOG_LEVEL
    value: debug
config:
  customers: [C01abc2de]
  pubsub: {project: my-project, subscription: certprov-adapter}
  google:
    credentials: {type: serviceAccountKey, file: /var/run/secrets/certprov/google/sa.json}
  profiles:
    wifi-device:
      subject: {commonName: "{{.Device.SerialNumber}}"}
      extendedKeyUsage: [clientAuth]
  caConnections:
    corp-ca:
      type: local
      certificateFile: /var/run/secrets/certprov/ca/ca.crt
      keyFile: /var/run/secrets/certprov/ca/ca.key
      ledgerFile: /var/lib/certprov/ca-ledger.jsonl
  verifiedAccess:
    profiles:
      wifi-machine:
        scopes: [machine]
        enrollmentDomain: example.com
        caConnection: corp-ca
        subject: {commonName: "{{.Signals.SerialNumber}}"}
        extendedKeyUsage: [clientAuth]
`

// TestRenderings renders every supported way of deploying, decodes each manifest strictly into
// its Kubernetes API type and checks the contract: Pod Security restricted, probes on the ops
// listener's paths, the journal on the right kind of volume, Services that reach the pods.
func TestRenderings(t *testing.T) {
	ep := ops(t)
	for _, r := range renderings() {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			out, err := r.render(t)
			if err != nil {
				t.Fatal(err)
			}
			o, err := decodeAll(out)
			if err != nil {
				t.Fatalf("%v\n--- rendering:\n%s", err, out)
			}
			for _, p := range check(o, r.expect, ep, defaults(t)) {
				t.Error(p)
			}
		})
	}
}

// TestChecksCatchMistakes breaks a good rendering in the ways the issue reported (and a few
// more) and expects the checks to say so: a check that cannot fail proves nothing.
func TestChecksCatchMistakes(t *testing.T) {
	ep, d := ops(t), defaults(t)
	good, err := kustomizeWith(t, overlaySQLite)
	if err != nil {
		t.Fatal(err)
	}
	e := expect{mode: "sqlite", namespace: true, workloadIdentity: true, pdb: true}
	pod := func(o *objects) *corev1.PodSpec { return &o.StatefulSets[0].Spec.Template.Spec }
	ctr := func(o *objects) *corev1.Container { return &pod(o).Containers[0] }
	tests := []struct {
		name   string
		breaks func(o *objects)
		want   string
	}{
		{"runs as root", func(o *objects) {
			pod(o).SecurityContext.RunAsNonRoot = nil
			pod(o).SecurityContext.RunAsUser = new(int64)
		}, "pod security restricted"},
		{"no seccomp profile", func(o *objects) { pod(o).SecurityContext.SeccompProfile = nil }, "pod security restricted"},
		{"privilege escalation", func(o *objects) { ctr(o).SecurityContext.AllowPrivilegeEscalation = nil }, "pod security restricted"},
		{"capabilities kept", func(o *objects) { ctr(o).SecurityContext.Capabilities = nil }, "pod security restricted"},
		{"writable root filesystem", func(o *objects) { ctr(o).SecurityContext.ReadOnlyRootFilesystem = nil }, "readOnlyRootFilesystem"},
		{"liveness on a path nobody serves", func(o *objects) { ctr(o).LivenessProbe.HTTPGet.Path = "/health" }, "livenessProbe"},
		{"readiness on liveness path", func(o *objects) { ctr(o).ReadinessProbe.HTTPGet.Path = ep.Healthz }, "readinessProbe"},
		{"no probes", func(o *objects) { ctr(o).StartupProbe = nil }, "startupProbe"},
		{"ops port moved", func(o *objects) { ctr(o).Ports[0].ContainerPort = 8080 }, `container port "ops"`},
		{"image latest", func(o *objects) { ctr(o).Image = "ghcr.io/certprov/certprov-adapter:latest" }, "pin a version"},
		{"image untagged", func(o *objects) { ctr(o).Image = "ghcr.io/certprov/certprov-adapter" }, "pin a version"},
		{"journal without a volume", func(o *objects) {
			s := o.StatefulSets[0]
			s.Spec.VolumeClaimTemplates = nil
			c := ctr(o)
			c.VolumeMounts = c.VolumeMounts[:2] // config and CA only: /var/lib/certprov is gone
		}, "journal.path /var/lib/certprov/journal.db: not on a durable"},
		{"ledger on an emptyDir", func(o *objects) {
			s := o.StatefulSets[0]
			s.Spec.VolumeClaimTemplates = nil
			pod(o).Volumes = append(pod(o).Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}, "ledgerFile /var/lib/certprov/ca-ledger.jsonl: not on a durable"},
		{"instance id not from the pod name", func(o *objects) { ctr(o).Env[0] = corev1.EnvVar{Name: "CERTPROV_INSTANCEID", Value: "one"} }, "CERTPROV_INSTANCEID"},
		{"short grace period", func(o *objects) { g := int64(10); pod(o).TerminationGracePeriodSeconds = &g }, "terminationGracePeriodSeconds"},
		{"shutdown grace raised in the config alone", func(o *objects) {
			o.ConfigMaps[0].Data[configKey] += "shutdownGracePeriod: 45s\n"
		}, "does not exceed shutdownGracePeriod 45s (shutdownGracePeriod)"},
		{"shutdown grace raised in the environment alone", func(o *objects) {
			ctr(o).Env = append(ctr(o).Env, corev1.EnvVar{Name: "CERTPROV_SHUTDOWNGRACEPERIOD", Value: "29s"})
		}, "does not exceed shutdownGracePeriod 29s (CERTPROV_SHUTDOWNGRACEPERIOD)"},
		{"Service selects nothing", func(o *objects) { o.Services[0].Spec.Selector = map[string]string{"app": "other"} }, "does not select the pods"},
		{"headless Service missing", func(o *objects) { o.StatefulSets[0].Spec.ServiceName = "nope" }, "serviceName"},
		{"namespace not restricted", func(o *objects) { delete(o.Namespaces[0].Labels, "pod-security.kubernetes.io/enforce") }, "pod-security.kubernetes.io/enforce"},
		{"no workload identity", func(o *objects) { o.ServiceAccounts[0].Annotations = nil }, "Workload Identity"},
		{"no disruption budget", func(o *objects) { o.PDBs = nil }, "PodDisruptionBudgets"},
		{"config not mounted", func(o *objects) { ctr(o).Args = []string{"run", "--config", "/config/adapter.yaml"} }, "not on a ConfigMap volume"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := decodeAll(good)
			if err != nil {
				t.Fatal(err)
			}
			if ps := check(o, e, ep, d); len(ps) != 0 {
				t.Fatalf("the good rendering fails already: %v", ps)
			}
			tt.breaks(o)
			ps := check(o, e, ep, d)
			for _, p := range ps {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("no problem mentions %q; got %q", tt.want, ps)
		})
	}
}

// TestChecksCatchSharedLedger: in the shared-journal mode a local CA ledger (which would be
// per pod) is reported, with the key that names it.
func TestChecksCatchSharedLedger(t *testing.T) {
	good, err := kustomizeWith(t, overlayPostgres)
	if err != nil {
		t.Fatal(err)
	}
	o, err := decodeAll(good)
	if err != nil {
		t.Fatal(err)
	}
	e := expect{mode: "postgres", namespace: true, workloadIdentity: true, pdb: true}
	if ps := check(o, e, ops(t), defaults(t)); len(ps) != 0 {
		t.Fatalf("the good rendering fails already: %v", ps)
	}
	cm := o.ConfigMaps[0]
	before := cm.Data[configKey]
	cm.Data[configKey] = strings.Replace(before, "    keyFile: /var/run/secrets/certprov/ca/ca.key\n",
		"    keyFile: /var/run/secrets/certprov/ca/ca.key\n    ledgerFile: /var/lib/certprov/ca-ledger.jsonl\n", 1)
	if cm.Data[configKey] == before {
		t.Fatal("the overlay's configuration has no local CA to give a ledger to")
	}
	ps := check(o, e, ops(t), defaults(t))
	if !slices.ContainsFunc(ps, func(p string) bool { return strings.Contains(p, "postgres: caConnections.enroll-ca.ledgerFile") }) {
		t.Errorf("no problem names caConnections.enroll-ca.ledgerFile; got %q", ps)
	}
}

// TestStrictDecoding: a misspelt field in a manifest is an error, not silently dropped.
func TestStrictDecoding(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n",
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replicas: three}\n",
		"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec: {endpoint: []}\n",
		"apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n",
	} {
		if _, err := decodeAll([]byte(doc)); err == nil {
			t.Errorf("decoded without error:\n%s", doc)
		}
	}
}

// TestHelmRefusesBadValues: values that would deploy something broken fail rendering with a
// message naming the value.
func TestHelmRefusesBadValues(t *testing.T) {
	for _, tt := range []struct{ name, values, want string }{
		{"unknown journal", "journal: {type: memory}", "journal"},
		{"image latest", "image: {tag: latest}", "latest"},
		{"postgres with the local CA's ledger", "journal: {type: postgres}", "caConnections.corp-ca"},
		{"instance id in config", "config: {instanceId: a}", "instanceId"},
		{"verified access without profiles", "verifiedAccess: {enabled: true}\nconfig: {customers: [C0]}", "verifiedAccess.profiles"},
		{"postgres without its secret", "journal: {type: postgres, postgres: {existingSecret: ''}}\nconfig: {caConnections: {corp-ca: {ledgerFile: null}}}", "journal.postgres.existingSecret"},
		{"misspelt value", "replica: 3", "replica"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := helmTemplate(t, tt.values)
			if err == nil {
				t.Fatalf("rendered:\n%s", out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not mention %q: %v", tt.want, err)
			}
		})
	}
}

// TestHelmLint runs `helm lint --strict` on the chart.
func TestHelmLint(t *testing.T) {
	if out, err := helm(t, "lint", "--strict", chartDir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
