package rules

import (
	"math"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
	"github.com/vigilgw/vigil/detector/anomaly"
)

// Anomaly rules feed closed one-minute buckets of the store, one value per group and
// minute, to a streaming detector per group (package anomaly), and an alerter per group
// turns its scores into firing and resolved events at the rule's sensitivity and
// direction. A partial minute is never looked at, so it never looks like a drop.
//
// When a rule starts (or the gateway restarts) its detectors learn from the store's
// one-minute history first (up to BackfillAnomaly back), so a rule added today already
// knows yesterday's traffic; they alert only once warm.

// BackfillAnomaly is how much one-minute history a new anomaly rule learns from.
const BackfillAnomaly = 47 * time.Hour // within the store's 48 hours of one-minute buckets

type anomalyState struct {
	kind   anomaly.Kind
	sens   anomaly.Sensitivity
	dir    anomaly.Direction
	groups map[detector.Labels]*anomalyGroup
	next   time.Time // start of the next minute to feed; zero until the backfill
}

type anomalyGroup struct {
	det  *anomaly.Detector
	al   *anomaly.Alerter
	last anomaly.Result
}

func newAnomalyState(r *Rule) (*anomalyState, error) {
	st := &anomalyState{groups: make(map[detector.Labels]*anomalyGroup)}
	var err error
	if st.sens, err = anomaly.ParseSensitivity(r.Sensitivity); err != nil {
		return nil, fieldErr("sensitivity", "%v", err)
	}
	if st.dir, err = anomaly.ParseDirection(r.Direction); err != nil {
		return nil, fieldErr("direction", "%v", err)
	}
	st.kind = anomaly.Continuous // latency, ttfhw
	if r.Metric == MetricCount {
		st.kind = anomaly.Count
	}
	return st, nil
}

// state returns what the detectors have learnt, or nil when they have not started (or
// st is nil: not an anomaly rule).
func (st *anomalyState) state() *AnomalyState {
	if st == nil || len(st.groups) == 0 {
		return nil
	}
	as := &AnomalyState{Next: st.next, Groups: make([]AnomalyGroupState, 0, len(st.groups))}
	for g, ag := range st.groups {
		det, err := ag.det.MarshalBinary()
		if err != nil {
			continue // a state that does not validate is not worth keeping
		}
		al, err := ag.al.MarshalBinary()
		if err != nil {
			continue
		}
		as.Groups = append(as.Groups, AnomalyGroupState{Group: g, Detector: det, Alerter: al})
	}
	return as
}

// restore brings back the detectors of as, at most max groups, unless the rule has
// started learning already, and returns how many it restored. It restores all of them
// or none: groups fed from different minutes would not line up. A rule over a detail
// view (detail says so) has no history of the minutes it missed, so its detectors go on
// from the next closed minute instead of as.Next.
func (st *anomalyState) restore(as *AnomalyState, max int, detail bool) int {
	if !st.next.IsZero() || len(st.groups) > 0 || len(as.Groups) == 0 {
		return 0
	}
	groups := make(map[detector.Labels]*anomalyGroup, min(len(as.Groups), max))
	for _, gs := range as.Groups {
		if len(groups) >= max {
			break
		}
		ag := &anomalyGroup{det: new(anomaly.Detector), al: new(anomaly.Alerter)}
		if ag.det.UnmarshalBinary(gs.Detector) != nil || ag.al.UnmarshalBinary(gs.Alerter) != nil {
			return 0
		}
		if c := ag.det.Config(); c.Kind != st.kind || c.Sensitivity != st.sens {
			return 0
		}
		groups[gs.Group] = ag
	}
	st.groups = groups
	if !detail {
		st.next = as.Next
	}
	return len(groups)
}

