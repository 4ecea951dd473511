package caddyplugin

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/caddyplugin/endpoint"
	"github.com/vigilgw/vigil/caddyplugin/identity"
	"github.com/vigilgw/vigil/caddyplugin/limit"
	"github.com/vigilgw/vigil/detector"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the vigil gateway handler (http.handlers.vigil). For every request it
// identifies the caller, refuses blocked callers (403), counts quotas and applies rate
// limits (429), passes the request on, and records the call (blocked and limited ones
// too) into the engine's store. Responses of a site with limits carry the IETF
// RateLimit-Policy and RateLimit header fields.
//
// Vigil writes its own JSON 403 and 429 answers instead of going through handle_errors,
// so that the body, Retry-After and RateLimit fields are always right.
type Handler struct {
	// Identify says where the caller's identity comes from. Each value is a placeholder
	// (such as {http.request.header.X-User-Id}) or a constant. A missing identity is
	// "anonymous". The user defaults to {http.auth.user.id}, set by basic_auth and
	// forward_auth.
	Identify *Identify `json:"identify,omitempty"`

	// Endpoints are route templates such as /users/{id}/orders: a request whose path
	// matches one is recorded under it. Other paths are normalised (numeric, UUID, long
	// hex and token-like segments become {id}).
	Endpoints []string `json:"endpoints,omitempty"`

	// Block lists callers refused with 403. More can be added at run time through the
	// admin API (POST /vigil/blocklist), for all sites.
	Block []BlockRule `json:"block,omitempty"`

	// RateLimits are token buckets; a call must have a token in every one of them.
	RateLimits []RateLimit `json:"rate_limits,omitempty"`

	// Quotas count calls per day or calendar month; a call over any of them is refused.
	Quotas []Quota `json:"quotas,omitempty"`

	// Upstream, when set, is the name calls of this site are recorded under as their
	// upstream, instead of the host:port reverse_proxy dialled.
	Upstream string `json:"upstream,omitempty"`

	// Scope separates the limiter and quota state of this handler from other handlers
	// that declare limits of the same name. Without it, handlers share the state of
	// limits with the same name (so a caller's budget spans every site that declares it).
	Scope string `json:"scope,omitempty"`

	eng       *engine
	logger    *slog.Logger
	ids       [3]identSource // user, company, key
	templates *endpoint.Templates
	blocks    *blocklist.List
	limits    []limitPolicy
	quotas    []quotaPolicy
	// policyHeader is the RateLimit-Policy value of the token buckets (constant).
	policyHeader []byte
	policy       *atomic.Pointer[cachedPolicy] // set in Provision
	hasLimits    bool
}

// Identify says where a caller's identity comes from.
type Identify struct {
	// User is the user id.
	User string `json:"user,omitempty"`
	// Company is the company (account, tenant) id.
	Company string `json:"company,omitempty"`
	// Key is the API key. It is never kept: only its short hash ("key:3f2a9c1e") is.
	Key string `json:"key,omitempty"`
}

// BlockRule is one block-list entry of the configuration.
type BlockRule struct {
	// Kind is user, company, key, ip or cidr.
	Kind string `json:"kind"`
	// Value is the user, company, API key (raw or its key: id), IP address or CIDR range.
	Value string `json:"value"`
}

// RateLimit is a token bucket per caller.
type RateLimit struct {
	// Key says what a bucket is kept per: user, company, key, ip or endpoint. Calls with no
	// user (company, key) are limited per client IP instead.
	Key string `json:"key"`
	// Rate is the refill rate: "100/s", "1000/m", "10/h", "5000/d", "30/10s".
	Rate string `json:"rate"`
	// Burst is the bucket size: how many calls are allowed at once. Default: the rate's
	// count.
	Burst int64 `json:"burst,omitempty"`
	// Name names the limit in the RateLimit header fields and in shared state. Default:
	// the key ("user"), with "-2", "-3"... for further limits on the same key.
	Name string `json:"name,omitempty"`
}

// Quota is a count of calls per caller per day or calendar month.
type Quota struct {
	// Key says what the quota is counted per: user, company, key or ip. Calls with no
	// user (company, key) are counted per client IP instead.
	Key string `json:"key"`
	// Limit is the number of calls per period: "100000/month" or "1000/day".
	Limit string `json:"limit"`
	// Timezone is the IANA time zone whose days and months the quota follows. Default UTC.
	Timezone string `json:"timezone,omitempty"`
	// Name names the quota in the RateLimit header fields and in shared state. Default:
	// key and period ("user-month").
	Name string `json:"name,omitempty"`
}

