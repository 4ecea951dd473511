package rules

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/anomaly"
)

// Engine evaluates rules against a store every tick, keeps each alert instance's state
// (one per rule and group), and turns transitions into events: kept in a bounded history
// and handed to the notifier, grouped per channel and tick. Safe for concurrent use.
type Engine struct {
	store  *detector.Store
	logger *slog.Logger

	mu          sync.Mutex
	rules       []*compiled
	notifier    alert.Notifier
	history     *History
	correlation Correlation
	incidents   map[string]*incident // open or recent incidents by correlation key
	ttfhw       TTFHWSource          // metric ttfhw; nil: no user registry
}

// Options configure an Engine.
type Options struct {
	// History is the number of events kept (default 1000).
	History int
	// Notifier receives the events; nil logs them.
	Notifier alert.Notifier
	// Logger logs engine problems; nil discards.
	Logger *slog.Logger
}

// NewEngine returns an engine with no rules.
func NewEngine(store *detector.Store, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Notifier == nil {
		opts.Notifier = LogNotifier{Logger: opts.Logger}
	}
	return &Engine{store: store, logger: opts.Logger, notifier: opts.Notifier, history: NewHistory(opts.History), correlation: DefaultCorrelation}
}

// History returns the engine's event history.
func (e *Engine) History() *History { return e.history }

// SetNotifier replaces where events go.
func (e *Engine) SetNotifier(n alert.Notifier) {
	e.mu.Lock()
	e.notifier = n
	e.mu.Unlock()
}

// compiled is a rule ready to evaluate, with the state of its instances.
type compiled struct {
	rule      Rule
	fp        string
	matcher   *detector.Matcher
	group     detector.DimSet
	sel       *detector.Selection
	need      detector.Need
	cmp       func(v, t float64) bool
	release   func()
	instances map[detector.Labels]*instance
	onceFired map[detector.Labels]bool
	overflow  uint64
	anomaly   *anomalyState // anomaly rules only
	armedAt   time.Time     // absence rules: not before it has watched for "for"
	// values and keys are a tick's observations per group, kept for the next tick to
	// reuse their memory.
	values map[detector.Labels]obs
	keys   []detector.Labels
}

// obs is a group's value in one tick.
type obs struct {
	value float64
	ok    bool // enough calls to judge
}

// instance is one alert instance: a rule and one group's values.
type instance struct {
	group        detector.Labels
	state        alert.State // Pending or Firing
	since        time.Time   // when the condition started holding
	startedAt    time.Time   // when it started firing
	lastNotified time.Time
	value        float64
}

// maxOnceGroups bounds the memory of groups a "throttle once" rule has notified.
const maxOnceGroups = 100000

func (e *Engine) compile(r Rule, now time.Time) (*compiled, error) {
	m, err := r.Filter.Compile()
	if err != nil {
		return nil, err
	}
	group, err := parseGroupBy(r.GroupBy)
	if err != nil {
		return nil, err
	}
	c := &compiled{
		rule: r, fp: r.Fingerprint(), matcher: m, group: group, cmp: comparators[r.Comparator],
		instances: make(map[detector.Labels]*instance),
	}
	if r.Type == TypeAnomaly {
		if c.anomaly, err = newAnomalyState(&r); err != nil {
			return nil, err
		}
	}
	switch r.Metric {
	case MetricLatencyAvg, MetricLatencyP50, MetricLatencyP90, MetricLatencyP99, MetricLatency:
		c.need = detector.NeedLatency
	case MetricUniqueUsers:
		c.need = detector.NeedCallers
	default:
		c.need = detector.NeedCounts
	}
	if (r.MinCalls > 0 && r.Metric != MetricTTFHW) || r.Metric == MetricErrorRate || r.Metric == MetricSuccessRate {
		c.need |= detector.NeedTotals // ratios and min_calls count every call, not only matches
	}
	c.armedAt = now.Add(time.Duration(r.For))
	dims := group | m.Dims()
	if dims&detector.CallerDims != 0 && !detector.RouteDims.Contains(dims) {
		horizon := time.Duration(r.Window + r.Compare)
		if r.Metric == MetricAbsent {
			horizon = AbsentLookback(time.Duration(r.For))
		}
		if c.anomaly != nil {
			horizon = 15 * time.Minute // closed minutes since the last tick, with room for a pause
		}
		c.release = e.store.Track(dims, horizon)
	}
	c.sel = e.store.Select(m, group)
	return c, nil
}

