package endpoint

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Templates is a compiled set of route templates, matched with a segment trie. It is
// immutable after [Compile] (and [Templates.InternWith], if called) and safe for
// concurrent use. A nil *Templates matches nothing, so [Templates.Endpoint] only
// normalises.
type Templates struct {
	root node
	n    int
}

// node is one level of the segment trie.
type node struct {
	literals []edge // children by literal segment, sorted by it
	param    *node  // child for a {name} segment
	rest     string // template ending in a rest wildcard here, when hasRest
	hasRest  bool
	template string // template ending exactly here, when terminal
	terminal bool
}

// edge leads to the child of a literal segment.
type edge struct {
	seg   string
	child *node
}

// child returns the child of literal segment seg, or nil. Routes branch little at each
// level, so the few edges are scanned, which reads one or two cache lines where a map
// lookup would read its header, group and key; many are searched by halves.
func (n *node) child(seg string) *node {
	if len(n.literals) <= 8 {
		for i := range n.literals {
			if e := &n.literals[i]; e.seg == seg {
				return e.child
			}
		}
		return nil
	}
	if i, ok := slices.BinarySearchFunc(n.literals, seg, compareEdge); ok {
		return n.literals[i].child
	}
	return nil
}

func compareEdge(e edge, seg string) int { return strings.Compare(e.seg, seg) }

