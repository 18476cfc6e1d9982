package config

import (
	"fmt"
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
