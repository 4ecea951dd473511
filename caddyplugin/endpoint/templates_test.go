package endpoint

import (
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name      string
		templates []string
		wantErr   string // a part of the error message
	}{
		{"not absolute", []string{"users/{id}"}, `"users/{id}": must be an absolute path`},
		{"empty", []string{""}, `"": must be an absolute path`},
		{"empty name", []string{"/users/{}"}, `segment 2 "{}": empty name`},
		{"empty rest name", []string{"/files/{...}"}, `empty name`},
		{"unclosed brace", []string{"/users/{id"}, `segment 2 "{id": unclosed brace`},
		{"brace in literal", []string{"/users/x{id}"}, `brace inside a literal`},
		{"closing brace alone", []string{"/users/id}"}, `brace inside a literal`},
		{"star not last", []string{"/files/*/meta"}, `segment 2 "*": a rest wildcard must be the last segment`},
		{"rest param not last", []string{"/files/{p...}/meta"}, `a rest wildcard must be the last segment`},
		{"star inside literal", []string{"/files/*.txt"}, `'*' must be a whole segment`},
		{"bad name", []string{"/u/{a b}"}, `name "a b": character ' ' not allowed`},
		{"double slash", []string{"/users//x"}, `empty segment`},
		{"trailing slash", []string{"/users/"}, `empty segment`},
		{"query", []string{"/users?x"}, `'?' and '#'`},
		{"duplicate", []string{"/users/{id}", "/users/{id}"}, `"/users/{id}": duplicate of "/users/{id}"`},
		{"duplicate with other names", []string{"/users/{id}/x", "/users/{uid}/x"}, `"/users/{uid}/x": duplicate of "/users/{id}/x"`},
		{"duplicate rest", []string{"/files/*", "/files/{path...}"}, `"/files/{path...}": duplicate of "/files/*"`},
		{"duplicate root", []string{"/", "/"}, `duplicate`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.templates)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Compile(%q) error = %v, want one containing %q", tt.templates, err, tt.wantErr)
			}
		})
	}
}

var testTemplates = []string{
	"/",
	"/users/{id}",
	"/users/me",
	"/users/{id}/orders",
	"/users/{id}/orders/{order}",
	"/users/me/orders/*",
	"/files/*",
	"/files/{name}/meta",
	"/static/{path...}",
	"/a/{x}/c",
	"/a/b/{y}",
	"/{tenant}/settings",
}

// appendEndpoint appends the endpoint that tmpl.Endpoint gives to dst, template or
// normalised path alike.
func appendEndpoint(tmpl *Templates, dst []byte, path string) []byte {
	s, b := tmpl.Endpoint(dst, path)
	return append(b, s...) // s is "" when the path was normalised into b
}

func TestTemplatesEndpoint(t *testing.T) {
	tmpl, err := Compile(testTemplates)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"root", "/", "/"},
		{"root with query", "/?x=1", "/"},
		{"param", "/users/42", "/users/{id}"},
		{"literal beats param", "/users/me", "/users/me"},
		{"nested param", "/users/42/orders", "/users/{id}/orders"},
		{"two params", "/users/42/orders/7", "/users/{id}/orders/{order}"},
		{"literal prefix then rest beats param", "/users/me/orders/7", "/users/me/orders/*"},
		{"backtracks from literal to param", "/users/me/orders", "/users/{id}/orders"},
		{"rest one segment", "/files/a.txt", "/files/*"},
		{"rest many segments", "/files/a/b/c", "/files/*"},
		{"param beats rest", "/files/a/meta", "/files/{name}/meta"},
		{"rest needs a segment", "/files", "/files"},
		{"named rest", "/static/css/site.css", "/static/{path...}"},
		{"leftmost literal wins", "/a/b/c", "/a/b/{y}"},
		{"param then literal", "/a/z/c", "/a/{x}/c"},
		{"leading param", "/acme/settings", "/{tenant}/settings"},
		{"literal beats leading param", "/users/settings", "/users/{id}"},
		{"slashes ignored", "//users//42/", "/users/{id}"},
		{"query ignored", "/users/42?full=1", "/users/{id}"},
		{"no match normalises", "/orders/123", "/orders/{id}"},
		{"too deep for any template", "/users/42/orders/7/items", "/users/{id}/orders/{id}/items"},
		{"template text maps to itself", "/files/*", "/files/*"},
		{"named rest text maps to itself", "/static/{path...}", "/static/{path...}"},
		{"param text maps to itself", "/users/{id}/orders/{order}", "/users/{id}/orders/{order}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendEndpoint(tmpl, []byte("GET "), tt.path))
			if got != "GET "+tt.want {
				t.Errorf("Endpoint(%q) = %q, want %q", tt.path, got, "GET "+tt.want)
			}
		})
	}
}

