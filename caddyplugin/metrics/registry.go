// Package metrics holds Vigil's Prometheus metrics and writes them in the text exposition
// format (version 0.0.4), for `promtool check metrics` and for Prometheus queries such as
// histogram_quantile.
//
// It knows nothing of Caddy: the vigil app creates one [Registry] per process and keeps it
// across config reloads (beside the engine), so that counters neither reset nor double on
// a reload. The request path calls [Registry.RateLimited] and friends, and the store's
// background loop [Registry.ObserveRequest] for every call it applies; they cost a few
// atomic adds and allocate nothing once a label set has been seen; the engine reports
// alert, notifier and store figures through setters, usually from a hook that
// [Registry.WritePrometheus] runs just before writing.
//
// Every label is bounded. Endpoints beyond [Options.MaxEndpoints] and policy, rule or
// channel names beyond [Options.MaxLabelValues] are folded into the value [Other]; each
// fold is counted in vigil_metrics_label_overflow_total{family}, so that a cap set too low
// shows. Methods are the standard ones or OTHER, status classes 1xx to 5xx or none.
//
// The package does not use VictoriaMetrics/metrics. What it would give here is an atomic
// add per counter; its Histogram writes vmrange buckets that histogram_quantile cannot
// use, its PrometheusHistogram takes a mutex on every update, and its metadata switch
// (ExposeMetadata) is process-wide: any other module turning it on would add HELP lines
// with no text and a second TYPE line to every family, which promtool rejects.
package metrics

import (
	"sync"
	"sync/atomic"
	"time"
)

// ContentType is the Content-Type of what [Registry.WritePrometheus] writes.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Other is the label value that values beyond a cap are folded into. A value that is
// literally "other" shares its series.
const Other = "other"

// Default caps, used when the [Options] field is zero or negative.
const (
	DefaultMaxEndpoints   = 500
	DefaultMaxLabelValues = 200
)

// maxCap bounds both caps: each new label value copies the table of the values seen so
// far (see [table]), and an endpoint may cost 10 methods × 23 series.
const maxCap = 5000

// Options configures a [Registry]. The zero value gives the defaults.
type Options struct {
	// MaxEndpoints is how many distinct endpoint label values vigil_requests_total and
	// vigil_request_duration_seconds keep; requests to further endpoints are counted
	// under endpoint="other". Default 500, at most 5000.
	MaxEndpoints int
	// MaxLabelValues is how many distinct values each other free label keeps: the policy
	// of vigil_rate_limited_total and vigil_quota_exceeded_total, the rule of
	// vigil_alerts_firing and the channel of the notification metrics. They come from
	// configuration, so the cap only guards against mistakes. Default 200, at most 5000.
	MaxLabelValues int
}

// capOrDefault returns n, at most maxCap, or def when n is not positive.
func capOrDefault(n, def int) int {
	if n <= 0 {
		return def
	}
	return min(n, maxCap)
}

// Registry holds Vigil's metrics. Create one per process with [New]; all its methods are
// safe for concurrent use.
type Registry struct {
	endpoints     *table[endpointSeries]
	rateLimited   *table[counterSeries]
	quotaExceeded *table[counterSeries]
	blocked       [len(blockKinds) + 1]atomic.Uint64 // by blockKinds index; the last is Other

	// folded counts updates folded into Other, by family (the fold* constants).
	folded [len(foldFamilies)]atomic.Uint64

	maxLabels int

	// reportMu guards the values the engine reports; see reported.go.
	reportMu sync.Mutex
	reported reported

	hook           atomic.Pointer[func(*Registry)]
	scrapeMu       sync.Mutex // serialises scrapes, so that the hook reports in order
	lastScrapeSize int        // guarded by scrapeMu
}

// New returns a registry with every family empty.
func New(opts Options) *Registry {
	r := &Registry{maxLabels: capOrDefault(opts.MaxLabelValues, DefaultMaxLabelValues)}
	r.endpoints = newTable(capOrDefault(opts.MaxEndpoints, DefaultMaxEndpoints),
		&r.folded[foldRequests], newEndpointSeries)
	r.rateLimited = newTable(r.maxLabels, &r.folded[foldRateLimited], newCounterSeries)
	r.quotaExceeded = newTable(r.maxLabels, &r.folded[foldQuotaExceeded], newCounterSeries)
	r.reported.channels = make(map[string]*channelState)
	r.reported.otherChannel = &channelState{label: Other}
	return r
}

