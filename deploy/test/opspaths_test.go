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
	"time"
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

// daemonDefaults are the daemon's defaults the manifests must agree with, read from
// internal/config/defaults.go as the ops endpoints are.
type daemonDefaults struct {
	ShutdownGrace time.Duration // shutdownGracePeriod; terminationGracePeriodSeconds must exceed it
}

var (
	defaultsOnce sync.Once
	defaultsVal  daemonDefaults
	defaultsErr  error
)

func defaults(t *testing.T) daemonDefaults {
	t.Helper()
	defaultsOnce.Do(func() {
		v, err := daemonConst(repoPath("internal", "config", "defaults.go"), "DefaultShutdownGracePeriod")
		if err != nil {
			defaultsErr = err
			return
		}
		ns, ok := constant.Int64Val(v)
		if !ok || ns <= 0 {
			defaultsErr = fmt.Errorf("DefaultShutdownGracePeriod %v is not a positive duration", v)
			return
		}
		defaultsVal.ShutdownGrace = time.Duration(ns)
	})
	if defaultsErr != nil {
		t.Fatal(defaultsErr)
	}
	return defaultsVal
}

// daemonConst returns the value of one constant declared in a file of the daemon's module, for
// the defaults that the manifests must agree with. Only that declaration is type-checked, in a
// file of its own with the original's imports, so that it may use the standard library (25 *
// time.Second) but not the rest of its package, which this module cannot build.
func daemonConst(path, name string) (constant.Value, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return nil, err
	}
	var spec *ast.ValueSpec
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name == name && i < len(vs.Values) {
					spec = &ast.ValueSpec{Names: []*ast.Ident{ast.NewIdent(name)}, Type: vs.Type, Values: []ast.Expr{vs.Values[i]}}
				}
			}
		}
	}
	if spec == nil {
		return nil, fmt.Errorf("%s: no constant %s with an explicit value", filepath.Base(path), name)
	}
	one := &ast.File{Name: ast.NewIdent("x"), Decls: []ast.Decl{&ast.GenDecl{Tok: token.CONST, Specs: []ast.Spec{spec}}}}
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.IMPORT {
			one.Decls = append([]ast.Decl{g}, one.Decls...)
		}
	}
	conf := types.Config{Importer: importer.Default(), Error: func(error) {}} // unused imports are fine
	pkg, _ := conf.Check("x", fset, []*ast.File{one}, nil)
	c, ok := pkg.Scope().Lookup(name).(*types.Const)
	if !ok || c.Val().Kind() == constant.Unknown {
		_, err := (&types.Config{Importer: importer.Default()}).Check("x", fset, []*ast.File{one}, nil)
		return nil, fmt.Errorf("%s: constant %s: not a value of the standard library's constants alone: %v", filepath.Base(path), name, err)
	}
	return c.Val(), nil
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
