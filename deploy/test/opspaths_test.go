package deploytest

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"path/filepath"
	"sync"
	"testing"
)

// opsEndpoints are the daemon's ops listener port and paths, read from internal/ops/paths.go.
// A nested module cannot import another module's internal packages, so the test type-checks
// that one file and takes the constants' values from the Go type checker: one source of truth,
// nothing generated to keep in sync, and any change there is seen here at once.
type opsEndpoints struct {
	Port                     int
	Healthz, Readyz, Metrics string
	Status                   string
}

var (
	opsOnce sync.Once
	opsVal  opsEndpoints
	opsErr  error
)

func ops(t *testing.T) opsEndpoints {
	t.Helper()
	opsOnce.Do(func() { opsVal, opsErr = readOps(repoPath("internal", "ops", "paths.go")) })
	if opsErr != nil {
		t.Fatal(opsErr)
	}
	return opsVal
}

func readOps(path string) (opsEndpoints, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return opsEndpoints{}, err
	}
	// Only the standard library may be imported there; in practice nothing is.
	conf := types.Config{Importer: importer.Default()}
	pkg, err := conf.Check("ops", fset, []*ast.File{f}, nil)
	if err != nil {
		return opsEndpoints{}, fmt.Errorf("type-check %s: %w", path, err)
	}
	lookup := func(name string, kind constant.Kind) (constant.Value, error) {
		c, ok := pkg.Scope().Lookup(name).(*types.Const)
		if !ok {
			return nil, fmt.Errorf("%s: no constant %s", filepath.Base(path), name)
		}
		if c.Val().Kind() != kind {
			return nil, fmt.Errorf("%s: %s is %s, want %s", filepath.Base(path), name, c.Val().Kind(), kind)
		}
		return c.Val(), nil
	}
	var e opsEndpoints
	port, err := lookup("DefaultPort", constant.Int)
	if err != nil {
		return e, err
	}
	p, _ := constant.Int64Val(port)
	e.Port = int(p)
	for name, dst := range map[string]*string{"PathHealthz": &e.Healthz, "PathReadyz": &e.Readyz, "PathMetrics": &e.Metrics, "PathStatus": &e.Status} {
		v, err := lookup(name, constant.String)
		if err != nil {
			return e, err
		}
		*dst = constant.StringVal(v)
	}
	return e, nil
}

func TestOpsEndpointsAreReadFromTheDaemon(t *testing.T) {
	e := ops(t)
	if e.Port <= 0 || e.Port > 65535 {
		t.Errorf("DefaultPort %d is not a port", e.Port)
	}
	for _, p := range []string{e.Healthz, e.Readyz, e.Metrics, e.Status} {
		if len(p) < 2 || p[0] != '/' {
			t.Errorf("ops path %q is not an absolute URL path", p)
		}
	}
}
