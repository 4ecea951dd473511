package caddyplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vigilgw/vigil/caddyplugin/intern"
)

// The handler's cost per request in-process, without network: a Handler provisioned
// through Caddy (the vigil app, then http.handlers.vigil loaded from JSON in the same
// caddy.Context), requests prepared as Caddy's server prepares them (replacer, client IP
// var), and a next handler that writes a small 200. Each configuration adds one part, so
// that the difference between two lines is the cost of that part:
//
//	go test ./caddyplugin -run '^$' -bench BenchmarkHandler -benchmem
//
// ns/op is wall time per request; cpu-ns/op is the CPU time of the whole process per
// request (getrusage), which also counts what the store does off the request path
// (applying recorded calls) and the garbage collector.

// The parts of the handler configurations measured (JSON object members).
const (
	benchIdentify  = `"identify": {"user": "{http.request.header.X-User-Id}", "company": "{http.request.header.X-Company-Id}"}`
	benchEndpoints = `"endpoints": ["/users/{id}/orders"]`
	benchBlock     = `"block": [
		{"kind": "user", "value": "u-blocked-1"}, {"kind": "user", "value": "u-blocked-2"},
		{"kind": "company", "value": "c-blocked"},
		{"kind": "ip", "value": "192.0.2.7"}, {"kind": "ip", "value": "198.51.100.0/24"}]`
	benchRateLimits = `"rate_limits": [{"key": "user", "rate": "100000/s", "burst": 200000}, {"key": "ip", "rate": "100000000/s"}]`
	benchQuotas     = `"quotas": [{"key": "user", "limit": "1000000000/day"}]`
)

// benchConfigs are the handler configurations measured, each adding a part to the one
// before; the limits are far above what the benchmark sends, so no call is refused.
var benchConfigs = []struct {
	name string
	json string // the handler's JSON; "" is the next handler alone, without vigil
}{
	{"next-only", ""},
	{"identify-record", benchJSON(benchIdentify)},
	{"endpoint-block", benchJSON(benchIdentify, benchEndpoints, benchBlock)},
	{"rate-limits", benchJSON(benchIdentify, benchEndpoints, benchBlock, benchRateLimits)},
	{"full", benchJSON(benchIdentify, benchEndpoints, benchBlock, benchRateLimits, benchQuotas)},
}

func benchJSON(parts ...string) string { return "{" + strings.Join(parts, ",\n") + "}" }

// benchHandler is a provisioned vigil handler and what it runs on.
type benchHandler struct {
	h       *Handler // nil for next-only
	app     *App
	next    caddyhttp.Handler
	started bool
}

// newBenchHandler provisions the vigil app and a handler from its JSON through a
// caddy.Context. The app is not started: the caller applies recorded calls itself
// (flush), or starts the app (start) to have the store apply them in the background as
// in caddy. The engine is released when the test ends.
func newBenchHandler(tb testing.TB, handlerJSON string) *benchHandler {
	tb.Helper()
	return newHandlerOnApp(tb, `{"tick": "1s"}`, handlerJSON)
}