// policyScope is what a limit or quota is kept per: a kind of caller, and the policy ids
// for identified and for anonymous (per IP) callers.
type policyScope struct {
	kind       string
	id, anonID string
}

// key returns the policy id and the key a call counts under: the caller's value for the
// kind or, for a caller without one (anonymous), the client IP under the anonymous id.
func (p *policyScope) key(h *Handler, c *detector.Call, ip string) (pid, key string) {
	if key = h.callerKey(p.kind, c, ip); key != "" {
		return p.id, key
	}
	return p.anonID, ip
}

type limitPolicy struct {
	policyScope
	name        string
	rate        limit.Rate
	burst       int64
	headerQ     int64
	headerW     int64
	headerBurst int64
}

type quotaPolicy struct {
	policyScope
	name  string
	quota limit.Quota
	loc   *time.Location
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.vigil",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision compiles the configuration and finds the engine.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Slogger()
	appIface, err := ctx.App("vigil")
	if err != nil {
		return fmt.Errorf("getting vigil app: %w", err)
	}
	app := appIface.(*App)
	h.eng = app.engine

	id := Identify{User: "{http.auth.user.id}"}
	if h.Identify != nil {
		if h.Identify.User != "" {
			id.User = h.Identify.User
		}
		id.Company, id.Key = h.Identify.Company, h.Identify.Key
	}
	h.ids = [3]identSource{compileIdent(id.User), compileIdent(id.Company), compileIdent(id.Key)}

	if h.templates, err = endpoint.Compile(h.Endpoints); err != nil {
		return fmt.Errorf("endpoints: %w", err)
	}
	// The templates take their places among the endpoints now, so that a request that
	// matches one needs no lookup; one that finds max_series reached is counted as other.
	h.templates.InternWith(func(tmpl string) string { return h.eng.endpoint([]byte(tmpl)) })

	h.blocks = new(blocklist.List)
	for i, b := range h.Block {
		kind, err := blocklist.ParseKind(b.Kind)
		if err != nil {
			return fmt.Errorf("block[%d].kind: %w", i, err)
		}
		if kind == blocklist.IP && strings.Contains(b.Value, "/") {
			kind = blocklist.CIDR
		}
		if err := h.blocks.Add(blocklist.Entry{Kind: kind, Value: b.Value, Source: "config"}); err != nil {
			return fmt.Errorf("block[%d]: %w", i, err)
		}
	}

	names := map[string]bool{}
	uniqueName := func(given, base string) string {
		if given != "" {
			return given
		}
		n := base
		for i := 2; names[n]; i++ {
			n = base + "-" + strconv.Itoa(i)
		}
		return n
	}
	for i, rl := range h.RateLimits {
		if !validLimitKey(rl.Key, true) {
			return fmt.Errorf("rate_limits[%d].key: unknown kind %q (want user, company, key, ip or endpoint)", i, rl.Key)
		}
		rate, err := limit.ParseRate(rl.Rate)
		if err != nil {
			return fmt.Errorf("rate_limits[%d].rate: %w", i, err)
		}
		if rl.Burst < 0 {
			return fmt.Errorf("rate_limits[%d].burst: must not be negative", i)
		}
		name := uniqueName(rl.Name, rl.Key)
		if names[name] {
			return fmt.Errorf("rate_limits[%d].name: %q is used twice", i, name)
		}
		if err := limit.CheckName(name); err != nil {
			return fmt.Errorf("rate_limits[%d].name: %w", i, err)
		}
		names[name] = true
		p := limitPolicy{policyScope: policyScope{kind: rl.Key}, name: name, rate: rate, burst: rl.Burst}
		p.id = h.Scope + "/rl/" + name
		p.anonID = p.id + "/ip"
		p.headerQ, p.headerW = rate.PolicyParams()
		p.headerBurst = limit.Policy{Rate: rate, Burst: rl.Burst}.Capacity()
		h.limits = append(h.limits, p)
	}
	for i, q := range h.Quotas {
		if !validLimitKey(q.Key, false) {
			return fmt.Errorf("quotas[%d].key: unknown kind %q (want user, company, key or ip)", i, q.Key)
		}
		quota, err := limit.ParseQuota(q.Limit)
		if err != nil {
			return fmt.Errorf("quotas[%d].limit: %w", i, err)
		}
		loc := time.UTC
		if q.Timezone != "" {
			if loc, err = time.LoadLocation(q.Timezone); err != nil {
				return fmt.Errorf("quotas[%d].timezone: %w", i, err)
			}
		}
		name := uniqueName(q.Name, q.Key+"-"+quota.Period.String())
		if names[name] {
			return fmt.Errorf("quotas[%d].name: %q is used twice", i, name)
		}
		if err := limit.CheckName(name); err != nil {
			return fmt.Errorf("quotas[%d].name: %w", i, err)
		}
		names[name] = true
		p := quotaPolicy{policyScope: policyScope{kind: q.Key}, name: name, quota: quota, loc: loc}
		p.id = h.Scope + "/q/" + name
		p.anonID = p.id + "/ip"
		h.quotas = append(h.quotas, p)
	}
	if len(h.limits) > maxPolicies || len(h.quotas) > maxPolicies {
		return fmt.Errorf("at most %d rate limits and %d quotas per handler", maxPolicies, maxPolicies)
	}
	h.hasLimits = len(h.limits)+len(h.quotas) > 0
	h.policy = new(atomic.Pointer[cachedPolicy])
	for _, p := range h.limits {
		h.policyHeader = limit.AppendPolicy(h.policyHeader, p.name, p.headerQ, p.headerW, p.headerBurst)
	}
	app.register(h)
	return nil
}

