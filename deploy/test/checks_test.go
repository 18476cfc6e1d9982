package deploytest

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	psaapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// The contract every rendering must keep, whatever tool produced it.
const (
	containerName   = "adapter"
	runtimeUID      = 65532 // distroless "nonroot", owner of /var/lib/certprov in the image
	gracePeriod     = 30    // above the daemon's shutdownGracePeriod (25 s)
	dataDir         = "/var/lib/certprov"
	vaPort          = 8443
	vaPortName      = "verified-access"
	opsPortName     = "ops"
	configKey       = "adapter.yaml"
	workloadIDAnnot = "iam.gke.io/gcp-service-account"
)

// expect says what one rendering should contain.
type expect struct {
	mode             string // "sqlite" (StatefulSet) or "postgres" (Deployment)
	verifiedAccess   bool
	serviceMonitor   bool
	namespace        bool // the rendering creates the namespace (kustomize)
	workloadIdentity bool
	pdb              bool
}

// workload is the one StatefulSet or Deployment of a rendering, reduced to what the checks need.
type workload struct {
	kind     string
	name     string
	tpl      *corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim // StatefulSet volumeClaimTemplates
	service  string                         // StatefulSet serviceName
	replicas int32
}

// check returns every way the rendering breaks the contract; none means it keeps it.
func check(o *objects, e expect, ep opsEndpoints, d daemonDefaults) []string {
	var ps []string
	add := func(format string, args ...any) { ps = append(ps, fmt.Sprintf(format, args...)) }

	w, err := theWorkload(o, e.mode)
	if err != nil {
		return []string{err.Error()}
	}
	tpl := w.tpl
	c := findContainer(tpl.Spec.Containers, containerName)
	if c == nil {
		return []string{fmt.Sprintf("%s %s: no container %q", w.kind, w.name, containerName)}
	}
	ps = append(ps, checkPodSecurity(tpl)...)
	ps = append(ps, checkProbesAndPorts(c, ep)...)

	if g := tpl.Spec.TerminationGracePeriodSeconds; g == nil || *g != gracePeriod {
		add("terminationGracePeriodSeconds: want %d, got %v", gracePeriod, deref(g))
	}
	if _, tag, ok := imageTag(c.Image); !ok || tag == "latest" {
		add("image %q: pin a version tag (not latest)", c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		add("resources: cpu and memory requests and a memory limit are required, got %v", c.Resources)
	}

	// Journal mode.
	env := envMap(c)
	switch e.mode {
	case "sqlite":
		id := env["CERTPROV_INSTANCEID"]
		if id.ValueFrom == nil || id.ValueFrom.FieldRef == nil || id.ValueFrom.FieldRef.FieldPath != "metadata.name" {
			add("sqlite: CERTPROV_INSTANCEID must come from the pod name (fieldRef metadata.name), got %+v", id)
		}
		if t := env["CERTPROV_JOURNAL_TYPE"].Value; t != "" && t != "sqlite" {
			add("sqlite: CERTPROV_JOURNAL_TYPE is %q", t)
		}
		if len(w.claims) == 0 {
			add("sqlite: the StatefulSet has no volumeClaimTemplate for the journal")
		}
	case "postgres":
		if id := env["CERTPROV_INSTANCEID"]; id.Value == "" || id.ValueFrom != nil {
			add("postgres: CERTPROV_INSTANCEID must be one literal id shared by all replicas, got %+v", id)
		}
		if t := env["CERTPROV_JOURNAL_TYPE"].Value; t != "postgres" {
			add("postgres: CERTPROV_JOURNAL_TYPE is %q, want postgres", t)
		}
		dsn := env["CERTPROV_JOURNAL_DSN"]
		if dsn.ValueFrom == nil || dsn.ValueFrom.SecretKeyRef == nil {
			add("postgres: CERTPROV_JOURNAL_DSN must come from a Secret (secretKeyRef), got %+v", dsn)
		}
		if w.replicas < 2 {
			add("postgres: %d replicas; the shared journal is there for several", w.replicas)
		}
	}
	if want := fmt.Sprintf(":%d", ep.Port); env["CERTPROV_OPS_LISTEN"].Value != want {
		add("CERTPROV_OPS_LISTEN: want %q on every interface, got %q", want, env["CERTPROV_OPS_LISTEN"].Value)
	}

	// Volumes: every mount has its volume, and every path the configuration names lies on one.
	mounts := mountTable(w, o)
	for _, m := range c.VolumeMounts {
		if _, ok := mounts[m.MountPath]; !ok {
			add("volumeMount %q at %s: no such volume or claim template", m.Name, m.MountPath)
		}
	}
	ps = append(ps, checkConfig(o, w, c, mounts, e, d)...)

	// Verified Access: served exactly when asked for.
	hasVAPort := slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == vaPortName && p.ContainerPort == vaPort })
	vaEnabled := env["CERTPROV_VERIFIEDACCESS_ENABLED"].Value == "true"
	if hasVAPort != e.verifiedAccess || vaEnabled != e.verifiedAccess {
		add("verified access: want served=%v, got container port %v and CERTPROV_VERIFIEDACCESS_ENABLED=%v", e.verifiedAccess, hasVAPort, vaEnabled)
	}

	ps = append(ps, checkServices(o, w, c, e, ep)...)

	// Identity.
	sa := findByName(o.ServiceAccounts, tpl.Spec.ServiceAccountName, func(s *corev1.ServiceAccount) string { return s.Name })
	switch {
	case tpl.Spec.ServiceAccountName == "" || sa == nil:
		add("serviceAccountName %q: no such ServiceAccount in the rendering", tpl.Spec.ServiceAccountName)
	case e.workloadIdentity && !strings.HasSuffix(sa.Annotations[workloadIDAnnot], ".iam.gserviceaccount.com"):
		add("ServiceAccount %s: want a Workload Identity annotation %s, got %q", sa.Name, workloadIDAnnot, sa.Annotations[workloadIDAnnot])
	}

	// Disruption budget.
	switch {
	case !e.pdb && len(o.PDBs) != 0:
		add("%d PodDisruptionBudgets, want none", len(o.PDBs))
	case e.pdb && len(o.PDBs) != 1:
		add("%d PodDisruptionBudgets, want 1", len(o.PDBs))
	case e.pdb:
		pdb := o.PDBs[0]
		if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, tpl.Labels) {
			add("PodDisruptionBudget %s does not select the pods", pdb.Name)
		}
		if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
			add("PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", pdb.Name)
		}
	}

	// Namespace with Pod Security "restricted" enforced.
	if e.namespace {
		if len(o.Namespaces) != 1 {
			add("%d Namespaces, want 1", len(o.Namespaces))
		} else if ns := o.Namespaces[0]; ns.Labels["pod-security.kubernetes.io/enforce"] != string(psaapi.LevelRestricted) {
			add("Namespace %s: label pod-security.kubernetes.io/enforce is %q, want restricted", ns.Name, ns.Labels["pod-security.kubernetes.io/enforce"])
		} else {
			for _, n := range namespacedNames(o) {
				if n[1] != ns.Name {
					add("%s is in namespace %q, not %q", n[0], n[1], ns.Name)
				}
			}
		}
	}
	return ps
}