// SetRules replaces the rule set (at start and on every config reload). A rule whose id
// and definition are unchanged keeps its state: an instance that was firing is still
// firing, with no second notification. A rule that changed starts fresh, and one that
// was removed is dropped; instances of either that were firing are resolved, so that no
// incident stays open in a pager. Rules are validated first: on error nothing changes.
func (e *Engine) SetRules(rs []Rule, now time.Time) error {
	seen := map[string]bool{}
	e.mu.Lock()
	hasTTFHW := e.ttfhw != nil
	e.mu.Unlock()
	for i := range rs {
		rs[i].Normalize()
		if err := rs[i].Validate(); err != nil {
			return fmt.Errorf("rule %q: %w", rs[i].Name, err)
		}
		if rs[i].Metric == MetricTTFHW && rs[i].Type != TypeCohort && !hasTTFHW {
			return fmt.Errorf("rule %q: %w", rs[i].Name, errNoTTFHW)
		}
		if seen[rs[i].ID] {
			return fmt.Errorf("rule %q: id %q is used by another rule", rs[i].Name, rs[i].ID)
		}
		seen[rs[i].ID] = true
	}
	e.mu.Lock()
	old := map[string]*compiled{}
	for _, c := range e.rules {
		old[c.rule.ID] = c
	}
	var next []*compiled
	var events []alert.Event
	for _, r := range rs {
		if r.Type == TypeCohort {
			continue // evaluated by package cohort
		}
		if c, ok := old[r.ID]; ok && c.fp == r.Fingerprint() {
			c.rule = r // notify, playbook, name may change without losing state
			next = append(next, c)
			delete(old, r.ID)
			continue
		}
		c, err := e.compile(r, now)
		if err != nil {
			e.mu.Unlock()
			for _, n := range next {
				if _, kept := old[n.rule.ID]; !kept && n.release != nil && !containsRule(e.rules, n) {
					n.release()
				}
			}
			return fmt.Errorf("rule %q: %w", r.Name, err)
		}
		next = append(next, c)
	}
	for id, c := range old {
		why := "rule removed by a config change"
		for _, r := range rs {
			if r.ID == id {
				why = "rule changed by a config change: it starts again"
			}
		}
		events = append(events, e.resolveAll(c, now, why)...)
		if c.release != nil {
			c.release()
		}
	}
	e.rules = next
	n := e.notifier
	open := e.correlate(events, now)
	e.mu.Unlock()
	e.dispatch(n, events, open)
	return nil
}

func containsRule(cs []*compiled, c *compiled) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// Rules returns the current rules.
func (e *Engine) Rules() []Rule {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Rule, len(e.rules))
	for i, c := range e.rules {
		out[i] = c.rule
	}
	return out
}

// Evaluate evaluates every enabled rule at now, and notifies the resulting events.
func (e *Engine) Evaluate(now time.Time) {
	e.mu.Lock()
	samples := &sampler{store: e.store}
	// Rules are evaluated in the order of the series they read (see Locality), and
	// their events kept in the order of the rules.
	order := make([]int, len(e.rules))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return e.rules[order[a]].locality() < e.rules[order[b]].locality() })
	perRule := make([][]alert.Event, len(e.rules))
	for _, i := range order {
		c := e.rules[i]
		if !c.rule.IsEnabled() {
			perRule[i] = e.resolveAll(c, now, "rule disabled")
			continue
		}
		var evs []alert.Event
		var err error
		switch {
		case c.anomaly != nil && c.rule.Metric == MetricTTFHW:
			evs, err = e.evaluateTTFHWAnomaly(c, now)
		case c.anomaly != nil:
			evs, err = e.evaluateAnomaly(c, now, samples)
		case c.rule.Metric == MetricAbsent:
			evs, err = e.evaluateAbsent(c, now, samples)
		default:
			evs, err = e.evaluate(c, now, samples)
		}
		if err != nil {
			e.logger.Warn("evaluating rule", "rule", c.rule.ID, "error", err)
		}
		perRule[i] = evs
	}
	var events []alert.Event
	for _, evs := range perRule {
		events = append(events, evs...)
	}
	n := e.notifier
	open := e.correlate(events, now)
	e.mu.Unlock()
	e.dispatch(n, events, open)
}

