package caddyplugin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestHeaderValue checks the one-allocation header value: it holds a copy of the bytes,
// short or long, and a later Add to the field leaves it alone.
func TestHeaderValue(t *testing.T) {
	for _, n := range []int{1, 75, 112, 113, 400} {
		b := []byte(strings.Repeat("r", n))
		h := http.Header{}
		h["Ratelimit"] = headerValue(b)
		h.Add("Ratelimit", "extra")
		for i := range b {
			b[i] = 'x' // the caller reuses its buffer
		}
		got := h.Values("Ratelimit")
		if len(got) != 2 || got[0] != strings.Repeat("r", n) || got[1] != "extra" {
			t.Fatalf("%d bytes: field values %q, want the copy and then extra", n, got)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = headerValue([]byte("\"user\";r=9;t=1")) }); allocs > 1 {
		t.Fatalf("headerValue of a short value: %v allocations, want 1", allocs)
	}
}

// TestIdentSources checks the compiled identity forms that need no replacer: a constant,
// a request header (first value, trimmed) and the client IP from the request's variables.
func TestIdentSources(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "http://api.example.com/", nil)
	r.Header.Add("X-User-Id", " u-1 ")
	r.Header.Add("X-User-Id", "u-2")
	vars := map[string]any{caddyhttp.ClientIPVarKey: "198.51.100.7"}
	for v, want := range map[string]string{
		"acme":                            "acme",
		"{http.request.header.x-user-id}": "u-1",
		"{http.request.header.X-Missing}": "",
		"{client_ip}":                     "198.51.100.7",
		"{http.vars.client_ip}":           "198.51.100.7",
	} {
		s := compileIdent(v)
		if got := s.get(r, nil, vars); got != want {
			t.Errorf("%s: %q, want %q", v, got, want)
		}
	}
}
