// Package deploytest tests what the repository ships for deployment: the Dockerfile's build,
// the Kubernetes manifests (kustomize), the Helm chart, the systemd unit and the release
// archives. It is a module of its own so that the daemon's go.mod does not pull Helm and the
// Kubernetes libraries; `make test` runs it (`cd deploy/test && go test ./...`).
//
// Run from this directory; paths are relative to it. Helm is the pinned Go tool of this module
// (`go tool helm`), kustomize runs in process (sigs.k8s.io/kustomize/api/krusty).
package deploytest
