// Package architecture holds no code: its test enforces, from `go list -deps -json` output, the
// rules between the project's packages that docs/architecture.md states (which package may
// import which). A change that breaks one fails `make test` with the rule and the import chain.
package architecture