// newHandlerOnApp is newBenchHandler with the vigil app's JSON given.
func newHandlerOnApp(tb testing.TB, appJSON, handlerJSON string) *benchHandler {
	tb.Helper()
	bh := &benchHandler{next: caddyhttp.HandlerFunc(benchNext)}
	if handlerJSON == "" {
		return bh
	}
	// Storage of its own: the default is the user's Caddy data directory, where the
	// engine would restore, and save, the snapshot of the user's own gateway.
	storage, err := json.Marshal(map[string]string{"module": "file_system", "root": tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, err := caddy.ProvisionContext(&caddy.Config{
		Admin:      &caddy.AdminConfig{Disabled: true},
		StorageRaw: storage,
		AppsRaw:    caddy.ModuleMap{"vigil": json.RawMessage(appJSON)},
	})
	if err != nil {
		tb.Fatalf("provisioning the vigil app: %v", err)
	}
	appIface, err := ctx.App("vigil")
	if err != nil {
		tb.Fatal(err)
	}
	bh.app = appIface.(*App)
	mod, err := ctx.LoadModuleByID("http.handlers.vigil", json.RawMessage(handlerJSON))
	if err != nil {
		tb.Fatalf("provisioning the vigil handler: %v", err)
	}
	bh.h = mod.(*Handler)
	tb.Cleanup(func() {
		_ = bh.app.Stop()
		_ = bh.app.Cleanup() // the last reference: stops the engine
	})
	return bh
}

// start starts the app: from now on the store applies recorded calls in the background.
func (bh *benchHandler) start(tb testing.TB) {
	if bh.app != nil && !bh.started {
		if err := bh.app.Start(); err != nil {
			tb.Fatal(err)
		}
		bh.started = true
	}
}

// flush applies the recorded calls (when the app is not started).
func (bh *benchHandler) flush() {
	if bh.h != nil {
		bh.h.eng.store.Flush()
	}
}

func (bh *benchHandler) serve(w http.ResponseWriter, r *http.Request) error {
	if bh.h == nil {
		return bh.next.ServeHTTP(w, r)
	}
	return bh.h.ServeHTTP(w, r, bh.next)
}

var (
	benchBody        = []byte(`{"orders":[{"id":1,"total":42,"currency":"EUR"}],"next":null}`)
	benchContentType = []string{"application/json"}
)

// benchNext stands for the upstream: a small JSON 200, without allocating, so that the
// allocations counted are the handler's.
func benchNext(w http.ResponseWriter, _ *http.Request) error {
	w.Header()["Content-Type"] = benchContentType
	w.WriteHeader(http.StatusOK)
	_, err := w.Write(benchBody)
	return err
}

// benchWriter is a reusable http.ResponseWriter that discards the body.
type benchWriter struct {
	h      http.Header
	status int
	n      int
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *benchWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += len(b)
	return len(b), nil
}
func (w *benchWriter) reset() {
	clear(w.h)
	w.status, w.n = 0, 0
}

// benchRequests is a set of requests prepared as Caddy's server prepares them (request
// context with the replacer, the vars and the client IP), like the load benchmark's:
// 1,000 users in 50 companies from 250 client addresses, on /users/{id}/orders (a
// template), /users/{id}, /orders/ord-2026-NNNNNN (normalised) and /health. The set is
// read-only while the handler runs, and reused: the handler changes neither the request
// nor its context.
type benchRequests struct {
	w    *benchWriter
	reqs []*http.Request
	raw  []*http.Request // the same before PrepareRequest, for fresh copies
	srv  *caddyhttp.Server
	i    int
}

const benchUsers, benchCompanies, benchRequestsPerSet = 1000, 50, 1024

// benchEvictBytes is how much memory the cold benchmark writes between two requests:
// twice a core's L2 cache on this project's machines, about what Caddy, net/http and the
// kernel's network stack touch between two requests in a gateway.
const benchEvictBytes = 1 << 20

// benchFlushEvery is how many calls the serial benchmark records between two flushes of
// the store: about 256 per intake shard, half of what one holds.
const benchFlushEvery = 4096

func newBenchRequests(tb testing.TB, seed int) *benchRequests {
	tb.Helper()
	srv := new(caddyhttp.Server) // no trusted proxies: the client IP is the peer's
	br := &benchRequests{w: &benchWriter{h: make(http.Header, 8)}, srv: srv}
	x := uint32(seed)*2654435761 + 1
	rnd := func(n int) int { // xorshift: deterministic, varied
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		return int(x % uint32(n))
	}
	for range benchRequestsPerSet {
		u, id := rnd(benchUsers)+1, rnd(999999)+1
		var path string
		switch r := rnd(100); {
		case r < 50:
			path = "/users/" + strconv.Itoa(id) + "/orders"
		case r < 80:
			path = "/users/" + strconv.Itoa(id)
		case r < 95:
			path = fmt.Sprintf("/orders/ord-2026-%06d", id)
		default:
			path = "/health"
		}
		req, err := http.NewRequest(http.MethodGet, "http://api.example.com"+path, nil)
		if err != nil {
			tb.Fatal(err)
		}
		req.RemoteAddr = fmt.Sprintf("198.18.0.%d:%d", u%250+1, 40000+u)
		req.Header.Set("X-User-Id", "u-"+strconv.Itoa(u))
		req.Header.Set("X-Company-Id", "c-"+strconv.Itoa(u%benchCompanies+1))
		req.Header.Set("Accept", "application/json")
		// PrepareRequest sets the start_time variable, which Caddy's server sets for every
		// request and the handler reads instead of the clock: here it is set once per
		// request of the set, so its cost, which is Caddy's, is not counted.
		br.raw = append(br.raw, req)
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), br.w, srv)
		br.reqs = append(br.reqs, req)
	}
	return br
}