// locality is where the series the rule reads start in the store (Selection.Locality);
// rules without a selection of their own come last.
func (c *compiled) locality() int {
	if c.sel == nil {
		return math.MaxInt
	}
	return c.sel.Locality()
}

// value computes the rule's metric over one group's aggregate; NaN when there is no data.
func (c *compiled) value(a *detector.Aggregate) float64 {
	switch c.rule.Metric {
	case MetricCount:
		return float64(a.Count)
	case MetricErrorRate:
		return a.ErrorRate()
	case MetricSuccessRate:
		return a.SuccessRate()
	case MetricLatencyAvg:
		return a.LatencyAvg()
	case MetricLatencyP50:
		return a.LatencyQuantile(0.50)
	case MetricLatencyP90:
		return a.LatencyQuantile(0.90)
	case MetricLatencyP99:
		return a.LatencyQuantile(0.99)
	case MetricUniqueUsers:
		return float64(a.UniqueCallers())
	}
	return math.NaN()
}

// emptyValue is the metric's value for a group with no call in the window.
func (c *compiled) emptyValue() float64 {
	switch c.rule.Metric {
	case MetricCount, MetricUniqueUsers:
		return 0
	}
	return math.NaN()
}

func (e *Engine) evaluate(c *compiled, now time.Time, samples *sampler) ([]alert.Event, error) {
	r := &c.rule
	window := time.Duration(r.Window)
	aggs, err := c.sel.Aggregate(window, now, c.need)
	if err != nil {
		return nil, err
	}
	if c.values == nil {
		c.values = make(map[detector.Labels]obs, len(aggs))
	}
	values := c.values
	clear(values)
	if r.Metric == MetricPercentChange {
		compare := time.Duration(r.Compare)
		if compare == 0 {
			compare = window
		}
		prev, err := c.sel.Aggregate(window, now.Add(-compare), detector.NeedCounts)
		if err != nil {
			return nil, err
		}
		base := make(map[detector.Labels]uint64, len(prev))
		for i := range prev {
			base[prev[i].Group] = prev[i].Count
		}
		for i := range aggs {
			a := &aggs[i]
			b := base[a.Group]
			v := math.NaN()
			if b > 0 {
				v = 100 * (float64(a.Count) - float64(b)) / float64(b)
			}
			values[a.Group] = obs{v, a.Total >= uint64(r.MinCalls)}
		}
		// Groups that vanished dropped by 100%.
		for g, b := range base {
			if _, ok := values[g]; !ok && b > 0 {
				values[g] = obs{-100, r.MinCalls == 0}
			}
		}
	} else if r.Metric == MetricTTFHW {
		// Each user with calls matching the whole filter (min_calls of them) is judged on
		// their time to first hello world now.
		for i := range aggs {
			a := &aggs[i]
			ok := a.Count > 0 && a.Count >= uint64(r.MinCalls)
			v := math.NaN()
			if ok {
				v = e.ttfhwValue(a.Group.User, now)
			}
			values[a.Group] = obs{v, ok}
		}
	} else {
		for i := range aggs {
			values[aggs[i].Group] = obs{c.value(&aggs[i]), aggs[i].Total >= uint64(r.MinCalls)}
		}
	}
	if c.group == 0 {
		if _, ok := values[detector.Labels{}]; !ok {
			values[detector.Labels{}] = obs{c.emptyValue(), r.MinCalls == 0}
		}
	}
	// Instances with no data this tick are judged on the empty value.
	for g := range c.instances {
		if _, ok := values[g]; !ok {
			values[g] = obs{c.emptyValue(), r.MinCalls == 0}
		}
	}
	keys := c.keys[:0]
	for g := range values {
		keys = append(keys, g)
	}
	c.keys = keys
	sortLabels(keys, c.group)
	var events []alert.Event
	for _, g := range keys {
		o := values[g]
		holds := o.ok && !math.IsNaN(o.value) && c.cmp(o.value, *r.Threshold)
		inst := c.instances[g]
		if inst != nil && inst.state == alert.Firing {
			inst.value = o.value
			if c.stillFiring(o.value, o.ok) {
				if r.Throttle.Every > 0 && now.Sub(inst.lastNotified) >= r.Throttle.Every {
					inst.lastNotified = now
					ev := e.newEvent(c, inst, alert.Firing, now, samples)
					ev.Repeat = true
					events = append(events, ev)
				}
				continue
			}
			ev := e.newEvent(c, inst, alert.Resolved, now, samples)
			delete(c.instances, g)
			if r.Throttle.Once {
				continue // only the first firing is ever notified
			}
			events = append(events, ev)
			continue
		}
		if !holds {
			if inst != nil { // pending that did not last
				delete(c.instances, g)
				ev := e.newEvent(c, inst, alert.Inactive, now, nil)
				events = append(events, ev)
			}
			continue
		}
		if inst == nil {
			if len(c.instances) >= c.maxGroups() {
				c.overflow++
				continue
			}
			inst = &instance{group: g, since: now}
			c.instances[g] = inst
		}
		inst.value = o.value
		if now.Sub(inst.since) < time.Duration(r.For) {
			if inst.state != alert.Pending {
				inst.state = alert.Pending
				events = append(events, e.newEvent(c, inst, alert.Pending, now, nil))
			}
			continue
		}
		inst.state = alert.Firing
		inst.startedAt = now
		inst.lastNotified = now
		if r.Throttle.Once {
			if c.onceFired[g] {
				continue
			}
			if c.onceFired == nil {
				c.onceFired = make(map[detector.Labels]bool)
			}
			if len(c.onceFired) < maxOnceGroups {
				c.onceFired[g] = true
			}
		}
		events = append(events, e.newEvent(c, inst, alert.Firing, now, samples))
	}
	return events, nil
}