// maxPolicies bounds the limits and quotas of one handler, so that their per-request
// state fits in fixed arrays on the stack.
const maxPolicies = 8

// ServeHTTP identifies, checks and records the call. Its latency is counted from Caddy's
// start of the request (the start_time variable), so that it includes the handlers
// before this one, as vigil_request_duration_seconds says.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	start, ok := vars["start_time"].(time.Time)
	if !ok {
		start = time.Now()
	}
	e := h.eng
	now := e.at(start)
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)

	c := detector.Call{
		Time:    now,
		Method:  detector.CanonicalMethod(r.Method),
		Path:    r.URL.Path,
		User:    orAnonymous(h.ids[0].get(r, repl, vars)),
		Company: orAnonymous(h.ids[1].get(r, repl, vars)),
		BytesIn: max(r.ContentLength, 0),
	}
	if raw := h.ids[2].get(r, repl, vars); raw != "" {
		c.Key = e.keyID(raw)
	} else {
		c.Key = identity.Anonymous
	}
	ipStr, _ := vars[caddyhttp.ClientIPVarKey].(string)
	if ip, err := netip.ParseAddr(ipStr); err == nil {
		c.IP = ip.Unmap().WithZone("")
	}
	var epBuf [endpoint.MaxLen]byte
	tmpl, normalized := h.templates.Endpoint(epBuf[:0], r.URL.Path)
	if c.Endpoint = tmpl; tmpl == "" { // a template's text was interned in Provision
		c.Endpoint = e.endpoint(normalized)
	}

	// Block list: this site's entries, then the run-time ones.
	caller := blocklist.Caller{User: c.User, Company: c.Company, Key: c.Key, IP: c.IP}
	entry, blocked := h.blocks.Match(caller, now)
	if !blocked {
		entry, blocked = e.blocks.Match(caller, now)
	}
	if blocked {
		e.metrics.Blocked(string(entry.Kind))
		c.Blocked = true
		c.Status = http.StatusForbidden
		c.BytesOut = int64(h.refuse(w, repl, http.StatusForbidden, "blocked", nil, 0))
		h.finish(&c, start, repl)
		return nil
	}

	if h.hasLimits {
		if refused := h.limit(w, r, repl, &c, ipStr, now); refused {
			c.Limited = true
			c.Status = http.StatusTooManyRequests
			h.finish(&c, start, repl)
			return nil
		}
	}

	sw := newStatusWriter(w)
	err := next.ServeHTTP(sw, r)
	c.Status, c.BytesOut = sw.status, int64(sw.size)
	if err != nil {
		c.Status = http.StatusInternalServerError
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			c.Status = he.StatusCode
		}
		c.Failure = classifyFailure(err)
	} else if c.Status == 0 {
		c.Status = http.StatusOK // nothing written: net/http answers 200
	}
	if repl != nil {
		if up, ok := repl.GetString("http.reverse_proxy.upstream.hostport"); ok && up != "" {
			c.Upstream = up
			if h.Upstream != "" {
				c.Upstream = h.Upstream
			}
			if c.Failure == detector.FailureNone && c.Status >= 500 {
				c.Failure = detector.FailureStatus
			}
		}
	}
	if c.Upstream == "" && h.Upstream != "" && c.Failure != detector.FailureNone {
		c.Upstream = h.Upstream // the proxy failed before it set the placeholder
	}
	sw.release()
	h.finish(&c, start, repl)
	return err
}

