package csr

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template/parse"

	"github.com/certprov/certprov-adapter/internal/suggest"
)

// FieldError is a problem with one key of a profile: a template that does not compile, a value
// that renders wrong. Field is the key below the profile ("subject.commonName",
// "subjectAltNames.dns[0]"), so that callers can report it at its full YAML path.
type FieldError struct {
	Field string
	Err   error
}

// Error renders "field: message".
func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the problem without its field.
func (e *FieldError) Unwrap() error { return e.Err }

// Path is the key; config.ProblemsAt reads it to build the full YAML path.
func (e *FieldError) Path() string { return e.Field }

// explainExec improves the error of executing a template on the sample data when a field
// reference is wrong: text/template says `can't evaluate field SerialNumbr in type
// csr.TemplateDevice`; this says `template: no field "SerialNumbr" in .Device; did you mean
// "SerialNumber"?`, from the fields the data really has. Other errors pass unchanged.
func explainExec(tree *parse.Tree, sample any, err error) error {
	if tree == nil || tree.Root == nil {
		return err
	}
	var found error
	walkFields(tree.Root, func(idents []string) bool {
		found = resolveFields(reflect.ValueOf(sample), idents)
		return found == nil
	})
	if found != nil {
		return found
	}
	return err
}

// walkFields calls visit with the field chain of every reference to the data in n (.A.B,
// $.A.B), until visit returns false. The bodies of range and with, where "." is something else,
// are skipped.
func walkFields(n parse.Node, visit func([]string) bool) bool {
	switch x := n.(type) {
	case *parse.ListNode:
		if x == nil {
			return true
		}
		for _, c := range x.Nodes {
			if !walkFields(c, visit) {
				return false
			}
		}
	case *parse.ActionNode:
		return walkFields(x.Pipe, visit)
	case *parse.PipeNode:
		if x == nil {
			return true
		}
		for _, c := range x.Cmds {
			if !walkFields(c, visit) {
				return false
			}
		}
	case *parse.CommandNode:
		for _, a := range x.Args {
			if !walkFields(a, visit) {
				return false
			}
		}
	case *parse.FieldNode:
		return visit(x.Ident)
	case *parse.VariableNode:
		if len(x.Ident) > 1 && x.Ident[0] == "$" {
			return visit(x.Ident[1:])
		}
	case *parse.ChainNode:
		if f, ok := x.Node.(*parse.FieldNode); ok {
			return visit(append(append([]string{}, f.Ident...), x.Field...))
		}
		return walkFields(x.Node, visit)
	case *parse.IfNode:
		return walkFields(x.Pipe, visit) && walkFields(x.List, visit) && walkFields(x.ElseList, visit)
	case *parse.RangeNode:
		return walkFields(x.Pipe, visit)
	case *parse.WithNode:
		return walkFields(x.Pipe, visit)
	}
	return true
}

// resolveFields follows idents from v and describes the first one v does not have.
func resolveFields(v reflect.Value, idents []string) error {
	at := ""
	for _, id := range idents {
		for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
			if v.IsNil() {
				return nil
			}
			v = v.Elem()
		}
		var names []string
		switch v.Kind() {
		case reflect.Struct:
			if f, ok := v.Type().FieldByName(id); ok && f.IsExported() {
				v = v.FieldByIndex(f.Index)
				at += "." + id
				continue
			}
			if v.MethodByName(id).IsValid() {
				return nil // a method: text/template knows better what is wrong with the call
			}
			for i := range v.NumField() {
				if f := v.Type().Field(i); f.IsExported() {
					names = append(names, f.Name)
				}
			}
		case reflect.Map:
			if v.Type().Key().Kind() != reflect.String {
				return nil
			}
			if e := v.MapIndex(reflect.ValueOf(id).Convert(v.Type().Key())); e.IsValid() {
				v = e
				at += "." + id
				continue
			}
			for _, k := range v.MapKeys() {
				names = append(names, k.String())
			}
			sort.Strings(names)
		default:
			return nil
		}
		where := at
		if where == "" {
			where = "."
		}
		msg := fmt.Sprintf("template: no field %q in %s", id, where)
		if s := suggest.Closest(id, names); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		} else if len(names) > 0 {
			msg += fmt.Sprintf(" (it has %s)", strings.Join(names, ", "))
		}
		return errors.New(msg)
	}
	return nil
}

// undefinedFunction finds the name in text/template's `function "lowr" not defined`.
var undefinedFunction = regexp.MustCompile(`function "([^"]+)" not defined`)