// Compile compiles route templates. A template is an absolute path of segments
// separated by single slashes ("/" alone is the root); a segment is
//
//   - a literal, matched exactly (case-sensitive), with no '{', '}' or '*' in it;
//   - {name}: exactly one path segment, whatever it is;
//   - only as the last segment, * or {name...}: the rest of the path, one or more
//     segments.
//
// Names are made of letters, digits, '_' and '-'; they document the template and do not
// change what it matches. Two templates that match the same paths (such as "/a/{x}" and
// "/a/{y}", or "/a/*" and "/a/{p...}") are an error, as is any malformed template; the
// error names the template and what is wrong.
//
// When several templates match a path, the most specific wins: comparing segment by
// segment from the left, a literal beats {name}, which beats a rest wildcard.
func Compile(templates []string) (*Templates, error) {
	t := &Templates{}
	for _, tmpl := range templates {
		if err := t.add(tmpl); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Len returns how many templates t holds.
func (t *Templates) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}

// segmentKind is what a template segment matches.
type segmentKind int

const (
	literalSegment segmentKind = iota
	paramSegment
	restSegment
)

func (t *Templates) add(tmpl string) error {
	if !strings.HasPrefix(tmpl, "/") {
		return fmt.Errorf("endpoint template %q: must be an absolute path starting with '/'", tmpl)
	}
	n := &t.root
	if tmpl != "/" {
		segs := strings.Split(tmpl[1:], "/")
		for i, seg := range segs {
			kind, err := parseSegment(seg)
			if err != nil {
				return fmt.Errorf("endpoint template %q: segment %d %q: %w", tmpl, i+1, seg, err)
			}
			switch kind {
			case restSegment:
				if i != len(segs)-1 {
					return fmt.Errorf("endpoint template %q: segment %d %q: a rest wildcard must be the last segment", tmpl, i+1, seg)
				}
				if n.hasRest {
					return fmt.Errorf("endpoint template %q: duplicate of %q, which matches the same paths", tmpl, n.rest)
				}
				n.rest, n.hasRest = tmpl, true
				t.n++
				return nil
			case paramSegment:
				if n.param == nil {
					n.param = &node{}
				}
				n = n.param
			default:
				i, found := slices.BinarySearchFunc(n.literals, seg, compareEdge)
				if !found {
					n.literals = slices.Insert(n.literals, i, edge{seg, &node{}})
				}
				n = n.literals[i].child
			}
		}
	}
	if n.terminal {
		return fmt.Errorf("endpoint template %q: duplicate of %q, which matches the same paths", tmpl, n.template)
	}
	n.template, n.terminal = tmpl, true
	t.n++
	return nil
}

// parseSegment says what a template segment matches, or what is wrong with it.
func parseSegment(seg string) (segmentKind, error) {
	switch {
	case seg == "":
		return 0, errors.New("empty segment (double or trailing slash)")
	case seg == "*":
		return restSegment, nil
	case strings.HasPrefix(seg, "{"):
		if !strings.HasSuffix(seg, "}") {
			return 0, errors.New("unclosed brace: a {name} must be a whole segment")
		}
		name := seg[1 : len(seg)-1]
		kind := paramSegment
		if base, ok := strings.CutSuffix(name, "..."); ok {
			name, kind = base, restSegment
		}
		if name == "" {
			return 0, errors.New("empty name in braces")
		}
		for i := 0; i < len(name); i++ {
			if c := name[i]; !isDigit(c) && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && c != '_' && c != '-' {
				return 0, fmt.Errorf("name %q: character %q not allowed (use letters, digits, '_' and '-')", name, c)
			}
		}
		return kind, nil
	case strings.ContainsAny(seg, "{}"):
		return 0, errors.New("brace inside a literal: a {name} must be a whole segment")
	case strings.Contains(seg, "*"):
		return 0, errors.New("'*' must be a whole segment")
	case strings.ContainsAny(seg, "?#"):
		return 0, errors.New("'?' and '#' start a query or fragment, which endpoints never include")
	}
	return literalSegment, nil
}

// Match returns the most specific template that matches the path (its query string
// ignored, repeated and trailing slashes too), and whether there is one.
func (t *Templates) Match(path string) (string, bool) {
	if t == nil || t.n == 0 {
		return "", false
	}
	return t.root.match(cutPath(path), 0)
}

// match tries the children of n in order of specificity, backtracking when a subtree
// fails. Each trie node is visited at most once, so matching costs at most the number of
// path segments times the number of ways the templates branch along them.
func (n *node) match(path string, i int) (string, bool) {
	seg, next := nextSegment(path, i)
	if seg == "" {
		return n.template, n.terminal
	}
	// A path that is itself the text of a rest template ("/files/*") maps to that
	// template, so that appending an endpoint again gives the same endpoint.
	if n.hasRest && isRestSyntax(seg) {
		if following, _ := nextSegment(path, next); following == "" {
			return n.rest, true
		}
	}
	if child := n.child(seg); child != nil {
		if tmpl, ok := child.match(path, next); ok {
			return tmpl, true
		}
	}
	if n.param != nil {
		if tmpl, ok := n.param.match(path, next); ok {
			return tmpl, true
		}
	}
	return n.rest, n.hasRest
}

func isRestSyntax(seg string) bool {
	return seg == "*" || (strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "...}"))
}

// Endpoint gives the endpoint of the request path: the text of the most specific
// matching template, exactly as configured (or as [Templates.InternWith] replaced it), or,
// when no template matches, "" and dst with the normalised path appended (see the package
// documentation). A nil t only normalises. Endpoint does not allocate when dst has room
// for [MaxLen] more bytes.
func (t *Templates) Endpoint(dst []byte, path string) (template string, normalized []byte) {
	if tmpl, ok := t.Match(path); ok {
		return tmpl, dst
	}
	return "", AppendNormalized(dst, path)
}

// InternWith replaces the text of every template by intern(text), so that
// [Templates.Endpoint] and [Templates.Match] return those strings: a gateway gives it its
// table of endpoints, so that a request that matches a template needs no lookup in that
// table. Call it once, before the templates are used.
func (t *Templates) InternWith(intern func(string) string) {
	if t != nil {
		t.root.internWith(intern)
	}
}

func (n *node) internWith(intern func(string) string) {
	if n.terminal {
		n.template = intern(n.template)
	}
	if n.hasRest {
		n.rest = intern(n.rest)
	}
	for i := range n.literals {
		n.literals[i].child.internWith(intern)
	}
	if n.param != nil {
		n.param.internWith(intern)
	}
}