// finish records the call. The store counts it in the metrics too, as it applies it.
func (h *Handler) finish(c *detector.Call, start time.Time, repl *caddy.Replacer) {
	end := time.Now()
	c.Latency = end.Sub(start)
	c.Time = h.eng.at(end) // calls are counted when they complete
	if c.Status >= 400 && repl != nil {
		// Failed calls carry the request id of the access log, for samples in alerts.
		c.RequestID, _ = repl.GetString("http.request.uuid")
	}
	h.eng.store.Record(c)
}

// limit counts quotas and takes rate-limit tokens, sets the RateLimit header fields,
// and refuses the call with 429 when a limit or quota is exhausted. All of the call's
// limits go to the store in one Check, all or nothing.
func (h *Handler) limit(w http.ResponseWriter, r *http.Request, repl *caddy.Replacer, c *detector.Call, ip string, now time.Time) (refused bool) {
	var (
		qreqs [maxPolicies]limit.QuotaRequest
		reqs  [maxPolicies]limit.Request
		qd    [maxPolicies]limit.QuotaDecision
		out   [maxPolicies]limit.Decision
		hdr   [512]byte
		rl    = hdr[:0]
	)
	nq, nl := len(h.quotas), len(h.limits)
	for i := range h.quotas {
		p := &h.quotas[i]
		pid, key := p.key(h, c, ip)
		qreqs[i] = limit.QuotaRequest{PolicyID: pid, Key: key, Quota: p.quota, Loc: p.loc}
	}
	for i := range h.limits {
		p := &h.limits[i]
		pid, key := p.key(h, c, ip)
		reqs[i] = limit.Request{PolicyID: pid, Key: key, Rate: p.rate, Burst: p.burst}
	}
	ok, err := h.eng.limiter.Check(r.Context(), qreqs[:nq], reqs[:nl], now, qd[:nq], out[:nl])
	if err != nil {
		h.logger.Warn("rate limiter failed; allowing the call", "error", err)
		return false
	}
	if !ok {
		e := h.eng
		// A quota used up is reported alone, with the time its period ends.
		for i := 0; i < nq; i++ {
			if d := &qd[i]; !d.Allowed {
				e.metrics.QuotaExceeded(h.quotas[i].name)
				_, t := d.RateLimitParams(now)
				rl = limit.AppendRateLimit(rl, h.quotas[i].name, 0, t)
				h.setHeaders(w, rl, now, qd[:i+1])
				c.BytesOut = int64(h.refuse(w, repl, http.StatusTooManyRequests, "quota exceeded", []string{h.quotas[i].name}, t))
				return true
			}
		}
		var violated []string
		var retry int64
		for i := 0; i < nl; i++ {
			r, t := out[i].RateLimitParams()
			rl = limit.AppendRateLimit(rl, h.limits[i].name, r, t)
			if !out[i].Allowed {
				e.metrics.RateLimited(h.limits[i].name)
				violated = append(violated, h.limits[i].name)
				retry = max(retry, out[i].RetryAfterSeconds())
			}
		}
		h.setHeaders(w, rl, now, nil)
		c.BytesOut = int64(h.refuse(w, repl, http.StatusTooManyRequests, "rate limit exceeded", violated, retry))
		return true
	}
	for i := 0; i < nl; i++ {
		r, t := out[i].RateLimitParams()
		rl = limit.AppendRateLimit(rl, h.limits[i].name, r, t)
	}
	for i := 0; i < nq; i++ {
		r, t := qd[i].RateLimitParams(now)
		rl = limit.AppendRateLimit(rl, h.quotas[i].name, r, t)
	}
	h.setHeaders(w, rl, now, qd[:nq])
	return false
}

