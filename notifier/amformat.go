package notifier

import (
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// What Vigil's events look like to Alertmanager and to tools written for its webhooks.

// Labels Vigil sets on every Alertmanager alert; a group dimension of the same name gets
// the prefix "group_".
const (
	labelAlertname = "alertname"
	labelRuleID    = "rule_id"
	labelType      = "vigil_type"
	labelSeverity  = "severity"
)

// amAlert is one alert as Alertmanager's API v2 takes it (postableAlert).
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// severityOf returns the event's severity, warning when unset or unknown.
func severityOf(ev *alert.Event) string {
	switch ev.Severity {
	case alert.SeverityCritical, alert.SeverityError, alert.SeverityWarning, alert.SeverityInfo:
		return ev.Severity
	}
	return alert.SeverityWarning
}

// amLabels returns the label set that identifies the event's alert instance (rule and
// group): the same for its firing and its resolve.
func amLabels(ev *alert.Event) map[string]string {
	l := map[string]string{
		labelAlertname: ev.RuleName,
		labelRuleID:    ev.RuleID,
		labelType:      ev.Type,
		labelSeverity:  severityOf(ev),
	}
	for k, v := range ev.Group {
		if v == "" {
			continue
		}
		name := labelName(k)
		if _, taken := l[name]; taken {
			name = "group_" + name
		}
		l[name] = v
	}
	for k, v := range l {
		if v == "" {
			delete(l, k) // an empty label is no label to Alertmanager
		}
	}
	return l
}

// labelName turns a group dimension into a valid Prometheus label name.
func labelName(s string) string {
	var b strings.Builder
	for i, r := range s {
		ok := r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9'
		if i == 0 && r >= '0' && r <= '9' {
			b.WriteByte('_')
			ok = true
		}
		if ok {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "_"
	}
	return b.String()
}

// amAnnotations returns the event's annotations: summary, description, runbook_url (or
// playbook, when it is not a link), value and expected.
func amAnnotations(ev *alert.Event) map[string]string {
	a := map[string]string{
		"summary":     summaryText(ev),
		"description": descriptionText(ev),
		"value":       formatNumber(ev.Value),
	}
	if ev.Expected != nil {
		a["expected"] = formatNumber(*ev.Expected)
	}
	if u := playbookURL(ev); u != "" {
		a["runbook_url"] = u
	} else if ev.Playbook != "" {
		a["playbook"] = ev.Playbook
	}
	return a
}

// descriptionText is a few lines about the event: condition, window, group and samples.
func descriptionText(ev *alert.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s = %s", stateWord(ev), ev.RuleName, ev.Metric, conditionText(ev))
	if ev.Window != "" {
		b.WriteString(" over " + ev.Window)
	}
	if g := groupText(ev.Group); g != "" {
		b.WriteString("\nGroup: " + g)
	}
	for i := range ev.Samples {
		b.WriteString("\nSample: " + sampleText(&ev.Samples[i]))
	}
	return b.String()
}

// startsAt returns when the instance started firing (the event's time if unknown).
func startsAt(ev *alert.Event) time.Time {
	if !ev.StartedAt.IsZero() {
		return ev.StartedAt.UTC()
	}
	return ev.Time.UTC()
}

// resolvedAt returns when a resolved instance stopped firing, never before it started.
func resolvedAt(ev *alert.Event) time.Time {
	t := ev.Time
	if ev.ResolvedAt != nil && !ev.ResolvedAt.IsZero() {
		t = *ev.ResolvedAt
	}
	if s := startsAt(ev); t.Before(s) {
		t = s
	}
	return t.UTC()
}

// fingerprint is Alertmanager's: FNV-1a 64 over the sorted label names and values, each
// followed by the byte 0xff, in 16 hex digits.
func fingerprint(labels map[string]string) string {
	h := fnv.New64a()
	writePairs(h, labels, 0xff)
	return fmt.Sprintf("%016x", h.Sum64())
}

// writePairs writes the names and values of m to w sorted by name, each followed by sep.
func writePairs(w io.Writer, m map[string]string, sep byte) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		io.WriteString(w, k)
		w.Write([]byte{sep})
		io.WriteString(w, m[k])
		w.Write([]byte{sep})
	}
}