// evaluateAnomaly feeds the minutes closed since the last evaluation.
func (e *Engine) evaluateAnomaly(c *compiled, now time.Time, samples *sampler) ([]alert.Event, error) {
	st := c.anomaly
	closed := now.Truncate(time.Minute) // minutes before this one are closed
	from := st.next
	switch {
	case from.IsZero() && c.release != nil:
		// A detail view (a caller dimension) only holds calls since the rule was tracked:
		// nothing to learn from yet.
		from = closed.Add(-time.Minute)
	case from.IsZero() || closed.Sub(from) > BackfillAnomaly:
		from = closed.Add(-BackfillAnomaly)
	}
	if !from.Before(closed) {
		return nil, nil
	}
	_, groups, err := e.store.Range(&detector.RangeQuery{Filter: c.matcher, GroupBy: c.group, From: from, To: closed, Step: time.Minute, Need: c.need})
	if err != nil {
		return nil, err
	}
	st.next = closed
	minutes := int(closed.Sub(from) / time.Minute)
	byGroup := make(map[detector.Labels][]detector.Aggregate, len(groups))
	fresh := map[detector.Labels]bool{}
	for _, g := range groups {
		byGroup[g.Group] = g.Points
		if st.groups[g.Group] == nil {
			if len(st.groups) >= c.maxGroups() {
				c.overflow++
				continue
			}
			ag := &anomalyGroup{det: anomaly.New(anomaly.Config{Kind: st.kind, Sensitivity: st.sens}), al: anomaly.NewAlerter(st.sens, st.dir)}
			if inst := c.instances[g.Group]; inst != nil && inst.state == alert.Firing {
				ag.al.Resume() // firing before a restart: no second firing, and it can resolve
			}
			st.groups[g.Group] = ag
			fresh[g.Group] = true
		}
	}
	var events []alert.Event
	keys := make([]detector.Labels, 0, len(st.groups))
	for g := range st.groups {
		keys = append(keys, g)
	}
	sortLabels(keys, c.group)
	for _, g := range keys {
		ag := st.groups[g]
		points := byGroup[g]
		k0 := 0
		if fresh[g] {
			// A new group starts learning at its first call, not in the silence before it
			// existed.
			for k0 < len(points) && points[k0].Total == 0 {
				k0++
			}
		}
		for k := k0; k < minutes; k++ {
			at := from.Add(time.Duration(k) * time.Minute)
			v := math.NaN()
			switch {
			case k < len(points) && st.kind == anomaly.Count:
				v = float64(points[k].Count)
			case k < len(points):
				v = points[k].LatencyQuantile(0.5)
			case st.kind == anomaly.Count:
				v = 0 // no call that minute
			}
			if math.IsNaN(v) {
				continue // latency of a minute without calls: nothing to learn
			}
			events = append(events, e.observeAnomaly(c, g, ag, at.Add(time.Minute), v, now, samples)...)
		}
	}
	return events, nil
}

// observeAnomaly feeds one group's detector the value v of the minute ending at at, and
// returns the event of the transition it makes, if any.
func (e *Engine) observeAnomaly(c *compiled, g detector.Labels, ag *anomalyGroup, at time.Time, v float64, now time.Time, samples *sampler) []alert.Event {
	res := ag.det.Observe(at, v)
	ag.last = res
	switch ag.al.Observe(res) {
	case anomaly.Fired:
		inst := &instance{group: g, state: alert.Firing, since: now, startedAt: now, lastNotified: now, value: v}
		c.instances[g] = inst
		return []alert.Event{e.anomalyEvent(c, inst, alert.Firing, res, now, samples)}
	case anomaly.Resolved:
		if inst := c.instances[g]; inst != nil {
			inst.value = v
			delete(c.instances, g)
			return []alert.Event{e.anomalyEvent(c, inst, alert.Resolved, res, now, samples)}
		}
	default:
		if inst := c.instances[g]; inst != nil {
			inst.value = v
		}
	}
	return nil
}

func (e *Engine) anomalyEvent(c *compiled, inst *instance, state alert.State, res anomaly.Result, now time.Time, samples *sampler) alert.Event {
	r := &c.rule
	exp := roundValue(res.Expected)
	ev := alert.Event{
		ID: NewEventID(now), RuleID: r.ID, RuleName: r.Name, Type: alert.TypeAnomaly, State: state,
		Threshold: r.Sensitivity, Metric: r.Metric, Window: "1m", Severity: r.Severity,
		Group: inst.group.Map(c.group), Value: roundValue(inst.value), Expected: &exp,
		Band: &[2]float64{roundValue(res.Low), roundValue(res.High)}, Direction: res.Direction.String(),
		Time: now.UTC(), StartedAt: inst.startedAt.UTC(), Playbook: r.Playbook,
		Channels: append([]string(nil), r.Notify...), Samples: []alert.Sample{},
	}
	if state == alert.Resolved {
		t := now.UTC()
		ev.ResolvedAt = &t
		ev.Direction = ""
	}
	if samples != nil {
		ev.Samples = samples.get(c, inst.group)
	}
	unit, series := "", r.Metric+" per minute"
	switch r.Metric {
	case MetricLatency:
		unit = " ms"
	case MetricTTFHW:
		unit, series = " s", "median ttfhw of the users who signed up in the last "+FormatDuration(TTFHWSignupWindow)
	}
	what := "is abnormal"
	switch {
	case state == alert.Resolved:
		what = "is back to normal"
	case res.Direction == anomaly.Up:
		what = "is abnormally high"
	case res.Direction == anomaly.Down:
		what = "is abnormally low"
	}
	ev.Summary = r.Name + ": " + series + " " + what + ": " + formatNumber(ev.Value) + unit +
		", expected " + formatNumber(exp) + unit + " (" + formatNumber(ev.Band[0]) + " to " + formatNumber(ev.Band[1]) + ")"
	if f := filterText(&r.Filter); f != "" {
		ev.Summary += " [" + f + "]"
	}
	for _, d := range c.group.List() {
		ev.Summary += " for " + d.String() + " " + ev.Group[d.String()]
	}
	return ev
}
