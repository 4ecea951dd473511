package rules

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
)

// recorder is a test notifier that keeps every batch.
type recorder struct {
	mu      sync.Mutex
	batches []alert.Batch
}

func (r *recorder) Notify(b alert.Batch) {
	r.mu.Lock()
	r.batches = append(r.batches, b)
	r.mu.Unlock()
}

// take returns the batches received since the last take.
func (r *recorder) take() []alert.Batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.batches
	r.batches = nil
	return b
}

func (r *recorder) states() string {
	var parts []string
	for _, b := range r.take() {
		for _, ev := range b.Events {
			s := string(ev.State)
			if ev.Repeat {
				s = "repeat"
			}
			if len(ev.Group) > 0 {
				var g []string
				for k, v := range ev.Group {
					g = append(g, k+"="+v)
				}
				s += "(" + strings.Join(g, ",") + ")"
			}
			parts = append(parts, b.Channel+":"+ev.RuleID+":"+s)
		}
	}
	return strings.Join(parts, " ")
}

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func f64(v float64) *float64 { return &v }

type harness struct {
	t     *testing.T
	store *detector.Store
	eng   *Engine
	rec   *recorder
}

func newHarness(t *testing.T, rules ...Rule) *harness {
	t.Helper()
	h := &harness{t: t, store: detector.New(detector.Config{}), rec: &recorder{}}
	h.eng = NewEngine(h.store, Options{Notifier: h.rec})
	if err := h.eng.SetRules(rules, t0); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) calls(at time.Time, n int, c detector.Call) {
	for i := 0; i < n; i++ {
		c.Time = at
		if c.Method == "" {
			c.Method = "GET"
		}
		if c.Endpoint == "" {
			c.Endpoint = "/users/{id}"
		}
		if c.Latency == 0 {
			c.Latency = 10 * time.Millisecond
		}
		h.store.Record(&c)
	}
}

// step evaluates at t and checks the notified events ("" for none).
func (h *harness) step(at time.Time, want string) {
	h.t.Helper()
	// Evaluate a moment after the calls of that second, as a real tick does.
	h.eng.Evaluate(at.Add(time.Millisecond))
	if got := h.rec.states(); got != want {
		h.t.Fatalf("at +%s: notified %q, want %q", at.Sub(t0), got, want)
	}
}

func TestLifecycleFiringThenResolved(t *testing.T) {
	h := newHarness(t, Rule{Name: "401 storm", Metric: "count", Filter: detector.Filter{Status: "401"},
		Window: Duration(time.Minute), Threshold: f64(2), Notify: []string{"ops"}})
	h.calls(t0, 2, detector.Call{Status: 401})
	h.calls(t0, 5, detector.Call{Status: 200})
	h.step(t0, "") // 2 is not > 2
	h.calls(t0.Add(time.Second), 1, detector.Call{Status: 401})
	h.step(t0.Add(time.Second), "ops:401-storm:firing")
	h.step(t0.Add(30*time.Second), "") // still firing, no repeat without throttle
	// The window slides past the calls: resolved.
	h.step(t0.Add(62*time.Second), "ops:401-storm:resolved")
	h.step(t0.Add(63*time.Second), "")
}

func TestLifecyclePendingFor(t *testing.T) {
	h := newHarness(t, Rule{Name: "errors", Metric: "count", Filter: detector.Filter{Status: "5xx"},
		Window: Duration(10 * time.Minute), Threshold: f64(0), For: Duration(30 * time.Second), Notify: []string{"ops"}})
	h.calls(t0, 1, detector.Call{Status: 500})
	h.step(t0, "")
	h.step(t0.Add(29*time.Second), "")
	h.step(t0.Add(30*time.Second), "ops:errors:firing")
	// Pending is in the history (not notified).
	evs, _ := h.eng.History().Events(EventFilter{States: []string{"pending"}}, 0, 0)
	if len(evs) != 1 {
		t.Fatalf("%d pending events in the history, want 1", len(evs))
	}
	// A condition that clears before "for" lapses without firing.
	h2 := newHarness(t, Rule{Name: "e2", Metric: "count", Filter: detector.Filter{Status: "5xx"},
		Window: Duration(10 * time.Second), Threshold: f64(0), For: Duration(30 * time.Second), Notify: []string{"ops"}})
	h2.calls(t0, 1, detector.Call{Status: 500})
	h2.step(t0, "")
	h2.step(t0.Add(20*time.Second), "")
	h2.step(t0.Add(40*time.Second), "")
	evs, _ = h2.eng.History().Events(EventFilter{}, 0, 0)
	if len(evs) != 2 || evs[0].State != alert.Inactive || evs[1].State != alert.Pending {
		t.Fatalf("history %+v, want pending then inactive", evs)
	}
}