// stillFiring says whether a firing instance keeps firing at value v: the condition
// holds, or, with hysteresis, the value has not yet crossed the resolve threshold.
func (c *compiled) stillFiring(v float64, ok bool) bool {
	r := &c.rule
	if !ok || math.IsNaN(v) {
		return false
	}
	switch {
	case r.ResolveBelow != nil:
		return v >= *r.ResolveBelow
	case r.ResolveAbove != nil:
		return v <= *r.ResolveAbove
	}
	return c.cmp(v, *r.Threshold)
}

func (c *compiled) maxGroups() int {
	if c.group == 0 {
		return 1
	}
	if c.rule.MaxGroups > 0 {
		return c.rule.MaxGroups
	}
	return DefaultMaxGroups
}

// resolveAll resolves every firing instance of a rule (it was removed, changed or
// disabled) and forgets its state.
func (e *Engine) resolveAll(c *compiled, now time.Time, why string) []alert.Event {
	var events []alert.Event
	keys := make([]detector.Labels, 0, len(c.instances))
	for g := range c.instances {
		keys = append(keys, g)
	}
	sortLabels(keys, c.group)
	for _, g := range keys {
		inst := c.instances[g]
		if inst.state == alert.Firing && !c.rule.Throttle.Once {
			var ev alert.Event
			if c.anomaly != nil {
				var res anomaly.Result
				if ag := c.anomaly.groups[g]; ag != nil {
					res = ag.last
				}
				ev = e.anomalyEvent(c, inst, alert.Resolved, res, now, nil)
			} else if c.rule.Metric == MetricAbsent {
				ev = e.absentEvent(c, inst, alert.Resolved, now, nil)
			} else {
				ev = e.newEvent(c, inst, alert.Resolved, now, nil)
			}
			ev.Summary += " (" + why + ")"
			events = append(events, ev)
		}
		delete(c.instances, g)
	}
	return events
}

// Overflow returns, per rule id, how many new groups were not tracked because the rule
// had MaxGroups instances already.
func (e *Engine) Overflow() map[string]uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]uint64{}
	for _, c := range e.rules {
		if c.overflow > 0 {
			out[c.rule.ID] = c.overflow
		}
	}
	return out
}