// setHeaders sets RateLimit-Policy (token buckets, then the quotas' current periods) and
// RateLimit.
func (h *Handler) setHeaders(w http.ResponseWriter, rl []byte, now time.Time, quotas []limit.QuotaDecision) {
	hdr := w.Header()
	hdr["Ratelimit-Policy"] = h.policyValue(quotas)
	hdr["Ratelimit"] = headerValue(rl)
}

// inlineValue is a header field value and its bytes in one allocation.
type inlineValue struct {
	v [1]string
	b [112]byte // 128 bytes in all, a size class; RateLimit of 3 policies fits
}

// headerValue returns b as a header field value: a []string of one string (len = cap =
// 1, so that a later Add copies instead of writing into it). A short value takes one
// allocation instead of two: its string points into the same object as the slice.
func headerValue(b []byte) []string {
	if len(b) == 0 || len(b) > len(inlineValue{}.b) {
		return []string{string(b)}
	}
	iv := new(inlineValue)
	n := copy(iv.b[:], b)
	iv.v[0] = unsafe.String(&iv.b[0], n) // iv.b is never written again
	return iv.v[:]
}

// cachedPolicy is a RateLimit-Policy value for the quotas' current period lengths.
type cachedPolicy struct {
	n   int
	w   [maxPolicies]int64
	val []string // len = cap = 1, so that a later Add copies instead of writing into it
}

// policyValue returns the RateLimit-Policy field value. It changes only when a quota's
// period length changes (a new month), so it is built once per period and shared.
func (h *Handler) policyValue(quotas []limit.QuotaDecision) []string {
	var w [maxPolicies]int64
	for i := range quotas {
		_, w[i] = quotas[i].PolicyParams()
	}
	if c := h.policy.Load(); c != nil && c.n == len(quotas) && c.w == w {
		return c.val
	}
	policy := append([]byte(nil), h.policyHeader...)
	for i := range quotas {
		q, wnd := quotas[i].PolicyParams()
		policy = limit.AppendPolicy(policy, h.quotas[i].name, q, wnd, q)
	}
	c := &cachedPolicy{n: len(quotas), w: w, val: []string{string(policy)}}
	h.policy.Store(c)
	return c.val
}

// callerKey returns the caller's value for a limit kind, or "" when the caller has none
// (anonymous), in which case the limit applies per client IP.
func (h *Handler) callerKey(kind string, c *detector.Call, ip string) string {
	var v string
	switch kind {
	case "user":
		v = c.User
	case "company":
		v = c.Company
	case "key":
		v = c.Key
	case "ip":
		return ip
	case "endpoint":
		return c.Endpoint
	}
	if v == identity.Anonymous {
		return ""
	}
	return v
}

// refuse writes Vigil's JSON answer for a refused call: {"error", "request_id"}, plus, for
// 429, the problem type and the violated policies, and Retry-After.
func (h *Handler) refuse(w http.ResponseWriter, repl *caddy.Replacer, status int, msg string, violated []string, retryAfter int64) int {
	var reqID string
	if repl != nil {
		reqID, _ = repl.GetString("http.request.uuid")
	}
	hdr := w.Header()
	if status == http.StatusTooManyRequests {
		hdr.Set("Retry-After", strconv.FormatInt(max(retryAfter, 1), 10))
		hdr.Set("Content-Type", "application/problem+json")
	} else {
		hdr.Set("Content-Type", "application/json")
	}
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	b := make([]byte, 0, 256)
	b = append(b, `{"error":`...)
	b = strconv.AppendQuote(b, msg)
	b = append(b, `,"request_id":`...)
	b = strconv.AppendQuote(b, reqID)
	if status == http.StatusTooManyRequests {
		typ := "https://iana.org/assignments/http-problem-types#quota-exceeded"
		b = append(b, `,"type":`...)
		b = strconv.AppendQuote(b, typ)
		b = append(b, `,"title":`...)
		b = strconv.AppendQuote(b, msg)
		b = append(b, `,"status":429,"violated-policies":[`...)
		for i, v := range violated {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendQuote(b, v)
		}
		b = append(b, ']')
	}
	b = append(b, "}\n"...)
	n, _ := w.Write(b)
	return n
}

func orAnonymous(s string) string {
	if s == "" {
		return identity.Anonymous
	}
	return s
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