func TestThrottleRepeats(t *testing.T) {
	h := newHarness(t, Rule{Name: "r", Metric: "count", Window: Duration(time.Hour), Threshold: f64(0),
		Throttle: Throttle{Every: time.Minute}, Notify: []string{"ops"}})
	h.calls(t0, 1, detector.Call{Status: 200})
	h.step(t0, "ops:r:firing")
	h.step(t0.Add(59*time.Second), "")
	h.step(t0.Add(60*time.Second), "ops:r:repeat")
	h.step(t0.Add(90*time.Second), "")
	h.step(t0.Add(120*time.Second), "ops:r:repeat")
}

func TestThrottleOnce(t *testing.T) {
	h := newHarness(t, Rule{Name: "feature", Metric: "count", Window: Duration(time.Minute), Threshold: f64(0),
		GroupBy: []string{"company"}, Throttle: Throttle{Once: true}, Notify: []string{"sales"}})
	h.calls(t0, 1, detector.Call{Status: 200, Company: "acme"})
	h.step(t0, "sales:feature:firing(company=acme)")
	h.step(t0.Add(2*time.Minute), "") // resolved, not notified
	h.calls(t0.Add(3*time.Minute), 1, detector.Call{Status: 200, Company: "acme"})
	h.step(t0.Add(3*time.Minute), "") // fires again: never notified again
	h.calls(t0.Add(3*time.Minute), 1, detector.Call{Status: 200, Company: "globex"})
	h.step(t0.Add(3*time.Minute+time.Second), "sales:feature:firing(company=globex)")
}

func TestHysteresis(t *testing.T) {
	h := newHarness(t, Rule{Name: "err", Metric: "error_rate", Window: Duration(10 * time.Second), Threshold: f64(10),
		ResolveBelow: f64(5), Notify: []string{"ops"}})
	at := t0
	// 20% errors: fires.
	h.calls(at, 8, detector.Call{Status: 200})
	h.calls(at, 2, detector.Call{Status: 500})
	h.step(at, "ops:err:firing")
	// 8% errors: below the threshold but above resolve_below: still firing.
	at = at.Add(20 * time.Second)
	h.calls(at, 92, detector.Call{Status: 200})
	h.calls(at, 8, detector.Call{Status: 500})
	h.step(at, "")
	// 12% then 8% again: no flapping.
	at = at.Add(20 * time.Second)
	h.calls(at, 88, detector.Call{Status: 200})
	h.calls(at, 12, detector.Call{Status: 500})
	h.step(at, "")
	// 4%: resolved.
	at = at.Add(20 * time.Second)
	h.calls(at, 96, detector.Call{Status: 200})
	h.calls(at, 4, detector.Call{Status: 500})
	h.step(at, "ops:err:resolved")
	// Without hysteresis the same 8% would resolve.
	h2 := newHarness(t, Rule{Name: "err", Metric: "error_rate", Window: Duration(10 * time.Second), Threshold: f64(10), Notify: []string{"ops"}})
	h2.calls(t0, 8, detector.Call{Status: 200})
	h2.calls(t0, 2, detector.Call{Status: 500})
	h2.step(t0, "ops:err:firing")
	h2.calls(t0.Add(20*time.Second), 92, detector.Call{Status: 200})
	h2.calls(t0.Add(20*time.Second), 8, detector.Call{Status: 500})
	h2.step(t0.Add(20*time.Second), "ops:err:resolved")
}