// TestTemplatesManyLiterals: a level with more literal segments than are scanned in
// order is searched by halves; every literal is found there, and a segment that is none
// of them falls to the parameter.
func TestTemplatesManyLiterals(t *testing.T) {
	var list []string
	for i := range 40 {
		list = append(list, "/v1/r"+strconv.Itoa(i*37%40)+"/{id}")
	}
	list = append(list, "/v1/{other}")
	tmpl, err := Compile(list)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		path := "/v1/r" + strconv.Itoa(i) + "/7"
		if got, ok := tmpl.Match(path); !ok || got != "/v1/r"+strconv.Itoa(i)+"/{id}" {
			t.Errorf("Match(%q) = %q, %v", path, got, ok)
		}
	}
	if got, ok := tmpl.Match("/v1/r40"); !ok || got != "/v1/{other}" {
		t.Errorf("Match(/v1/r40) = %q, %v, want /v1/{other}", got, ok)
	}
}

// TestTemplatesInternWith: Match returns the strings intern gave for each template, rest
// templates too, and matching is otherwise unchanged.
func TestTemplatesInternWith(t *testing.T) {
	tmpl, err := Compile(testTemplates)
	if err != nil {
		t.Fatal(err)
	}
	given := map[string]string{}
	tmpl.InternWith(func(s string) string {
		c := strings.Clone(s)
		given[s] = c
		return c
	})
	if len(given) != len(testTemplates) {
		t.Fatalf("intern was given %d templates, want %d", len(given), len(testTemplates))
	}
	for _, path := range []string{"/users/42/orders", "/files/a/b", "/static/x.css", "/"} {
		got, ok := tmpl.Match(path)
		if !ok || unsafe.StringData(got) != unsafe.StringData(given[got]) {
			t.Errorf("Match(%q) = %q, %v: not the string intern gave", path, got, ok)
		}
	}
}

func TestTemplatesNil(t *testing.T) {
	var tmpl *Templates
	if got := string(appendEndpoint(tmpl, nil, "/users/42")); got != "/users/{id}" {
		t.Errorf("nil Templates Endpoint = %q, want %q", got, "/users/{id}")
	}
	if tmpl.Len() != 0 {
		t.Errorf("nil Templates Len = %d, want 0", tmpl.Len())
	}
	empty, err := Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := empty.Match("/"); ok {
		t.Errorf("empty Templates matched /")
	}
}

func TestTemplatesEndpointAllocs(t *testing.T) {
	tmpl, err := Compile(testTemplates)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, MaxLen)
	for _, path := range []string{"/users/42/orders/7", "/files/a/b/c", "/nothing/42"} {
		if n := testing.AllocsPerRun(100, func() { buf = appendEndpoint(tmpl, buf[:0], path) }); n != 0 {
			t.Errorf("Endpoint(%q) allocates %v times per call, want 0", path, n)
		}
	}
}

func FuzzTemplatesEndpoint(f *testing.F) {
	tmpl, err := Compile(testTemplates)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/", "/users/me/orders/x", "/files/*", "/a/b/c", "/static/{x...}", "//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		got := string(appendEndpoint(tmpl, nil, path))
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("Endpoint(%q) = %q, does not start with /", path, got)
		}
		if _, isTemplate := tmpl.Match(path); !isTemplate {
			if want := Normalize(path); got != want {
				t.Fatalf("Endpoint(%q) = %q matches no template, want the normalised %q", path, got, want)
			}
			if len(got) > MaxLen {
				t.Fatalf("Endpoint(%q) = %q, %d bytes, want at most %d", path, got, len(got), MaxLen)
			}
		}
		// Idempotence holds unless the caps folded a long path into a shape that a
		// template matches; the test templates are too short for that.
		if again := string(appendEndpoint(tmpl, nil, got)); again != got {
			t.Fatalf("Endpoint(%q) = %q, not idempotent: again %q", path, got, again)
		}
	})
}

func BenchmarkTemplatesEndpoint(b *testing.B) {
	tmpl, err := Compile(testTemplates)
	if err != nil {
		b.Fatal(err)
	}
	for _, path := range []string{"/users/42/orders/7", "/v1/accounts/42/invoices/2026-11-24"} {
		b.Run(path, func(b *testing.B) {
			buf := make([]byte, 0, MaxLen)
			b.ReportAllocs()
			for b.Loop() {
				buf = appendEndpoint(tmpl, buf[:0], path)
			}
		})
	}
}