func theWorkload(o *objects, mode string) (*workload, error) {
	switch {
	case mode == "sqlite" && len(o.StatefulSets) == 1 && len(o.Deployments) == 0:
		s := o.StatefulSets[0]
		return &workload{kind: "StatefulSet", name: s.Name, tpl: &s.Spec.Template, claims: s.Spec.VolumeClaimTemplates, service: s.Spec.ServiceName, replicas: deref(s.Spec.Replicas)}, nil
	case mode == "postgres" && len(o.Deployments) == 1 && len(o.StatefulSets) == 0:
		d := o.Deployments[0]
		return &workload{kind: "Deployment", name: d.Name, tpl: &d.Spec.Template, replicas: deref(d.Spec.Replicas)}, nil
	}
	return nil, fmt.Errorf("journal %s: want one %s, got %d StatefulSets and %d Deployments",
		mode, map[string]string{"sqlite": "StatefulSet", "postgres": "Deployment"}[mode], len(o.StatefulSets), len(o.Deployments))
}

// checkPodSecurity runs the Pod Security admission's own "restricted" checks (the code the API
// server runs), then the stricter choices of this project that "restricted" leaves open.
func checkPodSecurity(tpl *corev1.PodTemplateSpec) []string {
	var ps []string
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return []string{err.Error()}
	}
	lv := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, r := range eval.EvaluatePod(lv, &tpl.ObjectMeta, &tpl.Spec) {
		if !r.Allowed {
			ps = append(ps, fmt.Sprintf("pod security restricted: %s (%s)", r.ForbiddenReason, r.ForbiddenDetail))
		}
	}
	sc := tpl.Spec.SecurityContext
	if sc == nil || !deref(sc.RunAsNonRoot) || deref(sc.RunAsUser) != runtimeUID || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		ps = append(ps, fmt.Sprintf("pod securityContext: want runAsNonRoot, runAsUser %d and seccompProfile RuntimeDefault, got %s", runtimeUID, show(sc)))
	}
	for _, c := range tpl.Spec.Containers {
		csc := c.SecurityContext
		if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation || !deref(csc.ReadOnlyRootFilesystem) ||
			csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(csc.Capabilities.Add) != 0 {
			ps = append(ps, fmt.Sprintf("container %s securityContext: want allowPrivilegeEscalation false, readOnlyRootFilesystem, capabilities drop [ALL] and none added, got %s", c.Name, show(csc)))
		}
	}
	return ps
}