// Indexes of folded, one per family whose labels can overflow.
const (
	foldRequests = iota // endpoints; the duration histogram shares the endpoint table
	foldRateLimited
	foldBlocked
	foldQuotaExceeded
	foldAlertsFiring
	foldNotifications
)

// foldFamilies names the families of the fold* indexes, for the family label.
var foldFamilies = [...]string{
	foldRequests:      "vigil_requests_total",
	foldRateLimited:   "vigil_rate_limited_total",
	foldBlocked:       "vigil_blocked_total",
	foldQuotaExceeded: "vigil_quota_exceeded_total",
	foldAlertsFiring:  "vigil_alerts_firing",
	foldNotifications: "vigil_notifications_total",
}

// methods are the method label values: the methods of RFC 9110 and PATCH, then OTHER
// for any other (methods are case-sensitive, so "get" is OTHER).
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER"}

const methodOther = len(methods) - 1

func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "PATCH":
		return 4
	case "DELETE":
		return 5
	case "OPTIONS":
		return 6
	case "CONNECT":
		return 7
	case "TRACE":
		return 8
	}
	return methodOther
}

// classes are the class label values: by the hundreds digit of the status, and none for
// a request that got no status (0, as when the client went away) or one out of 100-599.
var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "none"}

const classNone = len(classes) - 1

func classIndex(status int) int {
	if status < 100 || status > 599 {
		return classNone
	}
	return status/100 - 1
}

// blockKinds are the kind label values of vigil_blocked_total: what a block-list entry
// matched. Any other kind is counted under Other.
var blockKinds = [...]string{"user", "company", "key", "ip", "cidr"}

// ObserveRequest counts a request handled by the gateway: its endpoint template (not the
// raw path), method, final status (0 when none was written) and how long it took. Call it
// once per request, blocked and limited ones included. It allocates nothing once the
// endpoint and method have been seen, nor for an endpoint folded into Other.
func (r *Registry) ObserveRequest(endpoint, method string, status int, d time.Duration) {
	s := r.endpoints.get(endpoint).method(methodIndex(method))
	s.requests[classIndex(status)].Add(1)
	s.duration.observe(d)
}

// RateLimited counts a request refused by the rate limit of the named policy.
func (r *Registry) RateLimited(policy string) {
	r.rateLimited.get(policy).n.Add(1)
}

// QuotaExceeded counts a request refused because the named policy's quota was used up.
func (r *Registry) QuotaExceeded(policy string) {
	r.quotaExceeded.get(policy).n.Add(1)
}

// Blocked counts a request refused by the block list, by the kind of entry that matched:
// user, company, key, ip or cidr. Any other kind is counted under Other, as a fold.
func (r *Registry) Blocked(kind string) {
	i := len(blockKinds)
	switch kind {
	case "user":
		i = 0
	case "company":
		i = 1
	case "key":
		i = 2
	case "ip":
		i = 3
	case "cidr":
		i = 4
	default:
		r.folded[foldBlocked].Add(1)
	}
	r.blocked[i].Add(1)
}

// counterSeries is one labelled counter.
type counterSeries struct {
	label string // the label value, escaped
	n     atomic.Uint64
}

func newCounterSeries(label string) *counterSeries {
	return &counterSeries{label: label}
}

// endpointSeries holds an endpoint's request counters and duration histogram, per
// method, each created on the method's first request.
type endpointSeries struct {
	label   string // the label value, escaped
	methods [len(methods)]atomic.Pointer[methodSeries]
}

func newEndpointSeries(label string) *endpointSeries {
	return &endpointSeries{label: label}
}

// method returns the series of method index m, creating it on first use.
func (e *endpointSeries) method(m int) *methodSeries {
	if s := e.methods[m].Load(); s != nil {
		return s
	}
	e.methods[m].CompareAndSwap(nil, new(methodSeries))
	return e.methods[m].Load()
}

// methodSeries is what vigil_requests_total and vigil_request_duration_seconds keep for
// one endpoint and method.
type methodSeries struct {
	requests [len(classes)]atomic.Uint64
	duration histogram
}
