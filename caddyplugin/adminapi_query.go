package caddyplugin

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigilgw/vigil/caddyplugin/identity"
	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/rules"
	"github.com/vigilgw/vigil/notifier"
)

func init() {
	handleAdmin("/vigil/events", adminRoute{http.MethodGet: listEvents})
	handleAdmin("/vigil/events/{id}", adminRoute{http.MethodGet: getEvent})
	handleAdmin("/vigil/series", adminRoute{http.MethodGet: getSeries})
	handleAdmin("/vigil/calls", adminRoute{http.MethodGet: listCalls})
	handleAdmin("/vigil/upstreams", adminRoute{http.MethodGet: listUpstreams})
	handleAdmin("/vigil/channels/{name}/test", adminRoute{http.MethodPost: testChannel})
}

var relTime = regexp.MustCompile(`^-(\d+)\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days|w|week|weeks)$`)

// parseTime reads a time for a query: "now", a relative time ("-12h", "-10min", "-7d",
// Apigee's grammar) or RFC 3339.
func parseTime(v string, now time.Time) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "now" {
		return now, nil
	}
	if m := relTime.FindStringSubmatch(v); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > 100*365*24*3600 {
			return time.Time{}, fmt.Errorf("%q is too far back", v)
		}
		var unit time.Duration
		switch m[2][0] {
		case 's':
			unit = time.Second
		case 'm':
			unit = time.Minute
		case 'h':
			unit = time.Hour
		case 'd':
			unit = 24 * time.Hour
		case 'w':
			unit = 7 * 24 * time.Hour
		}
		return now.Add(-time.Duration(n) * unit), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not now, a relative time (-12h, -10min, -7d) or an RFC 3339 time", v)
	}
	return t, nil
}

// timeRange reads from and to (defaults: from -1h, to now).
func timeRange(q url.Values, now time.Time, defFrom string) (from, to time.Time, err error) {
	f, t := q.Get("from"), q.Get("to")
	if f == "" {
		f = defFrom
	}
	if t == "" {
		t = "now"
	}
	if from, err = parseTime(f, now); err != nil {
		return from, to, badRequest("from", "from: %v", err)
	}
	if to, err = parseTime(t, now); err != nil {
		return from, to, badRequest("to", "to: %v", err)
	}
	if !from.Before(to) {
		return from, to, badRequest("from", "from: %s is not before to (%s)", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return from, to, nil
}

// intParam reads a non-negative integer query value with a default and a maximum.
func intParam(q url.Values, name string, def, maxV int) (int, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, badRequest(name, "%s: want a non-negative integer, got %q", name, v)
	}
	if n > maxV {
		return 0, badRequest(name, "%s: at most %d", name, maxV)
	}
	return n, nil
}

// knownParams refuses query parameters the route does not know, so that a typo does not
// silently return everything.
func knownParams(q url.Values, known ...string) error {
	for k := range q {
		if !contains(known, k) {
			return badRequest(k, "%s: unknown query parameter (known: %s)", k, strings.Join(known, ", "))
		}
	}
	return nil
}

// eventPage is the answer of GET /vigil/events.
type eventPage struct {
	Events []alert.Event `json:"events"`
	Total  int           `json:"total"`
	Offset int           `json:"offset"`
	Limit  int           `json:"limit"`
}

func listEvents(e *engine, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := knownParams(q, "from", "to", "type", "threshold", "state", "rule", "limit", "offset"); err != nil {
		return err
	}
	f, err := parseEventFilter(q, e.now())
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", 100, 1000)
	if err != nil {
		return err
	}
	offset, err := intParam(q, "offset", 0, math.MaxInt32)
	if err != nil {
		return err
	}
	evs, total := e.rules.History().Events(f, offset, limit)
	writeJSON(w, http.StatusOK, eventPage{Events: evs, Total: total, Offset: offset, Limit: limit})
	return nil
}

// parseEventFilter reads the event query parameters.
func parseEventFilter(q url.Values, now time.Time) (rules.EventFilter, error) {
	var f rules.EventFilter
	var err error
	if f.From, f.To, err = timeRange(q, now, "-24h"); err != nil {
		return f, err
	}
	if f.Types, err = listParam(q.Get("type"), "type", []string{alert.TypeAlert, alert.TypeAnomaly, alert.TypeCohort, alert.TypeTest}); err != nil {
		return f, err
	}
	if f.States, err = listParam(q.Get("state"), "state", []string{"firing", "resolved", "pending", "inactive"}); err != nil {
		return f, err
	}
	if f.Thresholds, err = listParam(q.Get("threshold"), "threshold", nil); err != nil {
		return f, err
	}
	if f.Rules, err = listParam(q.Get("rule"), "rule", nil); err != nil {
		return f, err
	}
	return f, nil
}

func getEvent(e *engine, w http.ResponseWriter, r *http.Request) error {
	ev, ok := e.rules.History().Get(r.PathValue("id"))
	if !ok {
		return notFound("no event with id %q (events beyond the history's size are dropped)", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, ev)
	return nil
}

// filterFromQuery reads the call filter parameters shared by series and calls.
func filterFromQuery(q url.Values) (*detector.Matcher, error) {
	f := detector.Filter{
		Endpoint: q.Get("endpoint"), Method: q.Get("method"), Status: q.Get("status"), User: q.Get("user"),
		Company: q.Get("company"), Key: q.Get("key"), Upstream: q.Get("upstream"),
	}
	if f.Key != "" && !identity.IsKeyID(f.Key) {
		f.Key = identity.KeyID(f.Key)
	}
	for _, name := range []string{"blocked", "limited"} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, badRequest(name, "%s: want true or false, got %q", name, v)
		}
		if name == "blocked" {
			f.Blocked = &b
		} else {
			f.Limited = &b
		}
	}
	m, err := f.Compile()
	if err != nil {
		if fe, ok := err.(*detector.FieldError); ok {
			return nil, badRequest(fe.Field, "%v", err)
		}
		return nil, badRequest("filter", "%v", err)
	}
	return m, nil
}

