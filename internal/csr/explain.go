package csr

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
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
	names := make([]string, 0, len(templateFuncs()))
	for n := range templateFuncs() {
		names = append(names, n)
	}
	sort.Strings(names)
	if s := suggest.Closest(m[1], names); s != "" {
		return fmt.Errorf("template: function %q not defined; did you mean %q?", m[1], s)
	}
	return fmt.Errorf("template: function %q not defined (the functions are %s)", m[1], strings.Join(names, ", "))
}
