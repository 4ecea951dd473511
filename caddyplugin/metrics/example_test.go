package metrics_test

import (
	"net/http"
	"time"

	"github.com/vigilgw/vigil/caddyplugin/metrics"
)

// The glue in caddyplugin: one registry per process, kept with the engine across
// reloads; a call per request; the engine's figures reported at scrape time.
func Example() {
	reg := metrics.New(metrics.Options{MaxEndpoints: 500})

	// Each config load (App.Start) sets the hook again: it replaces the previous one.
	reg.SetScrapeHook(func(r *metrics.Registry) {
		r.SetStoreStats(metrics.StoreStats{Series: 120, Users: 30, Companies: 4, Keys: 50})
		r.SetNotificationStats([]metrics.ChannelStats{{Channel: "slack", QueueLength: 1, Delivered: 12}})
		r.SetAlertsFiring(map[string]int{"error-rate": 1, "latency-p99": 0})
	})

	// Per request, in the handler, once the response is done.
	start := time.Now()
	reg.ObserveRequest("/users/{id}", http.MethodGet, http.StatusOK, time.Since(start))
	reg.RateLimited("per-user") // when a rate limit refused it, and so on

	// GET /vigil/metrics and the vigil_metrics handler.
	_ = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", metrics.ContentType)
		reg.WritePrometheus(w)
	})
}
