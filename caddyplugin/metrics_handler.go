package caddyplugin

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vigilgw/vigil/caddyplugin/metrics"
)

func init() {
	caddy.RegisterModule(MetricsHandler{})
	httpcaddyfile.RegisterHandlerDirective("vigil_metrics", parseMetricsDirective)
	httpcaddyfile.RegisterDirectiveOrder("vigil_metrics", httpcaddyfile.Before, "metrics")
}

// MetricsHandler (http.handlers.vigil_metrics) serves Vigil's Prometheus metrics on a
// site, for a scrape port that matchers or basic_auth can protect. It writes the response
// and does not call the next handler. The same text is at GET /vigil/metrics on the admin
// endpoint, but Caddy logs every admin request at INFO, so scrape this instead.
//
// Caddyfile: vigil_metrics (no arguments).
type MetricsHandler struct {
	eng *engine
}

// CaddyModule returns the Caddy module information.
func (MetricsHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.vigil_metrics",
		New: func() caddy.Module { return new(MetricsHandler) },
	}
}

// Provision finds the engine.
func (m *MetricsHandler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("vigil")
	if err != nil {
		return fmt.Errorf("getting vigil app: %w", err)
	}
	m.eng = app.(*App).engine
	return nil
}

// ServeHTTP writes the metrics.
func (m *MetricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	w.Header().Set("Content-Type", metrics.ContentType)
	w.Header().Set("Cache-Control", "no-store")
	if r.Method == http.MethodHead {
		return nil
	}
	return m.eng.metrics.WritePrometheus(w)
}

func parseMetricsDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next()
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	if h.NextBlock(0) {
		return nil, h.Errf("vigil_metrics takes no options, got %q", h.Val())
	}
	return new(MetricsHandler), nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*MetricsHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*MetricsHandler)(nil)
)
