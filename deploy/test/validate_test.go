package deploytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestShippedConfigIsValid runs the daemon's own `validate` on the configuration each rendering
// ships, as a pod would see it: its environment, and a copy of its file system where the
// ConfigMap and the Secrets that deploy/kubernetes/README.md documents are mounted at the
// manifests' mount paths. A misspelt key, a path no volume provides or a Secret key the
// configuration does not find fails here rather than in a crash-looping pod.
func TestShippedConfigIsValid(t *testing.T) {
	adapter := filepath.Join(imageBinaries(t), "certprov-adapter")
	for _, r := range renderings() {
		t.Run(r.name, func(t *testing.T) {
			out, err := r.render(t)
			if err != nil {
				t.Fatal(err)
			}
			o, err := decodeAll(out)
			if err != nil {
				t.Fatal(err)
			}
			w, err := theWorkload(o, r.expect.mode)
			if err != nil {
				t.Fatal(err)
			}
			root := t.TempDir()
			c := findContainer(w.tpl.Spec.Containers, containerName)
			podFS := mountPod(t, root, adapter, w, c, o)
			env := []string{"PATH=/usr/bin:/bin", "HOME=" + root}
			for _, e := range c.Env {
				env = append(env, e.Name+"="+podFS.rewrite(envValue(t, w, e)))
			}
			cmd := exec.Command(adapter, "validate", "--config", podFS.rewrite(configFlag(c.Args)))
			cmd.Env = env
			res, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(res), ": OK (") {
				t.Fatalf("validate: %v\n%s", err, res)
			}
		})
	}
}

// podFS is a directory standing for the container's file system at its mount points.
type podFS struct {
	root   string
	mounts []string
}

// rewrite maps an absolute path under a mount point into the directory; other values pass.
func (p podFS) rewrite(v string) string {
	for _, m := range p.mounts {
		if v == m || strings.HasPrefix(v, m+"/") {
			return filepath.Join(p.root, v)
		}
	}
	return v
}

// rewriteTree applies rewrite to every string of a decoded YAML tree.
func (p podFS) rewriteTree(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = p.rewriteTree(e)
		}
	case []any:
		for i, e := range x {
			x[i] = p.rewriteTree(e)
		}
	case string:
		return p.rewrite(x)
	}
	return v
}

// mountPod fills root with what the container would find at each mount: the ConfigMap's files
// (paths rewritten into root), each Secret's documented keys, empty directories for volumes.
func mountPod(t *testing.T, root, adapter string, w *workload, c *corev1.Container, o *objects) podFS {
	t.Helper()
	p := podFS{root: root}
	for _, m := range c.VolumeMounts {
		p.mounts = append(p.mounts, m.MountPath)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range w.tpl.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		v := vols[m.Name]
		switch {
		case v.ConfigMap != nil:
			cm := findByName(o.ConfigMaps, v.ConfigMap.Name, func(c *corev1.ConfigMap) string { return c.Name })
			if cm == nil {
				t.Fatalf("ConfigMap %s is not in the rendering", v.ConfigMap.Name)
			}
			for name, text := range cm.Data {
				var tree any
				if err := yaml.Unmarshal([]byte(text), &tree); err != nil {
					t.Fatalf("ConfigMap %s key %s: %v", cm.Name, name, err)
				}
				b, err := yaml.Marshal(p.rewriteTree(tree))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		case v.Secret != nil:
			writeSecret(t, adapter, v.Secret.SecretName, dir)
		}
	}
	return p
}

// writeSecret writes the keys deploy/kubernetes/README.md says each Secret holds.
func writeSecret(t *testing.T, adapter, name, dir string) {
	t.Helper()
	switch name {
	case "certprov-ca": // ca.crt, ca.key: the local CA, from init-ca
		if out, err := exec.Command(adapter, "init-ca", "--dir", dir).CombinedOutput(); err != nil {
			t.Fatalf("init-ca: %v\n%s", err, out)
		}
	case "certprov-ca-webhook": // tls-ca.crt, hmac.key, ca-certs.pem: the webhook CA connection
		ca := filepath.Join(t.TempDir(), "ca")
		if out, err := exec.Command(adapter, "init-ca", "--dir", ca).CombinedOutput(); err != nil {
			t.Fatalf("init-ca: %v\n%s", err, out)
		}
		root, err := os.ReadFile(filepath.Join(ca, "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "tls-ca.crt"), root)
		writeFile(t, filepath.Join(dir, "ca-certs.pem"), root)
		writeFile(t, filepath.Join(dir, "hmac.key"), []byte(strings.Repeat("0123456789abcdef", 4)+"\n"))
	case "certprov-verified-access-tls": // kubernetes.io/tls: tls.crt, tls.key
		certPEM, keyPEM := selfSigned(t)
		writeFile(t, filepath.Join(dir, corev1.TLSCertKey), certPEM)
		writeFile(t, filepath.Join(dir, corev1.TLSPrivateKeyKey), keyPEM)
	case "certprov-google-sa": // sa.json: a service-account key
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(map[string]string{
			"type":           "service_account",
			"project_id":     "my-project",
			"private_key_id": "0123456789abcdef",
			"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
			"client_email":   "certprov-adapter@my-project.iam.gserviceaccount.com",
			"client_id":      "123456789012345678901",
			"token_uri":      "https://oauth2.googleapis.com/token",
		})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "sa.json"), b)
	default:
		t.Fatalf("Secret %q: not documented in deploy/kubernetes/README.md (and unknown to this test)", name)
	}
	checkSecretDocumented(t, name, dir)
}

// checkSecretDocumented fails unless deploy/kubernetes/README.md has a row for the Secret in its
// table that names every key this test wrote for it, so that the table an operator follows
// cannot drift from what the configuration reads.
func checkSecretDocumented(t *testing.T, name, dir string) {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(kubernetesDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var row string
	for line := range strings.Lines(string(readme)) {
		if strings.HasPrefix(line, "| `"+name+"`") {
			row = line
		}
	}
	if row == "" {
		t.Fatalf("Secret %s: no row in deploy/kubernetes/README.md's table", name)
	}
	keys, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.Contains(row, "`"+k.Name()+"`") {
			t.Errorf("Secret %s: key %s is not in its row of deploy/kubernetes/README.md", name, k.Name())
		}
	}
}

// envValue resolves a container environment variable as the kubelet would for this test pod.
func envValue(t *testing.T, w *workload, e corev1.EnvVar) string {
	t.Helper()
	switch {
	case e.ValueFrom == nil:
		return e.Value
	case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
		return w.name + "-0"
	case e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "certprov-postgres" && e.ValueFrom.SecretKeyRef.Key == "dsn":
		// As deploy/kubernetes/README.md creates it: not loopback, so it must verify the server.
		return "postgres://certprov:PASSWORD@db.example.com:5432/certprov?sslmode=verify-full"
	}
	t.Fatalf("env %s: source %s is not documented in deploy/kubernetes/README.md", e.Name, show(e.ValueFrom))
	return ""
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "certprov-adapter-verified-access"},
		DNSNames:     []string{"certprov-adapter-verified-access.certprov.svc"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
