// Package pagetest reads a rendered status page back for tests: the text of its elements and
// the rows of its tables, as a browser's DOM (Chromium's --dump-dom) or the server's answer
// parse with the HTML5 algorithm. Tests assert on what the page shows, not on template text.
package pagetest

import (
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// Page is a parsed document.
type Page struct {
	Root *html.Node
}

// Parse parses doc as a browser would.
func Parse(t testing.TB, doc string) *Page {
	t.Helper()
	root, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("parse the status page: %v", err)
	}
	return &Page{Root: root}
}

// Row is one row of a table body.
type Row struct {
	Node  *html.Node
	Attrs map[string]string // the row's attributes (data-process, data-state, …)
	Cells []string          // the text of each cell
	class map[string]string // the text of each cell by its classes
}

// Cell is the text of the row's cell that has class c ("" when none has).
func (r Row) Cell(c string) string { return r.class[c] }

// ByID returns the element with id, or nil.
func (p *Page) ByID(id string) *html.Node {
	var found *html.Node
	walk(p.Root, func(n *html.Node) bool {
		if n.Type == html.ElementNode && Attr(n, "id") == id {
			found = n
			return false
		}
		return true
	})
	return found
}

// Text is the text of the element with id, its white space collapsed; "" when there is none.
func (p *Page) Text(id string) string {
	n := p.ByID(id)
	if n == nil {
		return ""
	}
	return Text(n)
}

// Rows returns the rows of the tbody of the element with id (a table), or of every table in it
// (a section); nil when there is no such element.
func (p *Page) Rows(id string) []Row {
	n := p.ByID(id)
	if n == nil {
		return nil
	}
	var rows []Row
	walk(n, func(e *html.Node) bool {
		if e.Type != html.ElementNode || e.Data != "tr" || e.Parent == nil || e.Parent.Data != "tbody" {
			return true
		}
		r := Row{Node: e, Attrs: map[string]string{}, class: map[string]string{}}
		for _, a := range e.Attr {
			r.Attrs[a.Key] = a.Val
		}
		for c := e.FirstChild; c != nil; c = c.NextSibling {
			if c.Type != html.ElementNode || (c.Data != "td" && c.Data != "th") {
				continue
			}
			text := Text(c)
			r.Cells = append(r.Cells, text)
			for _, cl := range strings.Fields(Attr(c, "class")) {
				r.class[cl] = text
			}
		}
		rows = append(rows, r)
		return false
	})
	return rows
}

// All returns every element of the document.
func (p *Page) All() []*html.Node { return p.Elements("") }

// Elements returns every element named tag (script, img, …; "" for any) in the document.
func (p *Page) Elements(tag string) []*html.Node {
	var out []*html.Node
	walk(p.Root, func(n *html.Node) bool {
		if n.Type == html.ElementNode && (tag == "" || n.Data == tag) {
			out = append(out, n)
		}
		return true
	})
	return out
}

// Attr is the value of n's attribute key ("" when absent).
func Attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// Text is the text inside n, its white space collapsed.
func Text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(e *html.Node) bool {
		if e.Type == html.TextNode {
			b.WriteString(e.Data)
			b.WriteByte(' ')
		}
		return true
	})
	return strings.Join(strings.Fields(b.String()), " ")
}

// walk visits n and, when visit returns true for it, its descendants, depth first.
func walk(n *html.Node, visit func(*html.Node) bool) {
	if !visit(n) {
		return
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, visit)
	}
}
