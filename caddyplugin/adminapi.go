package caddyplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/caddyplugin/identity"
	"github.com/vigilgw/vigil/caddyplugin/metrics"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is Vigil's JSON API on Caddy's admin endpoint (admin.api.vigil), under
// /vigil/. Errors are JSON: {"error": "...", "field": "..."} with 400 for bad input, 404
// for unknown paths and ids, 405 (with Allow) for a wrong method. A bad request changes
// nothing.
//
// Caddy creates admin modules anew on every config load and never cleans them up, so the
// API finds the running engine per request.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.vigil",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the API's one route: everything under /vigil/, dispatched by adminMux.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/vigil/", Handler: caddy.AdminHandlerFunc(serveAdmin)}}
}

// adminRoute serves one path: a handler per method.
type adminRoute map[string]func(e *engine, w http.ResponseWriter, r *http.Request) error

var adminMux = http.NewServeMux()

func handleAdmin(pattern string, route adminRoute) {
	methods := make([]string, 0, len(route))
	for m := range route {
		methods = append(methods, m)
	}
	sort.Strings(methods)
	allow := strings.Join(methods, ", ")
	adminMux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		fn := route[r.Method]
		if fn == nil && r.Method == http.MethodHead {
			fn = route[http.MethodGet]
		}
		if fn == nil {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "", fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
			return
		}
		e := live.Load()
		if e == nil {
			writeError(w, http.StatusServiceUnavailable, "", "vigil is not running")
			return
		}
		if err := fn(e, w, r); err != nil {
			var ae apiError
			if errors.As(err, &ae) {
				writeError(w, ae.status, ae.field, ae.msg)
				return
			}
			writeError(w, http.StatusInternalServerError, "", err.Error())
		}
	})
}

func init() {
	adminMux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "", "no such vigil API path: "+r.URL.Path)
	})
	handleAdmin("/vigil/blocklist", adminRoute{
		http.MethodGet:  getBlocklist,
		http.MethodPost: postBlocklist,
	})
	handleAdmin("/vigil/blocklist/{kind}/{value...}", adminRoute{
		http.MethodDelete: deleteBlocklist,
	})
	handleAdmin("/vigil/quotas/{kind}/{value}", adminRoute{
		http.MethodGet: getQuotas,
	})
	handleAdmin("/vigil/metrics", adminRoute{
		http.MethodGet: getMetrics,
	})
	handleAdmin("/vigil/test/clock", adminRoute{
		http.MethodGet: getTestClock,
		http.MethodPut: putTestClock,
	})
}

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	adminMux.ServeHTTP(w, r)
	return nil
}

// apiError is an error answer: status, the field it is about, and a message.
type apiError struct {
	status int
	field  string
	msg    string
}

func (e apiError) Error() string { return e.msg }

func badRequest(field, format string, args ...any) error {
	return apiError{status: http.StatusBadRequest, field: field, msg: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return apiError{status: http.StatusNotFound, msg: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	body := map[string]string{"error": msg}
	if field != "" {
		body["field"] = field
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// maxAdminBody bounds request bodies of the admin API.
const maxAdminBody = 1 << 20

// decodeBody decodes a JSON body strictly (unknown fields are errors), naming the field
// that is wrong.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		return badRequest("", "body: more than one JSON value")
	}
	return nil
}

// jsonError turns a decoding error into a 400 naming the field.
func jsonError(err error) error {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
		maxErr    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "body"
		}
		return badRequest(field, "%s: want %s, got JSON %s", field, typeErr.Type, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return badRequest("body", "body: invalid JSON at byte %d: %v", syntaxErr.Offset, err)
	case errors.As(err, &maxErr):
		return badRequest("body", "body: larger than %d bytes", maxErr.Limit)
	case errors.Is(err, io.EOF):
		return badRequest("body", "body: empty, want a JSON object")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return badRequest(field, "%s: unknown field", field)
	}
	return badRequest("body", "body: %v", err)
}

func getBlocklist(e *engine, w http.ResponseWriter, r *http.Request) error {
	now := e.now()
	entries := e.blocks.Entries(now)
	if cfg := e.cfg.Load(); cfg != nil {
		for _, h := range cfg.handlers {
			entries = append(entries, h.blocks.Entries(now)...)
		}
	}
	if entries == nil {
		entries = []blocklist.Entry{}
	}
	writeJSON(w, http.StatusOK, entries)
	return nil
}

// blockRequest is the body of POST /vigil/blocklist.
type blockRequest struct {
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Reason string `json:"reason"`
	// Expires is a duration from now ("24h", "7d") or an RFC 3339 time.
	Expires string `json:"expires"`
}

func postBlocklist(e *engine, w http.ResponseWriter, r *http.Request) error {
	var req blockRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Kind == "" {
		return badRequest("kind", "kind: required (user, company, key, ip or cidr)")
	}
	kind, err := blocklist.ParseKind(req.Kind)
	if err != nil {
		return badRequest("kind", "kind: %v", err)
	}
	if strings.TrimSpace(req.Value) == "" {
		return badRequest("value", "value: required")
	}
	now := e.now()
	entry := blocklist.Entry{Kind: kind, Value: req.Value, Reason: req.Reason, Added: now.UTC(), Source: "api"}
	if req.Expires != "" {
		exp, err := parseExpiry(req.Expires, now)
		if err != nil {
			return badRequest("expires", "expires: %v", err)
		}
		entry.Expires = exp
	}
	entry, err = blocklist.Normalize(entry)
	if err != nil {
		return badRequest("value", "%v", err)
	}
	if err := e.blocks.Add(entry); err != nil {
		return badRequest("value", "%v", err)
	}
	writeJSON(w, http.StatusCreated, entry)
	return nil
}

// parseExpiry reads an expiry: a positive duration from now ("24h", "7d") or an RFC 3339
// time in the future.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := caddy.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("duration %q must be positive", s)
		}
		return now.Add(d).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor an RFC 3339 time", s)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("%s is in the past", s)
	}
	return t.UTC(), nil
}