// explainParse adds the closest helper function to a parse error about an undefined one.
func explainParse(err error) error {
	m := undefinedFunction.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	names := slices.Sorted(maps.Keys(templateFuncs()))
	if s := suggest.Closest(m[1], names); s != "" {
		return fmt.Errorf("template: function %q not defined; did you mean %q?", m[1], s)
	}
	return fmt.Errorf("template: function %q not defined (the functions are %s)", m[1], strings.Join(names, ", "))
}

// EmptyError is a template that rendered empty where a value is needed — a subject alternative
// name, or a subject that names nobody. Err is the problem as the value check states it; Empty
// lists the data the template refers to that was empty (".DevicePermanentID"), in the order the
// template names them, so that the caller can say why its data lacked them.
type EmptyError struct {
	Err   error
	Empty []string
}

func (e *EmptyError) Error() string {
	switch len(e.Empty) {
	case 0:
		return e.Err.Error()
	case 1:
		return e.Err.Error() + " (" + e.Empty[0] + " is empty)"
	default:
		return e.Err.Error() + " (" + strings.Join(e.Empty, ", ") + " are empty)"
	}
}

func (e *EmptyError) Unwrap() error { return e.Err }

// emptyRefs lists the fields the template needs (.A.B) whose value in data is empty: a zero
// string, a nil or empty slice. A field is needed unless the template deals with its absence
// itself — inside if, with or range, or in a pipeline with default, or, and. References that go
// through a method are not followed.
func emptyRefs(tree *parse.Tree, data any) []string {
	if tree == nil || tree.Root == nil {
		return nil
	}
	var out []string
	neededFields(tree.Root, func(idents []string) {
		v := reflect.ValueOf(data)
		for _, id := range idents {
			for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
				if v.IsNil() {
					return
				}
				v = v.Elem()
			}
			if v.Kind() != reflect.Struct {
				return
			}
			f, ok := v.Type().FieldByName(id)
			if !ok || !f.IsExported() {
				return
			}
			v = v.FieldByIndex(f.Index)
		}
		if (v.Kind() == reflect.String || v.Kind() == reflect.Slice) && v.Len() == 0 {
			if ref := "." + strings.Join(idents, "."); !slices.Contains(out, ref) {
				out = append(out, ref)
			}
		}
	})
	return out
}

// neededFields calls visit with the field chain of every reference to the data in n that the
// output depends on unconditionally: not in if, with or range, nor in a pipeline that supplies
// a fallback (default, or, and).
func neededFields(n parse.Node, visit func([]string)) {
	switch x := n.(type) {
	case *parse.ListNode:
		if x == nil {
			return
		}
		for _, c := range x.Nodes {
			neededFields(c, visit)
		}
	case *parse.ActionNode:
		neededFields(x.Pipe, visit)
	case *parse.PipeNode:
		if x == nil {
			return
		}
		for _, c := range x.Cmds {
			if id, ok := c.Args[0].(*parse.IdentifierNode); ok && (id.Ident == "default" || id.Ident == "or" || id.Ident == "and") {
				return
			}
		}
		for _, c := range x.Cmds {
			for _, a := range c.Args {
				neededFields(a, visit)
			}
		}
	case *parse.FieldNode:
		visit(x.Ident)
	case *parse.VariableNode:
		if len(x.Ident) > 1 && x.Ident[0] == "$" {
			visit(x.Ident[1:])
		}
	case *parse.ChainNode:
		if f, ok := x.Node.(*parse.FieldNode); ok {
			visit(append(append([]string{}, f.Ident...), x.Field...))
		}
	}
}

// EmptyField is a key of a template and the data it needs that is empty (NeededEmpty).
type EmptyField struct {
	Field string // "subjectAltNames.uri[0]"
	Empty []string
}

// NeededEmpty lists, for each key of the template, the data of data it needs that is empty
// (see emptyRefs), in the order of the keys. Render leaves a subject value that renders empty
// out and renders "urn:device:" for "urn:device:{{.ID}}" without an ID; a caller whose data may
// lack values (a Verified Access verify result) refuses those instead, naming what was missing.
func (t *Template) NeededEmpty(data any) []EmptyField {
	var out []EmptyField
	add := func(f *field) {
		if f == nil {
			return
		}
		if refs := emptyRefs(f.tmpl.Tree, data); len(refs) > 0 {
			out = append(out, EmptyField{Field: f.name, Empty: refs})
		}
	}
	add(t.commonName)
	for i := range t.organization {
		add(&t.organization[i])
	}
	for i := range t.organizationalUnit {
		add(&t.organizationalUnit[i])
	}
	add(t.locality)
	add(t.province)
	add(t.country)
	for _, list := range [][]field{t.dns, t.email, t.uri, t.upn} {
		for i := range list {
			add(&list[i])
		}
	}
	return out
}