// checkProbesAndPorts: the probes call the paths the ops listener serves, on its port.
func checkProbesAndPorts(c *corev1.Container, ep opsEndpoints) []string {
	var ps []string
	port := findPort(c, intstr.FromString(opsPortName))
	if port == nil || port.ContainerPort != int32(ep.Port) {
		ps = append(ps, fmt.Sprintf("container port %q: want %d, got %s", opsPortName, ep.Port, show(port)))
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, ep.Healthz},
		{"livenessProbe", c.LivenessProbe, ep.Healthz},
		{"readinessProbe", c.ReadinessProbe, ep.Readyz},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			ps = append(ps, fmt.Sprintf("%s: want an HTTP GET of %s, got %s", p.name, p.path, show(p.probe)))
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path || findPort(c, g.Port) != port {
			ps = append(ps, fmt.Sprintf("%s: want GET %s on port %s, got GET %s on %s", p.name, p.path, opsPortName, g.Path, g.Port.String()))
		}
	}
	return ps
}

// checkServices: the Services select the pods and reach ports the container has; the headless
// one backs the StatefulSet; the ServiceMonitor scrapes the metrics path through them.
func checkServices(o *objects, w *workload, c *corev1.Container, e expect, ep opsEndpoints) []string {
	var ps []string
	var headless, metrics, va *corev1.Service
	for _, s := range o.Services {
		if !selects(s.Spec.Selector, w.tpl.Labels) {
			ps = append(ps, fmt.Sprintf("Service %s: selector %v does not select the pods (labels %v)", s.Name, s.Spec.Selector, w.tpl.Labels))
		}
		for _, p := range s.Spec.Ports {
			cp := findPort(c, p.TargetPort)
			switch {
			case cp == nil:
				ps = append(ps, fmt.Sprintf("Service %s port %s: targetPort %s is not a container port", s.Name, p.Name, p.TargetPort.String()))
			case cp.Name == opsPortName && s.Spec.ClusterIP == corev1.ClusterIPNone:
				headless = s
			case cp.Name == opsPortName:
				metrics = s
			case cp.ContainerPort == vaPort:
				va = s
			}
		}
	}
	if headless == nil {
		ps = append(ps, "no headless Service (clusterIP None) on the ops port")
	}
	if w.kind == "StatefulSet" && (headless == nil || w.service != headless.Name) {
		ps = append(ps, fmt.Sprintf("StatefulSet serviceName %q is not the headless Service", w.service))
	}
	if metrics == nil {
		ps = append(ps, "no Service for metrics on the ops port")
	}
	if (va != nil) != e.verifiedAccess {
		ps = append(ps, fmt.Sprintf("Verified Access Service present=%v, want %v", va != nil, e.verifiedAccess))
	}
	if len(o.ServiceMonitors) != map[bool]int{true: 1}[e.serviceMonitor] {
		return append(ps, fmt.Sprintf("%d ServiceMonitors, want serviceMonitor=%v", len(o.ServiceMonitors), e.serviceMonitor))
	}
	for _, sm := range o.ServiceMonitors {
		if metrics == nil || !selects(sm.Spec.Selector.MatchLabels, metrics.Labels) {
			ps = append(ps, fmt.Sprintf("ServiceMonitor %s: selector %v does not select the metrics Service", sm.Name, sm.Spec.Selector.MatchLabels))
			continue
		}
		if len(sm.Spec.Endpoints) != 1 {
			ps = append(ps, fmt.Sprintf("ServiceMonitor %s: %d endpoints, want 1", sm.Name, len(sm.Spec.Endpoints)))
			continue
		}
		end := sm.Spec.Endpoints[0]
		if end.Path != ep.Metrics || !slices.ContainsFunc(metrics.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == end.Port }) {
			ps = append(ps, fmt.Sprintf("ServiceMonitor %s: want path %s on a port of Service %s, got path %q port %q", sm.Name, ep.Metrics, metrics.Name, end.Path, end.Port))
		}
	}
	return ps
}

// mount is where a volume appears in the container, and whether the adapter may write there
// durably (a PersistentVolumeClaim, mounted read-write).
type mount struct {
	volume     string
	durable    bool
	readOnly   bool
	secretName string
	configMap  string
}