func TestMinCalls(t *testing.T) {
	h := newHarness(t, Rule{Name: "err", Metric: "error_rate", Filter: detector.Filter{Upstream: "up"}, Window: Duration(time.Minute),
		Threshold: f64(5), MinCalls: 100, Notify: []string{"ops"}})
	h.calls(t0, 10, detector.Call{Status: 500, Upstream: "up"}) // 100% errors, but only 10 calls
	h.step(t0, "")
	h.calls(t0, 90, detector.Call{Status: 200, Upstream: "up"}) // 10% of 100 calls
	h.step(t0.Add(time.Second), "ops:err:firing")
}

func TestGroupByAndCap(t *testing.T) {
	h := newHarness(t, Rule{Name: "big users", Metric: "count", Window: Duration(time.Minute), Threshold: f64(2),
		GroupBy: []string{"user"}, MaxGroups: 2, Notify: []string{"sales"}})
	for _, u := range []string{"u-1", "u-2", "u-3"} {
		h.calls(t0, 3, detector.Call{Status: 200, User: u})
	}
	h.calls(t0, 1, detector.Call{Status: 200, User: "u-small"})
	h.step(t0, "sales:big-users:firing(user=u-1) sales:big-users:firing(user=u-2)")
	if got := h.eng.Overflow()["big-users"]; got != 1 {
		t.Fatalf("overflow %d, want 1 (u-3 beyond max_groups 2)", got)
	}
}

func TestStormGroupedPerChannelAndTick(t *testing.T) {
	var rs []Rule
	for i := 0; i < 50; i++ {
		rs = append(rs, Rule{Name: fmt.Sprintf("rule %d", i), Metric: "count", Filter: detector.Filter{Upstream: "partner"},
			Window: Duration(time.Minute), Threshold: f64(float64(i % 3)), Notify: []string{"pager", "slack"}})
	}
	h := newHarness(t, rs...)
	h.calls(t0, 10, detector.Call{Status: 502, Upstream: "partner"})
	h.eng.Evaluate(t0.Add(time.Millisecond))
	batches := h.rec.take()
	if len(batches) != 2 {
		t.Fatalf("%d batches, want one per channel (2)", len(batches))
	}
	for _, b := range batches {
		if len(b.Events) != 50 || b.Firing() != 50 {
			t.Fatalf("batch for %s has %d events (%d firing), want 50", b.Channel, len(b.Events), b.Firing())
		}
	}
}

