package rules

import (
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
)

// evaluateAbsent evaluates a rule of metric absent: an instance fires when no matching
// call came for the rule's "for" (ungrouped: no call at all; grouped: a group that
// called within the lookback and then went silent), and resolves on the next matching
// call. Right after a start (or after the rule was created) it does not fire until it
// has watched for "for" itself, so that an empty store after a restart is not taken for
// silence.
func (e *Engine) evaluateAbsent(c *compiled, now time.Time, samples *sampler) ([]alert.Event, error) {
	r := &c.rule
	forDur := time.Duration(r.For)
	cur, err := c.sel.Aggregate(forDur, now, detector.NeedCounts)
	if err != nil {
		return nil, err
	}
	count := make(map[detector.Labels]uint64, len(cur))
	for i := range cur {
		count[cur[i].Group] = cur[i].Count
	}
	groups := []detector.Labels{{}}
	if c.group != 0 {
		lookback := AbsentLookback(forDur)
		seen, err := c.sel.AggregateReaching(lookback, now, lookback, detector.NeedCounts)
		if err != nil {
			return nil, err
		}
		groups = groups[:0]
		for i := range seen {
			if seen[i].Count > 0 {
				groups = append(groups, seen[i].Group)
			}
		}
		for g := range c.instances {
			if _, ok := count[g]; !ok {
				groups = append(groups, g)
			}
		}
		sortLabels(groups, c.group)
	}
	armed := !now.Before(c.armedAt)
	var events []alert.Event
	done := map[detector.Labels]bool{}
	for _, g := range groups {
		if done[g] {
			continue
		}
		done[g] = true
		n := count[g]
		inst := c.instances[g]
		switch {
		case inst != nil && n > 0:
			inst.value = float64(n)
			events = append(events, e.absentEvent(c, inst, alert.Resolved, now, samples))
			delete(c.instances, g)
		case inst == nil && n == 0 && armed:
			if len(c.instances) >= c.maxGroups() {
				c.overflow++
				continue
			}
			inst = &instance{group: g, state: alert.Firing, since: now, startedAt: now, lastNotified: now}
			c.instances[g] = inst
			events = append(events, e.absentEvent(c, inst, alert.Firing, now, nil))
		case inst != nil && r.Throttle.Every > 0 && now.Sub(inst.lastNotified) >= r.Throttle.Every:
			inst.lastNotified = now
			ev := e.absentEvent(c, inst, alert.Firing, now, nil)
			ev.Repeat = true
			events = append(events, ev)
		}
	}
	return events, nil
}

func (e *Engine) absentEvent(c *compiled, inst *instance, state alert.State, now time.Time, samples *sampler) alert.Event {
	r := &c.rule
	ev := alert.Event{
		ID: NewEventID(now), RuleID: r.ID, RuleName: r.Name, Type: alert.TypeAlert, State: state,
		Threshold: "absent for " + r.For.String(), Metric: r.Metric, Window: r.For.String(), Severity: r.Severity,
		Group: inst.group.Map(c.group), Value: inst.value, Time: now.UTC(), StartedAt: inst.startedAt.UTC(),
		Playbook: r.Playbook, Channels: append([]string(nil), r.Notify...), Samples: []alert.Sample{},
	}
	ev.Summary = r.Name + ": no matching call for " + r.For.String()
	if state == alert.Resolved {
		t := now.UTC()
		ev.ResolvedAt = &t
		ev.Summary = r.Name + ": calls again after " + now.Sub(inst.startedAt).Truncate(time.Second).String() + " of silence"
		if samples != nil {
			ev.Samples = samples.get(c, inst.group)
		}
	}
	if f := filterText(&r.Filter); f != "" {
		ev.Summary += " (" + f + ")"
	}
	for _, d := range c.group.List() {
		ev.Summary += " for " + d.String() + " " + ev.Group[d.String()]
	}
	return ev
}