// mountTable maps each of the container's mount paths to its volume.
func mountTable(w *workload, o *objects) map[string]mount {
	vols := map[string]corev1.Volume{}
	for _, v := range w.tpl.Spec.Volumes {
		vols[v.Name] = v
	}
	claims := map[string]bool{}
	for _, t := range w.claims {
		claims[t.Name] = true
	}
	c := findContainer(w.tpl.Spec.Containers, containerName)
	out := map[string]mount{}
	for _, m := range c.VolumeMounts {
		mt := mount{volume: m.Name, readOnly: m.ReadOnly}
		switch v, ok := vols[m.Name]; {
		case claims[m.Name]:
			mt.durable = !m.ReadOnly
		case !ok:
			continue
		case v.PersistentVolumeClaim != nil:
			mt.durable = !m.ReadOnly
		case v.Secret != nil:
			mt.secretName = v.Secret.SecretName
		case v.ConfigMap != nil:
			mt.configMap = v.ConfigMap.Name
		}
		out[m.MountPath] = mt
	}
	return out
}

// mountOf returns the mount path under which p lies (the longest such), if any.
func mountOf(mounts map[string]mount, p string) (string, bool) {
	best := ""
	for mp := range mounts {
		if (p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	return best, best != ""
}

// checkConfig: the ConfigMap holds the file the container is told to read, and every file the
// configuration names is on a volume: the journal and the CA ledger on a durable one (an image
// layer or emptyDir would forget them), certificates and keys on a mounted Secret.
func checkConfig(o *objects, w *workload, c *corev1.Container, mounts map[string]mount, e expect, d daemonDefaults) []string {
	var ps []string
	cfgPath := configFlag(c.Args)
	mp, ok := mountOf(mounts, cfgPath)
	if !ok || mounts[mp].configMap == "" {
		return []string{fmt.Sprintf("--config %q is not on a ConfigMap volume", cfgPath)}
	}
	cm := findByName(o.ConfigMaps, mounts[mp].configMap, func(c *corev1.ConfigMap) string { return c.Name })
	if cm == nil {
		return []string{fmt.Sprintf("ConfigMap %q (mounted at %s) is not in the rendering", mounts[mp].configMap, mp)}
	}
	text, ok := cm.Data[strings.TrimPrefix(cfgPath, strings.TrimSuffix(mp, "/")+"/")]
	if !ok {
		return []string{fmt.Sprintf("ConfigMap %s has no key for %s", cm.Name, cfgPath)}
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		return []string{fmt.Sprintf("ConfigMap %s: %s: %v", cm.Name, configKey, err)}
	}
	ps = append(ps, checkShutdownGrace(cfg, envMap(c), w, d)...)
	if e.mode == "postgres" {
		conns, _ := cfg["caConnections"].(map[string]any)
		for _, n := range slices.Sorted(maps.Keys(conns)) {
			if cc, _ := conns[n].(map[string]any); cc["type"] == "local" && cc["ledgerFile"] != nil {
				ps = append(ps, fmt.Sprintf("postgres: caConnections.%s.ledgerFile: a ledger on one pod's disk cannot tell a replica that takes the process over what was issued; use a CA connection that recovers from the CA (webhook)", n))
			}
		}
	}
	writable, readable := configFiles(cfg, envMap(c), e)
	for _, f := range writable {
		if mp, ok := mountOf(mounts, f.path); !ok || !mounts[mp].durable {
			ps = append(ps, fmt.Sprintf("%s %s: not on a durable read-write volume (a restart would lose it)", f.key, f.path))
		}
	}
	for _, f := range readable {
		if _, ok := mountOf(mounts, f.path); !ok {
			ps = append(ps, fmt.Sprintf("%s %s: not on any mounted volume", f.key, f.path))
		}
	}
	return ps
}

// checkShutdownGrace: the kubelet waits terminationGracePeriodSeconds after SIGTERM before it
// kills the pod; the adapter must be done by then, so that period must exceed the adapter's
// shutdownGracePeriod (as the configuration or the environment sets it, or the daemon's
// default) by a few seconds for releasing leases and closing the journal.
func checkShutdownGrace(cfg map[string]any, env map[string]corev1.EnvVar, w *workload, d daemonDefaults) []string {
	const margin = 3 * time.Second
	grace, from := d.ShutdownGrace, "the daemon's default"
	if v, ok := cfg["shutdownGracePeriod"].(string); ok {
		grace, from = 0, "shutdownGracePeriod"
		if g, err := time.ParseDuration(v); err == nil {
			grace = g
		}
	}
	if v := env["CERTPROV_SHUTDOWNGRACEPERIOD"].Value; v != "" {
		grace, from = 0, "CERTPROV_SHUTDOWNGRACEPERIOD"
		if g, err := time.ParseDuration(v); err == nil {
			grace = g
		}
	}
	if grace <= 0 {
		return []string{fmt.Sprintf("%s: not a positive duration", from)}
	}
	term := time.Duration(deref(w.tpl.Spec.TerminationGracePeriodSeconds)) * time.Second
	if w.tpl.Spec.TerminationGracePeriodSeconds == nil {
		term = 30 * time.Second // Kubernetes' default
	}
	if term < grace+margin {
		return []string{fmt.Sprintf("terminationGracePeriodSeconds %s does not exceed shutdownGracePeriod %s (%s) by %s: the kubelet would kill the adapter before in-flight steps finish",
			term, grace, from, margin)}
	}
	return nil
}

type configFile struct{ key, path string }

// configFiles lists the files a configuration names, with environment overrides applied:
// those the adapter writes and those it only reads.
func configFiles(cfg map[string]any, env map[string]corev1.EnvVar, e expect) (writable, readable []configFile) {
	get := func(key string) string {
		envName := "CERTPROV_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if v := env[envName]; v.Value != "" {
			return v.Value
		}
		var cur any = cfg
		for _, part := range strings.Split(key, ".") {
			m, _ := cur.(map[string]any)
			cur = m[part]
		}
		s, _ := cur.(string)
		return s
	}
	if e.mode == "sqlite" {
		p := get("journal.path")
		if p == "" {
			p = path.Join(dataDir, "journal.db") // the daemon's default
		}
		writable = append(writable, configFile{"journal.path", p})
	}
	if p := get("google.credentials.file"); p != "" {
		readable = append(readable, configFile{"google.credentials.file", p})
	}
	if e.verifiedAccess {
		for _, k := range []string{"verifiedAccess.tls.certFile", "verifiedAccess.tls.keyFile"} {
			readable = append(readable, configFile{k, get(k)})
		}
	}
	conns, _ := cfg["caConnections"].(map[string]any)
	names := make([]string, 0, len(conns))
	for n := range conns {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, k := range []string{"ledgerFile", "certificateFile", "keyFile", "chainFile"} {
			key := "caConnections." + n + "." + k
			p := get(key)
			switch {
			case p == "":
			case k == "ledgerFile":
				writable = append(writable, configFile{key, p})
			default:
				readable = append(readable, configFile{key, p})
			}
		}
	}
	return writable, readable
}

// configFlag is the value of --config in the container's arguments.
func configFlag(args []string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
		if a == "--config" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

// findPort resolves a port reference (a name or a number) to the container's port.
func findPort(c *corev1.Container, ref intstr.IntOrString) *corev1.ContainerPort {
	for i, p := range c.Ports {
		if (ref.Type == intstr.String && p.Name == ref.StrVal) || (ref.Type == intstr.Int && p.ContainerPort == ref.IntVal) {
			return &c.Ports[i]
		}
	}
	return nil
}

func envMap(c *corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

// selects reports whether a non-empty selector matches the labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func findByName[T any](list []*T, name string, nameOf func(*T) string) *T {
	for _, x := range list {
		if nameOf(x) == name {
			return x
		}
	}
	return nil
}

// imageTag splits an image reference; ok is false when it has no tag.
func imageTag(ref string) (repo, tag string, ok bool) {
	ref, _, _ = strings.Cut(ref, "@")
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "", false
	}
	return ref[:i], ref[i+1:], ref[i+1:] != ""
}

// namespacedNames lists kind/name and namespace of every namespaced object.
func namespacedNames(o *objects) [][2]string {
	var out [][2]string
	addAll := func(kind string, metas ...[2]string) {
		for _, m := range metas {
			out = append(out, [2]string{kind + "/" + m[0], m[1]})
		}
	}
	for _, x := range o.ServiceAccounts {
		addAll("ServiceAccount", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.ConfigMaps {
		addAll("ConfigMap", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.Services {
		addAll("Service", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.PVCs {
		addAll("PersistentVolumeClaim", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.StatefulSets {
		addAll("StatefulSet", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.Deployments {
		addAll("Deployment", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.PDBs {
		addAll("PodDisruptionBudget", [2]string{x.Name, x.Namespace})
	}
	for _, x := range o.ServiceMonitors {
		addAll("ServiceMonitor", [2]string{x.Name, x.Namespace})
	}
	return out
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func show(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(string(b))
}