// AlertmanagerMessage is the payload of a webhook channel with format alertmanager: what
// Alertmanager's webhook_config POSTs (version "4"), so that tools written for it work.
type AlertmanagerMessage struct {
	// Version is "4".
	Version string `json:"version"`
	// GroupKey identifies the group, as Alertmanager prints it: `{}:{rule_id="401-storm"}`.
	GroupKey string `json:"groupKey"`
	// TruncatedAlerts is always 0: Vigil sends every alert of the batch.
	TruncatedAlerts int `json:"truncatedAlerts"`
	// Status is "firing" when any alert fires, else "resolved".
	Status string `json:"status"`
	// Receiver is the channel's name.
	Receiver string `json:"receiver"`
	// GroupLabels are the batch's incident, or its rule when all alerts share one.
	GroupLabels map[string]string `json:"groupLabels"`
	// CommonLabels and CommonAnnotations are the pairs every alert has.
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	// ExternalURL links to Vigil's admin API (Options.ExternalURL).
	ExternalURL string `json:"externalURL"`
	// Alerts are the batch's events, in order.
	Alerts []AlertmanagerAlert `json:"alerts"`
}

// AlertmanagerAlert is one alert of an AlertmanagerMessage.
type AlertmanagerAlert struct {
	// Status is "firing" or "resolved".
	Status string `json:"status"`
	// Labels identify the alert instance: alertname, rule_id, vigil_type, severity and the
	// group dimensions.
	Labels map[string]string `json:"labels"`
	// Annotations describe it: summary, description, runbook_url, value, expected.
	Annotations map[string]string `json:"annotations"`
	// StartsAt is when the instance started firing; EndsAt when it resolved, or the zero
	// time (0001-01-01T00:00:00Z) while it fires.
	StartsAt time.Time `json:"startsAt"`
	EndsAt   time.Time `json:"endsAt"`
	// GeneratorURL links to the rule's events in Vigil's admin API.
	GeneratorURL string `json:"generatorURL"`
	// Fingerprint is Alertmanager's hash of the labels (16 hex digits).
	Fingerprint string `json:"fingerprint"`
}

// alertmanagerMessage builds Alertmanager's webhook payload for b. The group is the
// batch's incident when it has one, else its rule when all events share one, else empty
// (as an Alertmanager route without group_by); receiver is the channel's name.
func (w *Webhook) alertmanagerMessage(b *alert.Batch) AlertmanagerMessage {
	m := AlertmanagerMessage{
		Version:     "4",
		Status:      "resolved",
		Receiver:    w.name,
		GroupLabels: map[string]string{},
		ExternalURL: w.externalURL,
		Alerts:      make([]AlertmanagerAlert, 0, len(b.Events)),
	}
	var labelSets, annotationSets []map[string]string
	for i := range b.Events {
		ev := &b.Events[i]
		a := AlertmanagerAlert{
			Status:       "firing",
			Labels:       amLabels(ev),
			Annotations:  amAnnotations(ev),
			StartsAt:     startsAt(ev),
			GeneratorURL: w.eventURL(ev),
		}
		if ev.State == alert.Resolved {
			a.Status = "resolved"
			a.EndsAt = resolvedAt(ev)
		} else {
			m.Status = "firing"
		}
		a.Fingerprint = fingerprint(a.Labels)
		labelSets = append(labelSets, a.Labels)
		annotationSets = append(annotationSets, a.Annotations)
		m.Alerts = append(m.Alerts, a)
	}
	m.CommonLabels = commonPairs(labelSets)
	m.CommonAnnotations = commonPairs(annotationSets)
	switch {
	case b.Incident != "":
		m.GroupLabels["incident"] = b.Incident
	case m.CommonLabels[labelRuleID] != "":
		m.GroupLabels[labelRuleID] = m.CommonLabels[labelRuleID]
	}
	m.GroupKey = "{}:" + labelsText(m.GroupLabels)
	return m
}

// commonPairs returns the pairs every map holds.
func commonPairs(sets []map[string]string) map[string]string {
	common := map[string]string{}
	if len(sets) == 0 {
		return common
	}
	maps.Copy(common, sets[0])
	for _, s := range sets[1:] {
		for k, v := range common {
			if s[k] != v {
				delete(common, k)
			}
		}
	}
	return common
}

// labelsText prints labels as Alertmanager prints a group key: {a="1", b="2"}.
func labelsText(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, l[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
