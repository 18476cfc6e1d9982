package deploytest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomize builds a kustomization directory in process, as `kubectl apply -k` would.
func kustomize(dir string) ([]byte, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	return m.AsYaml()
}

// kustomizeWith builds an overlay with the given components added to its kustomization.yaml,
// as deploy/kubernetes/README.md tells an operator to, in a copy of deploy/kubernetes.
func kustomizeWith(t *testing.T, overlay string, components ...string) ([]byte, error) {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "kubernetes")
	if err := os.CopyFS(tree, os.DirFS(kubernetesDir)); err != nil {
		t.Fatal(err)
	}
	kfile := filepath.Join(tree, "overlays", overlay, "kustomization.yaml")
	k, err := os.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	if len(components) > 0 {
		k = append(k, "components:\n"...)
		for _, c := range components {
			k = fmt.Appendf(k, "  - ../../components/%s\n", c)
		}
	}
	if err := os.WriteFile(kfile, k, 0o644); err != nil {
		t.Fatal(err)
	}
	return kustomize(filepath.Dir(kfile))
}

var (
	kubernetesDir = repoPath("deploy", "kubernetes")
	chartDir      = repoPath("deploy", "helm", "certprov-adapter")
)

// helm runs the module's pinned Helm (`go tool helm`) with its state in a temporary directory.
func helm(t *testing.T, args ...string) (stdout []byte, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command("go", append([]string{"tool", "helm"}, args...)...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes(), nil
}

// helmTemplate renders the chart with the given values file content, as `helm template`.
func helmTemplate(t *testing.T, values string) ([]byte, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return helm(t, "template", "certprov", chartDir, "--namespace", "certprov", "--values", f)
}