// Firing returns the number of firing instances per rule id.
func (e *Engine) Firing() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for _, c := range e.rules {
		n := 0
		for _, inst := range c.instances {
			if inst.state == alert.Firing {
				n++
			}
		}
		out[c.rule.ID] = n
	}
	return out
}

func (e *Engine) newEvent(c *compiled, inst *instance, state alert.State, now time.Time, samples *sampler) alert.Event {
	r := &c.rule
	thr := *r.Threshold
	ev := alert.Event{
		ID:        NewEventID(now),
		RuleID:    r.ID,
		RuleName:  r.Name,
		Type:      alert.TypeAlert,
		State:     state,
		Threshold: r.Comparator + " " + formatNumber(thr),
		Metric:    r.Metric,
		Window:    r.Window.String(),
		Severity:  r.Severity,
		Group:     inst.group.Map(c.group),
		Value:     roundValue(inst.value),
		Expected:  &thr,
		Time:      now.UTC(),
		StartedAt: inst.startedAt.UTC(),
		Playbook:  r.Playbook,
		Channels:  append([]string(nil), r.Notify...),
		Samples:   []alert.Sample{},
	}
	if state == alert.Pending || state == alert.Inactive {
		ev.StartedAt = inst.since.UTC()
	}
	if state == alert.Resolved {
		t := now.UTC()
		ev.ResolvedAt = &t
	}
	if samples != nil && (state == alert.Firing || state == alert.Resolved) {
		ev.Samples = samples.get(c, inst.group)
	}
	ev.Summary = summary(r, &ev, c.group)
	return ev
}

func summary(r *Rule, ev *alert.Event, group detector.DimSet) string {
	var b strings.Builder
	b.WriteString(r.Name)
	b.WriteString(": ")
	b.WriteString(r.Metric)
	b.WriteByte(' ')
	if math.IsNaN(ev.Value) {
		b.WriteString("no data")
	} else {
		b.WriteString(formatNumber(ev.Value))
	}
	switch r.Metric {
	case MetricErrorRate, MetricSuccessRate, MetricPercentChange:
		b.WriteByte('%')
	case MetricLatencyAvg, MetricLatencyP50, MetricLatencyP90, MetricLatencyP99:
		b.WriteString(" ms")
	case MetricTTFHW:
		b.WriteString(" s")
	}
	b.WriteString(" in ")
	b.WriteString(r.Window.String())
	if f := filterText(&r.Filter); f != "" {
		b.WriteString(" (" + f + ")")
	}
	for _, d := range group.List() {
		b.WriteString(" for " + d.String() + " " + ev.Group[d.String()])
	}
	b.WriteString(", threshold " + ev.Threshold)
	return b.String()
}

func filterText(f *detector.Filter) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+" "+v)
		}
	}
	add("method", f.Method)
	add("endpoint", f.Endpoint)
	add("status", f.Status)
	add("upstream", f.Upstream)
	add("user", f.User)
	add("company", f.Company)
	add("key", f.Key)
	if f.Blocked != nil {
		add("blocked", strconv.FormatBool(*f.Blocked))
	}
	if f.Limited != nil {
		add("limited", strconv.FormatBool(*f.Limited))
	}
	return strings.Join(parts, ", ")
}

func formatNumber(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// roundValue keeps values readable in JSON (4 significant decimals); NaN becomes 0
// because JSON has no NaN.
func roundValue(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*1e4) / 1e4
}

// dispatch records events in the history and hands them to the notifier: one batch per
// channel with every event of this tick for it (storm grouping), and one batch per
// channel and incident for correlated events. Pending and lapsed events are recorded but
// not notified. open holds the firing members left per incident.
func (e *Engine) dispatch(n alert.Notifier, events []alert.Event, open map[string]int) {
	if len(events) == 0 {
		return
	}
	e.history.Add(events)
	type key struct{ channel, incident string }
	var order []key
	batches := map[key][]alert.Event{}
	for _, ev := range events {
		if ev.State != alert.Firing && ev.State != alert.Resolved {
			continue
		}
		for _, ch := range ev.Channels {
			k := key{ch, ev.Incident}
			if _, ok := batches[k]; !ok {
				order = append(order, k)
			}
			batches[k] = append(batches[k], ev)
		}
	}
	for _, k := range order {
		n.Notify(alert.Batch{Channel: k.channel, Events: batches[k], Incident: k.incident, IncidentFiring: open[k.incident]})
	}
}