// one serves the next request of the set and checks that it was answered 200.
func (br *benchRequests) one(bh *benchHandler) error {
	r := br.reqs[br.i]
	br.i++
	if br.i == len(br.reqs) {
		br.i = 0
	}
	return br.serve(bh, r)
}

// fresh returns a copy of the next request of the set as Caddy's server would hand it
// to the handler: its own header map, replacer, variables and context, just made.
func (br *benchRequests) fresh() *http.Request {
	r := br.raw[br.i].Clone(context.Background())
	br.i++
	if br.i == len(br.raw) {
		br.i = 0
	}
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), br.w, br.srv)
}

// serve serves r and checks that it was answered 200.
func (br *benchRequests) serve(bh *benchHandler, r *http.Request) error {
	br.w.reset()
	if err := bh.serve(br.w, r); err != nil || br.w.status != http.StatusOK {
		return fmt.Errorf("%s %s: status %d, error %v", r.Method, r.URL.Path, br.w.status, err)
	}
	return nil
}

// run serves n requests of the set, failing the test (from its goroutine) on an error.
func (br *benchRequests) run(tb testing.TB, bh *benchHandler, n int) {
	tb.Helper()
	for range n {
		if err := br.one(bh); err != nil {
			tb.Fatal(err)
		}
	}
}

