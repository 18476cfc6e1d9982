package config

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// Problem is one thing wrong with a configuration. Path is the YAML path of the offending key
// (for example "profiles.device-wifi.validity" or "customers[1]"), so that an operator can find it
// in the file; it is empty only for problems with the file as a whole.
type Problem struct {
	Path    string
	Message string
}

// String renders the problem as "path: message".
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ProblemsError is returned by Load when the configuration is wrong. It carries every problem
// found, not only the first, so that an operator can fix a file in one pass.
type ProblemsError struct {
	Problems []Problem
}

// Error lists every problem, one per line, as "path: message".
func (e *ProblemsError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// problems accumulates Problems while a configuration is decoded or validated.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// has reports whether a problem was already recorded at path, so that a value that failed to
// decode is not reported a second time by validation ("must be positive" after "invalid duration").
func (ps problems) has(path string) bool {
	for _, p := range ps {
		if p.Path == path {
			return true
		}
	}
	return false
}

// joinPath appends key to a dotted YAML path.
func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// indexPath names element i of the list at path.
func indexPath(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// keyed is an error about one key below some section: ca.SettingError ("url" of a CA
// connection), csr.FieldError ("subject.commonName" of a profile). Unwrap gives the message
// without the key.
type keyed interface {
	error
	Path() string
	Unwrap() error
}

// ProblemsAt turns err, the problems of the section at path (caConnections.corp,
// profiles.wifi), into Problems with full YAML paths: every error joined in err that names its
// key (a Path method) becomes a Problem at path.key, any other one a Problem at path. Wrapping
// around a keyed error, such as a connector's type and name, is dropped: the path says it.
func ProblemsAt(path string, err error) []Problem {
	var out []Problem
	for _, e := range leaves(err) {
		var k keyed
		if errors.As(e, &k) {
			out = append(out, Problem{Path: joinPath(path, k.Path()), Message: k.Unwrap().Error()})
			continue
		}
		out = append(out, Problem{Path: path, Message: e.Error()})
	}
	return out
}

// ProblemsIn lists the problems in err: those of every *ProblemsError joined in it, and one
// Problem per line of anything else (such messages start with their path already).
func ProblemsIn(err error) []Problem {
	var out []Problem
	for _, e := range leaves(err) {
		var pe *ProblemsError
		if errors.As(e, &pe) {
			out = append(out, pe.Problems...)
			continue
		}
		for _, line := range strings.Split(e.Error(), "\n") {
			out = append(out, Problem{Message: line})
		}
	}
	return out
}

// leaves lists the errors joined in err, looking through wrappers for joins (fmt.Errorf("%w")
// around errors.Join) but stopping at a keyed error or a *ProblemsError, which are leaves.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	var k keyed
	var pe *ProblemsError
	if (errors.As(err, &k) && error(k) == err) || (errors.As(err, &pe) && error(pe) == err) {
		return []error{err}
	}
	switch x := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range x.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if inner := leaves(x.Unwrap()); len(inner) > 1 {
			return inner
		}
	}
	return []error{err}
}

// PrintProblems writes the problems in err to w, one a line, each starting with file (the
// configuration file) and its YAML path: what `validate` and every command that loads the
// configuration print.
func PrintProblems(w io.Writer, file string, err error) {
	for _, p := range ProblemsIn(err) {
		if p.Path == "" {
			fmt.Fprintf(w, "%s: %s\n", file, p.Message)
			continue
		}
		fmt.Fprintf(w, "%s: %s: %s\n", file, p.Path, p.Message)
	}
}