var seriesMetrics = []string{rules.MetricCount, rules.MetricErrorRate, rules.MetricSuccessRate, rules.MetricLatencyAvg,
	rules.MetricLatencyP50, rules.MetricLatencyP90, rules.MetricLatencyP99, rules.MetricUniqueUsers}

// seriesAnswer is the answer of GET /vigil/series.
type seriesAnswer struct {
	Metric  string        `json:"metric"`
	From    time.Time     `json:"from"`
	To      time.Time     `json:"to"`
	Step    string        `json:"step"`
	GroupBy []string      `json:"group_by"`
	Series  []seriesGroup `json:"series"`
}

type seriesGroup struct {
	Group  map[string]string `json:"group"`
	Points [][2]any          `json:"points"` // [time, value]; value null when there were no calls
}

func getSeries(e *engine, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := knownParams(q, "metric", "endpoint", "method", "status", "user", "company", "key", "upstream", "blocked", "limited", "group_by", "from", "to", "step"); err != nil {
		return err
	}
	metric := q.Get("metric")
	if metric == "" {
		metric = rules.MetricCount
	}
	if !contains(seriesMetrics, metric) {
		return badRequest("metric", "metric: %q is not one of %s", metric, strings.Join(seriesMetrics, ", "))
	}
	m, err := filterFromQuery(q)
	if err != nil {
		return err
	}
	groupNames, err := listParam(q.Get("group_by"), "group_by", []string{"user", "company", "key", "endpoint", "upstream", "status", "method"})
	if err != nil {
		return err
	}
	var group detector.DimSet
	for _, g := range groupNames {
		d, _ := detector.ParseDim(g)
		group |= detector.Dims(d)
	}
	from, to, err := timeRange(q, e.now(), "-1h")
	if err != nil {
		return err
	}
	step := time.Minute
	if v := q.Get("step"); v != "" {
		if step, err = rules.ParseDuration(v); err != nil || step <= 0 {
			return badRequest("step", "step: %q is not a positive duration (10s, 1m, 1h)", v)
		}
	}
	start, groups, err := e.store.Range(&detector.RangeQuery{Filter: m, GroupBy: group, From: from, To: to, Step: step})
	if err != nil {
		if fe, ok := err.(*detector.FieldError); ok {
			return badRequest(fe.Field, "%v", err)
		}
		return badRequest("group_by", "%v", err)
	}
	c := &metricOf{metric: metric}
	ans := seriesAnswer{Metric: metric, From: start, To: to.UTC(), Step: rules.FormatDuration(step), GroupBy: groupNames, Series: []seriesGroup{}}
	if ans.GroupBy == nil {
		ans.GroupBy = []string{}
	}
	detector.SortRangeGroups(groups, group)
	for _, g := range groups {
		sg := seriesGroup{Group: g.Group.Map(group), Points: make([][2]any, len(g.Points))}
		for i := range g.Points {
			t := start.Add(time.Duration(i) * step)
			var v any
			if x := c.value(&g.Points[i]); !math.IsNaN(x) {
				v = math.Round(x*1e4) / 1e4
			}
			sg.Points[i] = [2]any{t.Format(time.RFC3339), v}
		}
		ans.Series = append(ans.Series, sg)
	}
	writeJSON(w, http.StatusOK, ans)
	return nil
}

