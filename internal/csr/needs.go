package csr

import (
	"slices"
	"text/template/parse"
)

// Needs says which Directory records a profile's templates read, so that a profile that uses
// none never calls the Directory API.
type Needs struct {
	Device bool // .Device.Directory
	User   bool // .User.Directory
}

// Any reports whether either record is needed.
func (n Needs) Any() bool { return n.Device || n.User }

// Or is the union of n and o.
func (n Needs) Or(o Needs) Needs { return Needs{Device: n.Device || o.Device, User: n.User || o.User} }

// Needs reports which Directory records t's templates read. It is decided once, at Compile, from
// the parsed templates, and errs on the side of reading: a reference the reading cannot place
// ({{with .Device}}{{.Directory.AssetID}}{{end}}, {{.}}) counts as needing the records it may
// reach.
func (t *Template) Needs() Needs { return t.needs }

func (t *Template) directoryNeeds() Needs {
	var n Needs
	visit := func(f *field) {
		if f != nil && f.tmpl.Tree != nil {
			n = n.Or(treeNeeds(f.tmpl.Tree.Root))
		}
	}
	for _, f := range []*field{t.commonName, t.locality, t.province, t.country} {
		visit(f)
	}
	for _, fs := range [][]field{t.organization, t.organizationalUnit, t.dns, t.email, t.uri, t.upn} {
		for i := range fs {
			visit(&fs[i])
		}
	}
	return n
}

// treeNeeds reads a template for the records it needs, conditional parts included: a reference
// in an {{if}} is read when the condition holds, so the record must be at hand.
func treeNeeds(root *parse.ListNode) Needs {
	w := &needsWalker{}
	w.list(root, needsCtx{rooted: true, dot: bothRecords})
	return w.out
}

var bothRecords = Needs{Device: true, User: true}

// needsCtx is where a node sits: whether dot is the top of TemplateData, and which records dot's
// value carries (a struct printed whole, or passed to a function, is read whole).
type needsCtx struct {
	rooted bool
	dot    Needs
}

type needsWalker struct{ out Needs }

func (w *needsWalker) list(l *parse.ListNode, c needsCtx) {
	if l == nil {
		return
	}
	for _, n := range l.Nodes {
		w.node(n, c)
	}
}

func (w *needsWalker) node(n parse.Node, c needsCtx) {
	switch x := n.(type) {
	case *parse.ActionNode:
		w.pipe(x.Pipe, c, true)
	case *parse.IfNode:
		w.pipe(x.Pipe, c, false)
		w.list(x.List, c)
		w.list(x.ElseList, c)
	case *parse.WithNode:
		dot := w.pipe(x.Pipe, c, false)
		w.list(x.List, needsCtx{dot: dot})
		w.list(x.ElseList, c)
	case *parse.RangeNode:
		dot := w.pipe(x.Pipe, c, false)
		w.list(x.List, needsCtx{dot: dot})
		w.list(x.ElseList, c)
	case *parse.TemplateNode:
		w.pipe(x.Pipe, c, true)
	}
}

// pipe records what p needs and returns what its value carries. used says the value is printed
// or stored in a variable, whose later uses are not followed: then what it carries is needed.
func (w *needsWalker) pipe(p *parse.PipeNode, c needsCtx, used bool) Needs {
	if p == nil {
		return Needs{}
	}
	used = used || len(p.Decl) > 0
	var carried Needs
	for i, cmd := range p.Cmds {
		last := i == len(p.Cmds)-1
		if len(cmd.Args) == 1 {
			if _, fn := cmd.Args[0].(*parse.IdentifierNode); !fn {
				carried = w.value(cmd.Args[0], c)
				if !last || used {
					w.out = w.out.Or(carried) // passed on to the next command, or printed
				}
				continue
			}
		}
		// A function call: every argument is read whole, and the helpers return strings.
		for _, a := range cmd.Args {
			w.out = w.out.Or(w.value(a, c))
		}
		carried = Needs{}
	}
	return carried
}

// value records what reading a is needs and returns what a's value carries.
func (w *needsWalker) value(a parse.Node, c needsCtx) Needs {
	switch x := a.(type) {
	case *parse.DotNode:
		return c.dot
	case *parse.FieldNode:
		return w.chain(x.Ident, c)
	case *parse.VariableNode:
		if len(x.Ident) > 0 && x.Ident[0] == "$" {
			return w.chain(x.Ident[1:], needsCtx{rooted: true, dot: bothRecords})
		}
		if slices.Contains(x.Ident, "Directory") {
			w.out = w.out.Or(bothRecords) // a variable's value is not followed
		}
		return Needs{}
	case *parse.ChainNode:
		if p, ok := x.Node.(*parse.PipeNode); ok {
			w.pipe(p, c, true)
		} else {
			w.out = w.out.Or(w.value(x.Node, c))
		}
		if slices.Contains(x.Field, "Directory") {
			w.out = w.out.Or(bothRecords)
		}
		return Needs{}
	case *parse.PipeNode:
		w.pipe(x, c, true)
	}
	return Needs{}
}

// chain records what a field chain from dot needs and returns what its value carries. From the
// top, .Device.Directory.AssetID needs the device record and carries nothing; .Device carries it
// (needed only if printed or passed whole). Below the top (in with or range) a chain is placed
// by what dot carries.
func (w *needsWalker) chain(idents []string, c needsCtx) Needs {
	if !c.rooted {
		if slices.Contains(idents, "Directory") {
			if c.dot.Any() {
				w.out = w.out.Or(c.dot)
			} else {
				w.out = w.out.Or(bothRecords)
			}
		}
		return c.dot
	}
	if len(idents) == 0 {
		return bothRecords // $ alone: the whole data
	}
	var rec Needs
	switch idents[0] {
	case "Device":
		rec = Needs{Device: true}
	case "User":
		rec = Needs{User: true}
	default:
		return Needs{}
	}
	switch {
	case len(idents) == 1:
		return rec
	case idents[1] != "Directory":
		return Needs{}
	}
	w.out = w.out.Or(rec)
	if len(idents) == 2 {
		return rec
	}
	return Needs{}
}