func deleteBlocklist(e *engine, w http.ResponseWriter, r *http.Request) error {
	kind, err := blocklist.ParseKind(r.PathValue("kind"))
	if err != nil {
		return badRequest("kind", "kind: %v", err)
	}
	want, err := blocklist.Normalize(blocklist.Entry{Kind: kind, Value: r.PathValue("value")})
	if err != nil {
		return badRequest("value", "%v", err)
	}
	value := want.Value
	if _, ok := e.blocks.Remove(kind, value); ok {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if cfg := e.cfg.Load(); cfg != nil {
		for _, h := range cfg.handlers {
			for _, en := range h.blocks.Entries(e.now()) {
				if en.Kind == kind && en.Value == value {
					return apiError{status: http.StatusConflict, field: "value",
						msg: fmt.Sprintf("%s %s is blocked in the Caddyfile (a block line of a vigil directive): remove it there and reload", kind, value)}
				}
			}
		}
	}
	return notFound("%s %s is not on the run-time block list", kind, value)
}

// quotaUsage is one element of GET /vigil/quotas/{kind}/{value}.
type quotaUsage struct {
	Kind      string    `json:"kind"`
	Value     string    `json:"value"`
	Name      string    `json:"name"`
	Scope     string    `json:"scope,omitempty"`
	Period    string    `json:"period"`
	Timezone  string    `json:"timezone"`
	Limit     int64     `json:"limit"`
	Used      int64     `json:"used"`
	Remaining int64     `json:"remaining"`
	ResetsAt  time.Time `json:"resets_at"`
}

func getQuotas(e *engine, w http.ResponseWriter, r *http.Request) error {
	kind, value := r.PathValue("kind"), r.PathValue("value")
	if !validLimitKey(kind, false) {
		return badRequest("kind", "kind: %q is not user, company, key or ip", kind)
	}
	if kind == "key" && !identity.IsKeyID(value) {
		value = identity.KeyID(value)
	}
	now := e.now()
	out := []quotaUsage{}
	seen := map[string]bool{}
	if cfg := e.cfg.Load(); cfg != nil {
		for _, h := range cfg.handlers {
			for i := range h.quotas {
				p := &h.quotas[i]
				if p.kind != kind || seen[p.id] {
					continue
				}
				seen[p.id] = true
				u, err := e.limiter.QuotaUsage(r.Context(), p.id, value, p.quota, p.loc, now)
				if err != nil {
					return err
				}
				out = append(out, quotaUsage{
					Kind: kind, Value: value, Name: p.name, Scope: h.Scope, Period: p.quota.Period.String(),
					Timezone: p.loc.String(), Limit: u.Limit, Used: u.Used, Remaining: u.Remaining, ResetsAt: u.ResetsAt.UTC(),
				})
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getMetrics serves the Prometheus text exposition. Prefer the vigil_metrics handler for
// scraping: Caddy logs every admin request at INFO except /metrics.
func getMetrics(e *engine, w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", metrics.ContentType)
	return e.metrics.WritePrometheus(w)
}

func testClockEnabled(e *engine) error {
	if cfg := e.cfg.Load(); cfg == nil || cfg.app == nil || !cfg.app.TestClock {
		return notFound("the test clock is off (enable test_clock in the vigil global options, for tests only)")
	}
	return nil
}

func getTestClock(e *engine, w http.ResponseWriter, r *http.Request) error {
	if err := testClockEnabled(e); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"now": e.now().UTC()})
	return nil
}

func putTestClock(e *engine, w http.ResponseWriter, r *http.Request) error {
	if err := testClockEnabled(e); err != nil {
		return err
	}
	var req struct {
		Now time.Time `json:"now"`
	}
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if req.Now.IsZero() {
		return badRequest("now", "now: required, an RFC 3339 time")
	}
	e.setClock(req.Now)
	writeJSON(w, http.StatusOK, map[string]any{"now": e.now().UTC()})
	return nil
}

// Interface guards.
var _ caddy.AdminRouter = (*AdminAPI)(nil)