// metricOf computes a metric over an aggregate, as rules do.
type metricOf struct{ metric string }

func (m *metricOf) value(a *detector.Aggregate) float64 {
	switch m.metric {
	case rules.MetricCount:
		return float64(a.Count)
	case rules.MetricErrorRate:
		return a.ErrorRate()
	case rules.MetricSuccessRate:
		return a.SuccessRate()
	case rules.MetricLatencyAvg:
		return a.LatencyAvg()
	case rules.MetricLatencyP50:
		return a.LatencyQuantile(0.5)
	case rules.MetricLatencyP90:
		return a.LatencyQuantile(0.9)
	case rules.MetricLatencyP99:
		return a.LatencyQuantile(0.99)
	case rules.MetricUniqueUsers:
		return float64(a.UniqueCallers())
	}
	return math.NaN()
}

// callView is a recorded call as the calls API shows it.
type callView struct {
	Time      time.Time `json:"time"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	Endpoint  string    `json:"endpoint"`
	Status    int       `json:"status"`
	LatencyMS float64   `json:"latency_ms"`
	BytesIn   int64     `json:"bytes_in"`
	BytesOut  int64     `json:"bytes_out"`
	User      string    `json:"user"`
	Company   string    `json:"company"`
	Key       string    `json:"key"`
	IP        string    `json:"ip,omitempty"`
	Upstream  string    `json:"upstream,omitempty"`
	Failure   string    `json:"failure,omitempty"`
	Blocked   bool      `json:"blocked,omitempty"`
	Limited   bool      `json:"limited,omitempty"`
	RequestID string    `json:"request_id,omitempty"`
}

func listCalls(e *engine, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if err := knownParams(q, "endpoint", "method", "status", "user", "company", "key", "upstream", "blocked", "limited", "limit"); err != nil {
		return err
	}
	m, err := filterFromQuery(q)
	if err != nil {
		return err
	}
	limit, err := intParam(q, "limit", 100, e.store.Config().RecentCalls)
	if err != nil {
		return err
	}
	out := []callView{}
	e.store.Recent(m, func(c *detector.Call) bool {
		if len(out) >= limit {
			return false
		}
		v := callView{Time: c.Time.UTC(), Method: c.Method, Path: c.Path, Endpoint: c.Endpoint, Status: c.Status,
			LatencyMS: math.Round(float64(c.Latency)/float64(time.Millisecond)*1000) / 1000, BytesIn: c.BytesIn, BytesOut: c.BytesOut,
			User: c.User, Company: c.Company, Key: c.Key, Upstream: c.Upstream, Failure: c.Failure.String(),
			Blocked: c.Blocked, Limited: c.Limited, RequestID: c.RequestID}
		if c.IP.IsValid() {
			v.IP = c.IP.String()
		}
		out = append(out, v)
		return true
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// upstreamWindow is an upstream's health over one window.
type upstreamWindow struct {
	Calls       uint64            `json:"calls"`
	Failures    uint64            `json:"failures"`
	FailureRate float64           `json:"failure_rate"`
	ByKind      map[string]uint64 `json:"by_kind"`
	LatencyMS   map[string]any    `json:"latency_ms"`
}

// upstreamView is one upstream's health.
type upstreamView struct {
	Upstream   string                    `json:"upstream"`
	Windows    map[string]upstreamWindow `json:"windows"`
	OpenAlerts []openAlert               `json:"open_alerts"`
}

type openAlert struct {
	RuleID    string    `json:"rule_id"`
	RuleName  string    `json:"rule_name"`
	StartedAt time.Time `json:"started_at"`
}

var upstreamWindows = []struct {
	name string
	d    time.Duration
}{{"1m", time.Minute}, {"5m", 5 * time.Minute}, {"1h", time.Hour}}

func listUpstreams(e *engine, w http.ResponseWriter, r *http.Request) error {
	if err := knownParams(r.URL.Query()); err != nil {
		return err
	}
	now := e.now()
	byName := map[string]*upstreamView{}
	for _, win := range upstreamWindows {
		aggs, err := e.store.Aggregate(&detector.Query{GroupBy: detector.Dims(detector.DimUpstream), Window: win.d, End: now, Need: detector.NeedLatency})
		if err != nil {
			return err
		}
		for i := range aggs {
			a := &aggs[i]
			name := a.Group.Upstream
			if name == "" {
				continue // calls that reached no upstream (blocked, limited, answered by caddy)
			}
			u := byName[name]
			if u == nil {
				u = &upstreamView{Upstream: name, Windows: map[string]upstreamWindow{}, OpenAlerts: []openAlert{}}
				byName[name] = u
			}
			uw := upstreamWindow{Calls: a.Total, ByKind: map[string]uint64{"status": a.Status5xx}, LatencyMS: map[string]any{}}
			for f := detector.FailureConnect; f <= detector.FailureOther; f++ {
				n := a.FailuresOf(f)
				uw.ByKind[f.String()] = n
				uw.ByKind["status"] -= min(n, uw.ByKind["status"]) // failures without a status are in the 5xx class
			}
			uw.Failures = a.Status5xx
			if a.Total > 0 {
				uw.FailureRate = math.Round(10000*float64(uw.Failures)/float64(a.Total)) / 100
			}
			for _, p := range []struct {
				name string
				q    float64
			}{{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}} {
				if v := a.LatencyQuantile(p.q); !math.IsNaN(v) {
					uw.LatencyMS[p.name] = math.Round(v*1000) / 1000
				} else {
					uw.LatencyMS[p.name] = nil
				}
			}
			u.Windows[win.name] = uw
		}
	}
	for _, in := range e.rules.Instances() {
		if in.State != alert.Firing || in.Upstream == "" {
			continue
		}
		if u := byName[in.Upstream]; u != nil {
			u.OpenAlerts = append(u.OpenAlerts, openAlert{RuleID: in.RuleID, RuleName: in.RuleName, StartedAt: in.StartedAt})
		} else {
			byName[in.Upstream] = &upstreamView{Upstream: in.Upstream, Windows: map[string]upstreamWindow{},
				OpenAlerts: []openAlert{{RuleID: in.RuleID, RuleName: in.RuleName, StartedAt: in.StartedAt}}}
		}
	}
	out := make([]*upstreamView, 0, len(byName))
	for _, u := range byName {
		for _, win := range upstreamWindows {
			if _, ok := u.Windows[win.name]; !ok {
				u.Windows[win.name] = upstreamWindow{ByKind: map[string]uint64{}, LatencyMS: map[string]any{"p50": nil, "p90": nil, "p99": nil}}
			}
		}
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Upstream < out[j].Upstream })
	writeJSON(w, http.StatusOK, out)
	return nil
}

func testChannel(e *engine, w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	e.queueMu.Lock()
	q := e.queue
	e.queueMu.Unlock()
	cfg := e.cfg.Load()
	if q == nil || cfg == nil || !cfg.app.channelNames()[name] {
		return notFound("no channel named %q", name)
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	b := notifier.TestBatch(name, e.now())
	d, err := q.SendNow(ctx, name, b)
	if err != nil && d.Error == "" {
		d.Error = err.Error()
	}
	e.rules.History().Add(b.Events)
	for _, ev := range b.Events {
		e.rules.History().RecordDelivery(ev.ID, d)
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}