// cpuTime is the user plus system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkHandler(b *testing.B) {
	for _, cfg := range benchConfigs {
		b.Run(cfg.name, func(b *testing.B) {
			bh := newBenchHandler(b, cfg.json)
			// One set of requests per goroutine of RunParallel (more are made if needed).
			sets := make([]*benchRequests, max(runtime.GOMAXPROCS(0), 2))
			for i := range sets {
				sets[i] = newBenchRequests(b, i+1)
			}
			// Warm up: every caller, bucket, counter, series and endpoint exists, as in a
			// gateway that has been serving for a while.
			for _, s := range sets[:2] {
				s.run(b, bh, benchRequestsPerSet)
				bh.flush()
			}

			// Serial: ns/op is the request path alone. The store applies the recorded
			// calls outside the timer every benchFlushEvery requests (apply-ns/op), as its
			// background loop would on another core: a tight loop records calls faster than
			// one core applies them, and the intake would fill and apply on the request
			// path. cpu-ns/op counts both, and the garbage collector.
			b.Run("serial", func(b *testing.B) {
				br := sets[0]
				var apply time.Duration
				b.ReportAllocs()
				cpu0 := cpuTime()
				b.ResetTimer()
				for i := 1; i <= b.N; i++ {
					if err := br.one(bh); err != nil {
						b.Fatal(err)
					}
					if i%benchFlushEvery == 0 {
						b.StopTimer()
						t0 := time.Now()
						bh.flush()
						apply += time.Since(t0)
						b.StartTimer()
					}
				}
				b.StopTimer()
				t0 := time.Now()
				bh.flush()
				apply += time.Since(t0)
				b.ReportMetric(float64(apply)/float64(b.N), "apply-ns/op")
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
			// Cold: as in a gateway, where Caddy, net/http and the kernel run between two
			// requests of a core and push Vigil's data and code out of the CPU's caches.
			// Between requests the benchmark writes over benchEvictBytes of memory, then
			// prepares the request afresh as Caddy's server does (header map, replacer,
			// variables, context: in the cache, as in a gateway), outside the clock.
			// cold-ns/op is the handler alone; ns/op and the allocations are mostly the
			// eviction and the preparation.
			b.Run("cold", func(b *testing.B) {
				br := sets[0]
				evict := make([]byte, benchEvictBytes)
				var took time.Duration
				b.ResetTimer()
				for i := 1; i <= b.N; i++ {
					for j := 0; j < len(evict); j += 64 {
						evict[j]++
					}
					r := br.fresh()
					t0 := time.Now()
					if err := br.serve(bh, r); err != nil {
						b.Fatal(err)
					}
					took += time.Since(t0)
					if i%benchFlushEvery == 0 {
						bh.flush()
					}
				}
				b.StopTimer()
				bh.flush()
				b.ReportMetric(float64(took)/float64(b.N), "cold-ns/op")
			})
			// Parallel: as in caddy, the app runs and its store applies calls in the
			// background; ns/op is wall time per request with every core serving, so it
			// includes the store's work whenever it competes for a core.
			b.Run("parallel", func(b *testing.B) {
				bh.start(b)
				var next atomic.Int32
				b.ReportAllocs()
				cpu0 := cpuTime()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					i := int(next.Add(1)) - 1
					var br *benchRequests
					if i < len(sets) {
						br = sets[i]
					} else {
						br = newBenchRequests(b, i+1)
					}
					for pb.Next() {
						if err := br.one(bh); err != nil {
							b.Error(err) // not Fatal: this is not the benchmark's goroutine
							return
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		})
	}
}

// maxHandlerAllocs is the measured number of allocations per request of each
// configuration, for a caller the gateway already knows. A change that adds an
// allocation on the request path fails TestHandlerAllocs; one that removes some should
// lower these. The 3 of the configurations with limits are Handler.setHeaders's: the
// RateLimit-Policy and RateLimit values (two strings) and the slice holding them.
var maxHandlerAllocs = map[string]float64{
	"identify-record": 0,
	"endpoint-block":  0,
	"rate-limits":     3,
	"full":            3,
}

func TestHandlerAllocs(t *testing.T) {
	for _, cfg := range benchConfigs {
		if cfg.json == "" {
			continue
		}
		t.Run(cfg.name, func(t *testing.T) {
			bh := newBenchHandler(t, cfg.json)
			br := newBenchRequests(t, 1)
			br.run(t, bh, benchRequestsPerSet) // every caller and key exists
			// The app is not started: the calls recorded below stay in the store's intake
			// buffers (far below their capacity), so what the store allocates when it
			// applies them, off the request path, is not counted.
			bh.flush()
			var err error
			allocs := testing.AllocsPerRun(2000, func() {
				if e := br.one(bh); e != nil {
					err = e
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %.0f allocations per request", cfg.name, allocs)
			if ceiling := maxHandlerAllocs[cfg.name]; allocs > ceiling {
				t.Errorf("%.0f allocations per request, want at most %.0f (maxHandlerAllocs)", allocs, ceiling)
			}
		})
	}
}

// BenchmarkKeyID is the API key's part of identifying a caller, for keys already seen,
// from every core at once, as in a gateway whose clients send API keys.
func BenchmarkKeyID(b *testing.B) {
	e := &engine{keys: intern.NewTable(maxKeyIDs)}
	raws := make([]string, 1000)
	for i := range raws {
		raws[i] = "sk_live_" + strconv.Itoa(i*7919)
		e.keyID(raws[i])
	}
	for range 10 { // known keys end up in the lock-free map
		for _, r := range raws {
			e.keyID(r)
		}
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e.keyID(raws[i%len(raws)])
			i++
		}
	})
}
