package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// repoPath names a file of the repository from this module's directory.
func repoPath(elem ...string) string {
	return filepath.Join(append([]string{"..", ".."}, elem...)...)
}

// objects is one rendering (a kustomize overlay, a helm template run), decoded into the API
// types. Every kind the manifests may contain is listed here: anything else is an error.
type objects struct {
	Namespaces      []*corev1.Namespace
	ServiceAccounts []*corev1.ServiceAccount
	ConfigMaps      []*corev1.ConfigMap
	Services        []*corev1.Service
	PVCs            []*corev1.PersistentVolumeClaim
	StatefulSets    []*appsv1.StatefulSet
	Deployments     []*appsv1.Deployment
	PDBs            []*policyv1.PodDisruptionBudget
	ServiceMonitors []*monitoringv1.ServiceMonitor
}

// decodeAll splits a multi-document YAML stream and decodes every document strictly: an
// unknown or misspelt field, a duplicate key or a value of the wrong type is an error, as is
// a kind that is not in objects.
func decodeAll(stream []byte) (*objects, error) {
	out := &objects{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if err := out.add(tm, doc); err != nil {
			return nil, fmt.Errorf("document %d (%s %s): %w", i, tm.APIVersion, tm.Kind, err)
		}
	}
}

func (o *objects) add(tm metav1.TypeMeta, doc []byte) error {
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/Namespace":
		return decodeInto(doc, &o.Namespaces)
	case "v1/ServiceAccount":
		return decodeInto(doc, &o.ServiceAccounts)
	case "v1/ConfigMap":
		return decodeInto(doc, &o.ConfigMaps)
	case "v1/Service":
		return decodeInto(doc, &o.Services)
	case "v1/PersistentVolumeClaim":
		return decodeInto(doc, &o.PVCs)
	case "apps/v1/StatefulSet":
		return decodeInto(doc, &o.StatefulSets)
	case "apps/v1/Deployment":
		return decodeInto(doc, &o.Deployments)
	case "policy/v1/PodDisruptionBudget":
		return decodeInto(doc, &o.PDBs)
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return decodeInto(doc, &o.ServiceMonitors)
	default:
		return errors.New("unexpected kind: add it to objects, with its API type")
	}
}

func decodeInto[T any](doc []byte, list *[]*T) error {
	v := new(T)
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// stripComments drops comment-only lines, so that a document of comments counts as empty.
func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}
