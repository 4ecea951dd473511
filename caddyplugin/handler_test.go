package caddyplugin

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vigilgw/vigil/caddyplugin/identity"
	"github.com/vigilgw/vigil/caddyplugin/intern"
	"github.com/vigilgw/vigil/detector"
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

// TestRequestsCountedByScrape: the requests families count calls as the store applies
// them, off the request path, and a scrape applies what is still buffered, so that it
// counts every request completed before it, by endpoint template and class.
func TestRequestsCountedByScrape(t *testing.T) {
	bh := newBenchHandler(t, benchConfigs[len(benchConfigs)-1].json) // not started: nothing applies in the background
	br := newBenchRequests(t, 1)
	const n = 3000
	br.run(t, bh, n)
	var buf bytes.Buffer
	if err := bh.h.eng.metrics.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	var total, orders float64
	for _, line := range strings.Split(buf.String(), "\n") {
		if !strings.HasPrefix(line, "vigil_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if !strings.Contains(line, `class="2xx"`) || !strings.Contains(line, `method="GET"`) {
			t.Errorf("a request counted outside GET 2xx: %q", line)
		}
		total += v
		if strings.Contains(line, `endpoint="/users/{id}/orders"`) {
			orders += v
		}
	}
	if total != n {
		t.Fatalf("vigil_requests_total sums to %v after %d requests:\n%s", total, n, buf.String())
	}
	if orders < n/3 || orders > n*2/3 { // about half of the requests are on the template
		t.Fatalf("%v requests on /users/{id}/orders of %d", orders, n)
	}
}

// TestKeyID: an API key becomes its short hash; a key seen before gives the same string
// without allocating, and keys beyond the table's cap still get their own ids.
func TestKeyID(t *testing.T) {
	e := &engine{keys: intern.NewTable(2)}
	want := func(raw string) string { return string(identity.AppendKeyID(nil, raw)) }
	first := e.keyID("secret-1")
	if first != want("secret-1") || !strings.HasPrefix(first, "key:") {
		t.Fatalf("keyID(secret-1) = %q, want %q", first, want("secret-1"))
	}
	if again := e.keyID("secret-1"); unsafe.StringData(again) != unsafe.StringData(first) {
		t.Errorf("keyID of a known key made a new copy")
	}
	if n := testing.AllocsPerRun(100, func() { e.keyID("secret-1") }); n != 0 {
		t.Errorf("keyID of a known key: %v allocations, want 0", n)
	}
	for _, raw := range []string{"secret-2", "secret-3", "secret-4"} { // the table holds 2
		if got := e.keyID(raw); got != want(raw) {
			t.Errorf("keyID(%s) = %q, want %q", raw, got, want(raw))
		}
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 500 {
				raw := "k-" + strconv.Itoa((i*7+w)%50)
				if got := e.keyID(raw); got != want(raw) {
					t.Errorf("keyID(%s) = %q, want %q", raw, got, want(raw))
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestEndpointsCap: a site's templates take their places among the endpoints when it
// loads, in order; a template or a normalised path beyond max_series is recorded as
// other, and the others under their own names.
func TestEndpointsCap(t *testing.T) {
	for _, tt := range []struct {
		maxSeries int
		want      map[string]string // path -> endpoint recorded
	}{
		{2, map[string]string{"/a/1": "/a/{id}", "/b/2": "/b/{id}", "/c/3": "other", "/x/123": "other"}},
		{10, map[string]string{"/a/1": "/a/{id}", "/b/2": "/b/{id}", "/c/3": "/c/{id}", "/x/123": "/x/{id}"}},
	} {
		t.Run("max_series="+strconv.Itoa(tt.maxSeries), func(t *testing.T) {
			bh := newHandlerOnApp(t, `{"tick": "1s", "max_series": `+strconv.Itoa(tt.maxSeries)+`}`,
				`{"endpoints": ["/c/{id}", "/b/{id}", "/a/{id}"]}`)
			w := &benchWriter{h: make(http.Header)}
			for path := range tt.want {
				r, err := http.NewRequest(http.MethodGet, "http://api.example.com"+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				r.RemoteAddr = "198.51.100.7:4000"
				r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, new(caddyhttp.Server))
				if err := bh.serve(w, r); err != nil {
					t.Fatal(err)
				}
			}
			got := map[string]string{}
			bh.h.eng.store.Recent(nil, func(c *detector.Call) bool {
				got[c.Path] = c.Endpoint
				return true
			})
			for path, want := range tt.want {
				if got[path] != want {
					t.Errorf("%s recorded as %q, want %q", path, got[path], want)
				}
			}
		})
	}
}