func TestReloadKeepsUnchangedRuleState(t *testing.T) {
	r := Rule{Name: "r", Metric: "count", Window: Duration(time.Minute), Threshold: f64(0), Notify: []string{"ops"}}
	h := newHarness(t, r)
	h.calls(t0, 1, detector.Call{Status: 200})
	h.step(t0, "ops:r:firing")
	// Same rule (a new notify list does not count as a change): no second firing.
	r2 := r
	r2.Notify = []string{"ops", "audit"}
	if err := h.eng.SetRules([]Rule{r2}, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	h.step(t0.Add(2*time.Second), "")
	// It resolves when the condition clears, to both channels now.
	h.step(t0.Add(2*time.Minute), "ops:r:resolved audit:r:resolved")
	// A changed rule starts fresh: its firing instance is resolved and it fires again.
	h.calls(t0.Add(3*time.Minute), 1, detector.Call{Status: 200})
	h.step(t0.Add(3*time.Minute), "ops:r:firing audit:r:firing")
	r3 := r2
	r3.Window = Duration(2 * time.Minute)
	if err := h.eng.SetRules([]Rule{r3}, t0.Add(3*time.Minute+time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := h.rec.states(); got != "ops:r:resolved audit:r:resolved" {
		t.Fatalf("changed rule: notified %q, want the old instance resolved", got)
	}
	h.step(t0.Add(3*time.Minute+2*time.Second), "ops:r:firing audit:r:firing")
	// A bad rule set changes nothing.
	bad := r3
	bad.Metric = "nonsense"
	if err := h.eng.SetRules([]Rule{bad}, t0.Add(4*time.Minute)); err == nil || !strings.Contains(err.Error(), "metric") {
		t.Fatalf("bad rule: err %v, want one naming metric", err)
	}
	if rs := h.eng.Rules(); len(rs) != 1 || rs[0].Window != r3.Window {
		t.Fatalf("rules after a failed SetRules: %+v", rs)
	}
	// A removed rule resolves what it had firing.
	if err := h.eng.SetRules(nil, t0.Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := h.rec.states(); got != "ops:r:resolved audit:r:resolved" {
		t.Fatalf("removed rule: notified %q", got)
	}
}

func TestPercentChangeAgainstLastWeek(t *testing.T) {
	h := newHarness(t, Rule{Name: "usage up", Metric: "percent_change", GroupBy: []string{"company"},
		Window: Duration(time.Hour), Compare: Duration(7 * 24 * time.Hour), Threshold: f64(20), Notify: []string{"sales"}})
	weekAgo := t0.Add(-7 * 24 * time.Hour)
	h.calls(weekAgo.Add(-10*time.Minute), 100, detector.Call{Status: 200, Company: "acme"})
	h.calls(weekAgo.Add(-10*time.Minute), 100, detector.Call{Status: 200, Company: "globex"})
	h.calls(t0.Add(-10*time.Minute), 125, detector.Call{Status: 200, Company: "acme"})   // +25%
	h.calls(t0.Add(-10*time.Minute), 110, detector.Call{Status: 200, Company: "globex"}) // +10%
	h.step(t0, "sales:usage-up:firing(company=acme)")
	evs, _ := h.eng.History().Events(EventFilter{States: []string{"firing"}}, 0, 1)
	if len(evs) != 1 || evs[0].Value != 25 {
		t.Fatalf("event value %v, want 25", evs[0].Value)
	}
}

// TestMetricsMatchAggregates checks every static metric the engine computes against the
// store's aggregate of the same calls.
func TestMetricsMatchAggregates(t *testing.T) {
	store := detector.New(detector.Config{})
	for i := 0; i < 500; i++ {
		c := detector.Call{Time: t0.Add(-time.Duration(i%50) * time.Second), Method: "GET", Endpoint: "/x",
			Status: []int{200, 200, 404, 500, 503}[i%5], Latency: time.Duration(1+i%97) * time.Millisecond, User: fmt.Sprintf("u-%d", i%37)}
		store.Record(&c)
	}
	sel := store.Select(nil, 0)
	aggs, err := sel.Aggregate(time.Minute, t0.Add(time.Millisecond), detector.NeedAll)
	if err != nil || len(aggs) != 1 {
		t.Fatal(err, len(aggs))
	}
	a := &aggs[0]
	for metric, want := range map[string]float64{
		"count": 500, "error_rate": 40, "success_rate": 40, "unique_users": 37,
		"latency_avg": a.LatencyAvg(), "latency_p50": a.LatencyQuantile(0.5), "latency_p90": a.LatencyQuantile(0.9), "latency_p99": a.LatencyQuantile(0.99),
	} {
		c := &compiled{rule: Rule{Metric: metric}}
		if got := c.value(a); math.Abs(got-want) > 1e-9 {
			t.Errorf("%s: %v, want %v", metric, got, want)
		}
	}
}

func TestEventShape(t *testing.T) {
	h := newHarness(t, Rule{Name: "401 storm", Metric: "count", Filter: detector.Filter{Status: "401"}, GroupBy: []string{"user"},
		Window: Duration(15 * time.Minute), Threshold: f64(2), Notify: []string{"ops"}, Playbook: "https://wiki/401", Severity: "critical"})
	h.calls(t0, 3, detector.Call{Status: 401, User: "u-42", Path: "/users/42", RequestID: "rq-1"})
	h.eng.Evaluate(t0.Add(time.Millisecond))
	b := h.rec.take()
	if len(b) != 1 || len(b[0].Events) != 1 {
		t.Fatalf("batches %+v", b)
	}
	ev := b[0].Events[0]
	if !strings.HasPrefix(ev.ID, "ev_") || ev.RuleID != "401-storm" || ev.RuleName != "401 storm" || ev.Type != "alert" ||
		ev.State != alert.Firing || ev.Group["user"] != "u-42" || ev.Value != 3 || *ev.Expected != 2 || ev.Threshold != "> 2" ||
		ev.Playbook != "https://wiki/401" || ev.Severity != "critical" || ev.ResolvedAt != nil || !ev.StartedAt.Equal(t0.Add(time.Millisecond)) {
		t.Fatalf("event %+v", ev)
	}
	if len(ev.Samples) != 3 || ev.Samples[0].Path != "/users/42" || ev.Samples[0].Status != 401 || ev.Samples[0].RequestID != "rq-1" {
		t.Fatalf("samples %+v", ev.Samples)
	}
}

func TestValidationNamesField(t *testing.T) {
	for _, tc := range []struct {
		json, field string
	}{
		{`{"name": "x", "metric": "count", "threshold": "abc"}`, "threshold"},
		{`{"name": "x", "metric": "count"}`, "threshold"},
		{`{"name": "x", "metric": "speed", "threshold": 1}`, "metric"},
		{`{"metric": "count", "threshold": 1}`, "name"},
		{`{"name": "x", "metric": "count", "threshold": 1, "window": "soon"}`, "window"},
		{`{"name": "x", "metric": "count", "threshold": 1, "comparator": "~"}`, "comparator"},
		{`{"name": "x", "metric": "count", "threshold": 1, "group_by": ["planet"]}`, "group_by[0]"},
		{`{"name": "x", "metric": "count", "threshold": 1, "filter": {"status": "6xx"}}`, "filter.status"},
		{`{"name": "x", "metric": "count", "threshold": 1, "colour": "red"}`, "colour"},
		{`{"name": "x", "metric": "count", "threshold": 1, "throttle": "often"}`, "throttle"},
		{`{"name": "x", "metric": "count", "threshold": 1, "resolve_below": 5}`, "resolve_below"},
		{`{"name": "x", "metric": "count", "threshold": 1, "compare": "7d"}`, "compare"},
		{`{"name": "x", "metric": "count", "threshold": 1, "severity": "meh"}`, "severity"},
		{`{"name": "x", "type": "weird", "metric": "count", "threshold": 1}`, "type"},
		{`{"name": "x", "metric": "count", "threshold": 1, "window": "40d"}`, "window"},
	} {
		_, err := DecodeRule([]byte(tc.json))
		var fe *FieldError
		if err == nil || !asFieldError(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: error %v, want one naming %q", tc.json, err, tc.field)
		}
	}
	r, err := DecodeRule([]byte(`{"name": "401 Storm!", "metric": "count", "threshold": 20, "window": "15m", "throttle": "1h", "filter": {"status": "401"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "401-storm" || r.Comparator != ">" || r.Throttle.Every != time.Hour || time.Duration(r.Window) != 15*time.Minute {
		t.Fatalf("decoded %+v", r)
	}
}

func asFieldError(err error, fe **FieldError) bool {
	for err != nil {
		if f, ok := err.(*FieldError); ok {
			*fe = f
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"15m": 15 * time.Minute, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "2w": 14 * 24 * time.Hour, "0s": 0, "90s": 90 * time.Second} {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for d, want := range map[time.Duration]string{15 * time.Minute: "15m", 7 * 24 * time.Hour: "7d", 90 * time.Minute: "1h30m", 36 * time.Hour: "1d12h", 2 * time.Hour: "2h", 90 * time.Second: "1m30s", 0: "0s"} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func FuzzDecodeRule(f *testing.F) {
	f.Add([]byte(`{"name": "401 storm", "metric": "count", "filter": {"status": "401"}, "window": "15m", "threshold": 20, "throttle": "1h", "group_by": ["user"]}`))
	f.Add([]byte(`{"name": "x", "metric": "percent_change", "compare": "7d", "threshold": 20, "resolve_below": 10}`))
	f.Add([]byte(`{"name": "x", "type": "anomaly", "metric": "latency", "sensitivity": "severe"}`))
	f.Add([]byte(`{"window": 12, "throttle": 5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRule(data)
		if err != nil {
			return
		}
		// A rule that decodes encodes and decodes again to the same rule.
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := DecodeRule(b)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		if r.Fingerprint() != r2.Fingerprint() {
			t.Fatalf("round trip changed the rule: %s vs %s", r.Fingerprint(), r2.Fingerprint())
		}
	})
}

func TestStateRestoreAfterRestart(t *testing.T) {
	r := Rule{Name: "r", Metric: "count", Window: Duration(time.Minute), Threshold: f64(0), GroupBy: []string{"user"}, Notify: []string{"ops"}}
	h := newHarness(t, r)
	h.calls(t0, 1, detector.Call{Status: 200, User: "a"})
	h.calls(t0, 1, detector.Call{Status: 200, User: "b"})
	h.step(t0, "ops:r:firing(user=a) ops:r:firing(user=b)")
	b, err := json.Marshal(h.eng.State())
	if err != nil {
		t.Fatal(err)
	}
	// A new engine (a restart) with the same rule and the store's history: user a is
	// still calling, b stopped while the gateway was down.
	h2 := newHarness(t, r)
	h2.store = h.store
	h2.eng = NewEngine(h.store, Options{Notifier: h2.rec})
	if err := h2.eng.SetRules([]Rule{r}, t0); err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if n, _ := h2.eng.Restore(st); n != 2 {
		t.Fatalf("restored %d instances, want 2", n)
	}
	h2.calls(t0.Add(50*time.Second), 1, detector.Call{Status: 200, User: "a"})
	h2.step(t0.Add(70*time.Second), "ops:r:resolved(user=b)")
	// A changed rule does not take the old state.
	r2 := r
	r2.Threshold = f64(5)
	h3 := newHarness(t, r2)
	if n, _ := h3.eng.Restore(st); n != 0 {
		t.Fatalf("restored %d instances into a changed rule", n)
	}
}

// TestAnomalyRuleFiresOnErrorBurst feeds two days of per-minute history with a daily
// cycle, then a burst of 5xx: the anomaly rule fires once, direction up, with the
// expected band, and resolves when the errors stop.
func TestAnomalyRuleFiresOnErrorBurst(t *testing.T) {
	h := newHarness(t, Rule{Name: "5xx anomaly", Type: TypeAnomaly, Metric: "count", Filter: detector.Filter{Status: "5xx"},
		Sensitivity: "moderate", Direction: "both", Notify: []string{"oncall"}})
	start := t0.Add(-36 * time.Hour)
	rng := uint64(1)
	next := func() uint64 { rng = rng*6364136223846793005 + 1442695040888963407; return rng >> 33 }
	for m := 0; m < 36*60; m++ {
		at := start.Add(time.Duration(m) * time.Minute)
		hour := at.Hour()
		calls := 20 + 15*int(math.Sin(float64(hour)/24*2*math.Pi)+1)
		h.calls(at, calls, detector.Call{Status: 200})
		if next()%4 == 0 { // an error now and then
			h.calls(at, 1, detector.Call{Status: 500})
		}
	}
	h.step(t0, "") // learns the history, nothing anomalous
	for m := 0; m < 5; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		h.calls(at, 25, detector.Call{Status: 200})
		h.calls(at, 40, detector.Call{Status: 503})
	}
	h.eng.Evaluate(t0.Add(5*time.Minute + time.Second))
	b := h.rec.take()
	if len(b) != 1 || len(b[0].Events) != 1 {
		t.Fatalf("batches %+v, want one firing anomaly", b)
	}
	ev := b[0].Events[0]
	if ev.Type != alert.TypeAnomaly || ev.State != alert.Firing || ev.Direction != "up" || ev.Threshold != "moderate" ||
		ev.Band == nil || !(ev.Band[1] < 40) || ev.Expected == nil || *ev.Expected > 5 {
		t.Fatalf("event %+v (band %v, expected %v)", ev, ev.Band, *ev.Expected)
	}
	// The errors stop: it resolves within some minutes.
	var resolved bool
	for m := 5; m < 60 && !resolved; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		h.calls(at, 30, detector.Call{Status: 200})
		h.eng.Evaluate(at.Add(time.Minute + time.Second))
		for _, b := range h.rec.take() {
			for _, ev := range b.Events {
				if ev.State == alert.Resolved {
					resolved = true
				} else {
					t.Fatalf("unexpected %s event at +%s", ev.State, at.Sub(t0))
				}
			}
		}
	}
	if !resolved {
		t.Fatal("the anomaly did not resolve within an hour of the errors stopping")
	}
}

// TestAnomalyStateSurvivesRestart checks that a restart keeps what an anomaly rule's
// detectors learnt: restored into a gateway whose store has none of that history, the
// rule fires on an error burst at once, where a rule learning afresh is still warming up.
func TestAnomalyStateSurvivesRestart(t *testing.T) {
	r := Rule{Name: "5xx anomaly", Type: TypeAnomaly, Metric: "count", Filter: detector.Filter{Status: "5xx"},
		Sensitivity: "moderate", Direction: "both", Notify: []string{"oncall"}}
	h := newHarness(t, r)
	start := t0.Add(-36 * time.Hour)
	for m := 0; m < 36*60; m++ {
		at := start.Add(time.Duration(m) * time.Minute)
		h.calls(at, 30, detector.Call{Status: 200})
		if m%4 == 0 {
			h.calls(at, 1, detector.Call{Status: 500})
		}
	}
	h.step(t0, "")
	b, err := json.Marshal(h.eng.State())
	if err != nil {
		t.Fatal(err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	burst := func(h *harness) []alert.Event {
		for m := 0; m < 5; m++ {
			at := t0.Add(time.Duration(m) * time.Minute)
			h.calls(at, 25, detector.Call{Status: 200})
			h.calls(at, 40, detector.Call{Status: 503})
		}
		h.eng.Evaluate(t0.Add(5*time.Minute + time.Second))
		var evs []alert.Event
		for _, b := range h.rec.take() {
			evs = append(evs, b.Events...)
		}
		return evs
	}

	restarted := newHarness(t, r) // a store without the 36 hours
	if n, d := restarted.eng.Restore(st); n != 0 || d != 1 {
		t.Fatalf("restored %d instances and %d detectors, want 0 and 1", n, d)
	}
	if evs := burst(restarted); len(evs) != 1 || evs[0].State != alert.Firing || evs[0].Direction != "up" {
		t.Fatalf("restored rule on a burst: %+v, want one firing, up", evs)
	}
	if evs := burst(newHarness(t, r)); len(evs) != 0 {
		t.Fatalf("fresh rule on a burst: %+v, want none (still warming up)", evs)
	}

	// A changed rule, or a detector that does not decode, starts afresh.
	changed := r
	changed.Sensitivity = "severe"
	if _, d := newHarness(t, changed).eng.Restore(st); d != 0 {
		t.Fatalf("restored %d detectors into a changed rule", d)
	}
	bad := st
	bad.Rules = []RuleState{st.Rules[0]}
	as := *st.Rules[0].Anomaly
	as.Groups = []AnomalyGroupState{as.Groups[0]}
	as.Groups[0].Detector = as.Groups[0].Detector[:10]
	bad.Rules[0].Anomaly = &as
	if _, d := newHarness(t, r).eng.Restore(bad); d != 0 {
		t.Fatalf("restored %d detectors from a truncated one", d)
	}
}

func TestAbsence(t *testing.T) {
	// Ungrouped: no inbound webhook for 30 minutes.
	h := newHarness(t, Rule{Name: "partner webhooks stopped", Metric: "absent", For: Duration(30 * time.Minute),
		Filter: detector.Filter{Endpoint: "/webhooks/partner-x"}, Notify: []string{"ops"}})
	h.step(t0.Add(10*time.Minute), "") // warm-up after the start: an empty store is no silence
	h.step(t0.Add(29*time.Minute), "")
	h.calls(t0.Add(25*time.Minute), 1, detector.Call{Status: 200, Endpoint: "/webhooks/partner-x"})
	h.step(t0.Add(31*time.Minute), "") // armed, but a call came 6 minutes ago
	h.step(t0.Add(54*time.Minute), "")
	h.step(t0.Add(55*time.Minute+time.Second), "ops:partner-webhooks-stopped:firing")
	h.step(t0.Add(60*time.Minute), "")
	h.calls(t0.Add(61*time.Minute), 1, detector.Call{Status: 200, Endpoint: "/webhooks/partner-x"})
	h.step(t0.Add(61*time.Minute), "ops:partner-webhooks-stopped:resolved")

	// Grouped: a customer that calls every minute goes silent.
	h2 := newHarness(t, Rule{Name: "customer silent", Metric: "absent", For: Duration(10 * time.Minute), GroupBy: []string{"company"}, Notify: []string{"cs"}})
	for m := 0; m < 60; m++ {
		h2.calls(t0.Add(time.Duration(m)*time.Minute), 1, detector.Call{Status: 200, Company: "acme"})
		if m < 30 {
			h2.calls(t0.Add(time.Duration(m)*time.Minute), 1, detector.Call{Status: 200, Company: "globex"})
		}
		want := ""
		if m == 40 { // globex's last call was at minute 29
			want = "cs:customer-silent:firing(company=globex)"
		}
		h2.step(t0.Add(time.Duration(m)*time.Minute), want)
	}
	h2.calls(t0.Add(61*time.Minute), 1, detector.Call{Status: 200, Company: "globex"})
	h2.step(t0.Add(61*time.Minute), "cs:customer-silent:resolved(company=globex)")

	if _, err := DecodeRule([]byte(`{"name": "x", "metric": "absent"}`)); err == nil || !strings.Contains(err.Error(), "for") {
		t.Fatalf("absent without for: %v", err)
	}
	if _, err := DecodeRule([]byte(`{"name": "x", "metric": "absent", "for": "5m", "threshold": 1}`)); err == nil {
		t.Fatal("absent with a threshold: no error")
	}
}

func TestIncidentCorrelation(t *testing.T) {
	rs := []Rule{
		{Name: "partner 5xx", Metric: "count", Filter: detector.Filter{Upstream: "partner:443", Status: "5xx"}, Window: Duration(time.Minute), Threshold: f64(0), Notify: []string{"pager"}},
		{Name: "partner slow", Metric: "latency_p99", Filter: detector.Filter{Upstream: "partner:443"}, Window: Duration(time.Minute), Threshold: f64(500), Notify: []string{"pager"}},
		{Name: "errors by upstream", Metric: "count", Filter: detector.Filter{Status: "5xx"}, GroupBy: []string{"upstream"}, Window: Duration(time.Minute), Threshold: f64(3), Notify: []string{"pager"}},
	}
	h := newHarness(t, rs...)
	h.calls(t0, 2, detector.Call{Status: 502, Upstream: "partner:443", Latency: time.Second})
	h.eng.Evaluate(t0.Add(time.Millisecond))
	b := h.rec.take()
	if len(b) != 1 || len(b[0].Events) != 2 || b[0].Incident == "" || b[0].IncidentFiring != 2 {
		t.Fatalf("first tick: %+v", b)
	}
	inc := b[0].Incident
	// A third rule joins the incident on a later tick: an update, same incident.
	h.calls(t0.Add(10*time.Second), 2, detector.Call{Status: 503, Upstream: "partner:443", Latency: time.Second})
	h.eng.Evaluate(t0.Add(10*time.Second + time.Millisecond))
	b = h.rec.take()
	if len(b) != 1 || len(b[0].Events) != 1 || b[0].Incident != inc || b[0].IncidentFiring != 3 || b[0].Events[0].Group["upstream"] != "partner:443" {
		t.Fatalf("join: %+v", b)
	}
	// All resolve together once the window passes: one batch, nothing left firing.
	h.eng.Evaluate(t0.Add(2 * time.Minute))
	b = h.rec.take()
	if len(b) != 1 || len(b[0].Events) != 3 || b[0].Incident != inc || b[0].IncidentFiring != 0 || b[0].Firing() != 0 {
		t.Fatalf("resolve: %+v", b)
	}
	// Much later, a new failure opens a new incident.
	h.calls(t0.Add(20*time.Minute), 1, detector.Call{Status: 502, Upstream: "partner:443"})
	h.eng.Evaluate(t0.Add(20*time.Minute + time.Millisecond))
	b = h.rec.take()
	if len(b) != 1 || b[0].Incident == "" || b[0].Incident == inc {
		t.Fatalf("new incident: %+v", b)
	}
	// Off: no incidents.
	h.eng.SetCorrelation(Correlation{Off: true})
	h.calls(t0.Add(30*time.Minute), 1, detector.Call{Status: 502, Upstream: "partner:443"})
	h.eng.Evaluate(t0.Add(30*time.Minute + time.Millisecond))
	for _, b := range h.rec.take() {
		if b.Incident != "" {
			t.Fatalf("correlation off: %+v", b)
		}
	}
}