// sampler finds recent calls matching a rule and group, reading the store's ring of
// recent calls at most once per evaluation.
type sampler struct {
	store *detector.Store
	calls []detector.Call
	read  bool
}

const maxSamples = 5

func (s *sampler) get(c *compiled, group detector.Labels) []alert.Sample {
	if !s.read {
		s.read = true
		s.store.Recent(nil, func(call *detector.Call) bool {
			s.calls = append(s.calls, *call)
			return len(s.calls) < 20000
		})
	}
	out := []alert.Sample{}
	for i := range s.calls {
		call := &s.calls[i]
		if !c.matcher.MatchCall(call) {
			continue
		}
		if c.group != 0 {
			l := detector.LabelsOf(call)
			if l.Project(c.group) != group {
				continue
			}
		}
		out = append(out, alert.Sample{
			Time: call.Time.UTC(), Method: call.Method, Path: call.Path, Status: call.Status,
			LatencyMS: math.Round(float64(call.Latency)/float64(time.Millisecond)*1000) / 1000,
			User:      call.User, Company: call.Company, Upstream: call.Upstream, RequestID: call.RequestID,
		})
		if len(out) == maxSamples {
			break
		}
	}
	return out
}

func sortLabels(ls []detector.Labels, dims detector.DimSet) {
	ds := dims.List()
	sort.Slice(ls, func(i, j int) bool {
		for _, d := range ds {
			a, b := ls[i].Get(d), ls[j].Get(d)
			if a != b {
				return a < b
			}
		}
		return false
	})
}

var eventIDEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewEventID returns a unique, time-ordered event id ("ev_" and 26 characters).
func NewEventID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(b[8:])
	return "ev_" + eventIDEncoding.EncodeToString(b[:])
}

// LogNotifier logs batches instead of delivering them: the default until channels are
// configured.
type LogNotifier struct {
	Logger *slog.Logger
}

// Notify logs the batch.
func (l LogNotifier) Notify(b alert.Batch) {
	for _, ev := range b.Events {
		l.Logger.Info("vigil alert", "channel", b.Channel, "rule", ev.RuleID, "state", string(ev.State), "summary", ev.Summary, "event", ev.ID)
	}
}

// Instance describes one alert instance that is pending or firing.
type Instance struct {
	RuleID    string            `json:"rule_id"`
	RuleName  string            `json:"rule_name"`
	State     alert.State       `json:"state"`
	Group     map[string]string `json:"group"`
	Value     float64           `json:"value"`
	Since     time.Time         `json:"since"`
	StartedAt time.Time         `json:"started_at,omitzero"`
	// Upstream is the upstream the instance is about: its group's, or its rule's filter's.
	Upstream string `json:"upstream,omitempty"`
}

// Instances returns the pending and firing instances of every rule, by rule order.
func (e *Engine) Instances() []Instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Instance
	for _, c := range e.rules {
		keys := make([]detector.Labels, 0, len(c.instances))
		for g := range c.instances {
			keys = append(keys, g)
		}
		sortLabels(keys, c.group)
		for _, g := range keys {
			inst := c.instances[g]
			in := Instance{RuleID: c.rule.ID, RuleName: c.rule.Name, State: inst.state, Group: g.Map(c.group),
				Value: roundValue(inst.value), Since: inst.since.UTC(), StartedAt: inst.startedAt.UTC(), Upstream: c.rule.Filter.Upstream}
			if c.group.Has(detector.DimUpstream) {
				in.Upstream = g.Upstream
			}
			if inst.state != alert.Firing {
				in.StartedAt = time.Time{}
			}
			out = append(out, in)
		}
	}
	return out
}

// State is the engine's alert state, for snapshots: every pending or firing instance
// and the groups "throttle once" rules have notified, per rule and rule definition.
type State struct {
	Rules []RuleState `json:"rules"`
}

// RuleState is one rule's part of State.
type RuleState struct {
	ID          string            `json:"id"`
	Fingerprint string            `json:"fingerprint"`
	Instances   []InstanceState   `json:"instances,omitempty"`
	OnceFired   []detector.Labels `json:"once_fired,omitempty"`
	// Anomaly is what an anomaly rule's detectors have learnt.
	Anomaly *AnomalyState `json:"anomaly,omitempty"`
}

// AnomalyState is what an anomaly rule's detectors have learnt, so that a restart keeps
// the weekly pattern, which the store's 48 hours of one-minute history cannot teach
// again.
type AnomalyState struct {
	// Next is the start of the next minute the detectors are to be fed.
	Next time.Time `json:"next"`
	// Groups holds one detector and alerter per group.
	Groups []AnomalyGroupState `json:"groups"`
}

// AnomalyGroupState is one group's detector and alerter, in their binary forms
// (base64 in JSON).
type AnomalyGroupState struct {
	// Group is the group's labels.
	Group detector.Labels `json:"group"`
	// Detector is the [anomaly.Detector], as its MarshalBinary writes it.
	Detector []byte `json:"detector"`
	// Alerter is the [anomaly.Alerter], as its MarshalBinary writes it.
	Alerter []byte `json:"alerter"`
}

// InstanceState is one instance's state.
type InstanceState struct {
	Group        detector.Labels `json:"group"`
	State        alert.State     `json:"state"`
	Since        time.Time       `json:"since"`
	StartedAt    time.Time       `json:"started_at"`
	LastNotified time.Time       `json:"last_notified"`
	Value        float64         `json:"value"`
}

// State returns the alert state of every rule.
func (e *Engine) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	var st State
	for _, c := range e.rules {
		rs := RuleState{ID: c.rule.ID, Fingerprint: c.fp}
		for g, inst := range c.instances {
			v := inst.value
			if math.IsNaN(v) || math.IsInf(v, 0) {
				v = 0
			}
			rs.Instances = append(rs.Instances, InstanceState{Group: g, State: inst.state, Since: inst.since,
				StartedAt: inst.startedAt, LastNotified: inst.lastNotified, Value: v})
		}
		for g := range c.onceFired {
			rs.OnceFired = append(rs.OnceFired, g)
		}
		rs.Anomaly = c.anomaly.state()
		if len(rs.Instances) > 0 || len(rs.OnceFired) > 0 || rs.Anomaly != nil {
			st.Rules = append(st.Rules, rs)
		}
	}
	return st
}

// Restore brings back the state of rules whose id and definition are unchanged since the
// state was taken (after a restart); the state of other rules is ignored. An instance
// restored as firing sends no second "firing": if its condition still holds it stays
// firing, and if it cleared while the gateway was down the next evaluation resolves it
// and notifies the resolve. An anomaly rule's detectors go on from what they had learnt,
// fed the minutes since the state was taken from the store's history; detectors that do
// not decode (taken by another version) are dropped, and the rule learns again from
// history as a new rule does. It returns how many instances and how many detectors were
// restored.
func (e *Engine) Restore(st State) (instances, detectors int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	byID := map[string]*compiled{}
	for _, c := range e.rules {
		byID[c.rule.ID] = c
	}
	for _, rs := range st.Rules {
		c := byID[rs.ID]
		if c == nil || c.fp != rs.Fingerprint {
			continue
		}
		for _, is := range rs.Instances {
			if is.State != alert.Pending && is.State != alert.Firing {
				continue
			}
			if len(c.instances) >= c.maxGroups() {
				break
			}
			c.instances[is.Group] = &instance{group: is.Group, state: is.State, since: is.Since,
				startedAt: is.StartedAt, lastNotified: is.LastNotified, value: is.Value}
			instances++
		}
		if rs.Anomaly != nil && c.anomaly != nil {
			detectors += c.anomaly.restore(rs.Anomaly, c.maxGroups(), c.release != nil)
		}
		for _, g := range rs.OnceFired {
			if c.onceFired == nil {
				c.onceFired = make(map[detector.Labels]bool)
			}
			if len(c.onceFired) < maxOnceGroups {
				c.onceFired[g] = true
			}
		}
	}
	return instances, detectors
}
