package notifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// DefaultPagerDutyURL is the Events API v2 endpoint; EU accounts use
// https://events.eu.pagerduty.com/v2/enqueue.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// PagerDuty limits.
const (
	pdMaxSummary  = 1024
	pdMaxDedupKey = 255
	pdMaxMembers  = 50 // members listed in custom_details of an incident
)

// PagerDuty sends events to PagerDuty's Events API v2: a firing event is a "trigger", a
// resolved one a "resolve", under a dedup_key that is stable per rule and group
// ("vigil/<rule_id>/<hash of the group>"), so that a resolve closes the alert its trigger
// opened. The Events API takes one event per request: a batch of several independent events
// becomes one request per event, in order (a retry sends them all again; PagerDuty
// deduplicates on the key). A batch with an Incident is one request whose dedup_key is the
// incident's, triggered while any member fires and resolved when none does. Severity comes
// from the event (warning when unset). The routing key is a secret.
type PagerDuty struct {
	base
	url        *url.URL
	display    string
	routingKey Secret
	source     string
}

func newPagerDuty(b base, c Config, opts Options) (*PagerDuty, error) {
	u, err := c.endpoint(DefaultPagerDutyURL)
	if err != nil {
		return nil, err
	}
	source := opts.Source
	if source == "" {
		source = hostname()
	}
	return &PagerDuty{base: b, url: u, display: redactURL(u, false), routingKey: NewSecret(c.RoutingKey), source: source}, nil
}

// pdEvent is an Events API v2 request body.
type pdEvent struct {
	RoutingKey  string     `json:"routing_key"`
	EventAction string     `json:"event_action"`
	DedupKey    string     `json:"dedup_key"`
	Client      string     `json:"client,omitempty"`
	ClientURL   string     `json:"client_url,omitempty"`
	Payload     *pdPayload `json:"payload,omitempty"`
	Links       []pdLink   `json:"links,omitempty"`
}

// pdPayload describes a triggered alert.
type pdPayload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"`
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

// pdLink is a link shown with the alert.
type pdLink struct {
	Href string `json:"href"`
	Text string `json:"text,omitempty"`
}

// Send posts b: one request per event, or one for an incident.
func (p *PagerDuty) Send(ctx context.Context, b alert.Batch) error {
	if len(b.Events) == 0 {
		return errEmptyBatch
	}
	var events []pdEvent
	if b.Incident != "" {
		events = []pdEvent{p.incidentEvent(&b)}
	} else {
		for i := range b.Events {
			events = append(events, p.memberEvent(&b.Events[i]))
		}
	}
	for i := range events {
		body, err := json.Marshal(events[i])
		if err != nil {
			return Permanent(fmt.Errorf("pagerduty %q: encoding the event: %w", p.name, err))
		}
		if err := p.post(ctx, httpRequest{url: p.url, display: p.display, contentType: "application/json", body: body}); err != nil {
			if len(events) > 1 {
				return wrapDelivery(err, fmt.Sprintf("event %d of %d", i+1, len(events)))
			}
			return err
		}
	}
	return nil
}

// memberEvent is the request of one event.
func (p *PagerDuty) memberEvent(ev *alert.Event) pdEvent {
	e := pdEvent{RoutingKey: p.routingKey.Reveal(), DedupKey: pdDedupKey(ev.RuleID, ev.Group), EventAction: "trigger"}
	if ev.State == alert.Resolved {
		e.EventAction = "resolve"
		return e
	}
	e.Client, e.ClientURL = "Vigil", p.eventURL(ev)
	e.Payload = &pdPayload{
		Summary:       truncateRunes(stateWord(ev)+" "+ev.RuleName+": "+summaryText(ev), pdMaxSummary),
		Source:        p.source,
		Severity:      severityOf(ev),
		Timestamp:     ev.Time.UTC().Format(time.RFC3339),
		Component:     ev.Group["endpoint"],
		Group:         ev.Group["upstream"],
		Class:         ev.Metric,
		CustomDetails: pdDetails(ev),
	}
	if ev.Time.IsZero() {
		e.Payload.Timestamp = ""
	}
	e.Links = p.links(ev)
	return e
}

// incidentEvent is the single request of a batch about an incident.
func (p *PagerDuty) incidentEvent(b *alert.Batch) pdEvent {
	e := pdEvent{RoutingKey: p.routingKey.Reveal(), DedupKey: pdIncidentKey(b.Incident), EventAction: "trigger"}
	if b.Firing() == 0 && b.IncidentFiring == 0 {
		e.EventAction = "resolve"
		return e
	}
	severity, first := alert.SeverityInfo, &b.Events[0]
	members := make([]map[string]any, 0, min(len(b.Events), pdMaxMembers))
	for i := range b.Events {
		ev := &b.Events[i]
		if severityRank(severityOf(ev)) > severityRank(severity) {
			severity = severityOf(ev)
		}
		if i < pdMaxMembers {
			members = append(members, pdDetails(ev))
		}
	}
	e.Client, e.ClientURL = "Vigil", p.eventURL(first)
	e.Payload = &pdPayload{
		Summary:   truncateRunes(fmt.Sprintf("Incident %s: %s (%s)", b.Incident, headline(b), ruleNames(b, 5)), pdMaxSummary),
		Source:    p.source,
		Severity:  severity,
		Timestamp: newestTime(b, p.now()).UTC().Format(time.RFC3339),
		Class:     first.Metric,
		CustomDetails: map[string]any{
			"incident": b.Incident,
			"count":    len(b.Events),
			"members":  members,
		},
	}
	e.Links = p.links(first)
	return e
}

// links returns the playbook and the link back to Vigil, when there are.
func (p *PagerDuty) links(ev *alert.Event) []pdLink {
	var l []pdLink
	if u := playbookURL(ev); u != "" {
		l = append(l, pdLink{Href: u, Text: "Playbook"})
	}
	if u := p.eventURL(ev); u != "" {
		l = append(l, pdLink{Href: u, Text: "Vigil events of " + ev.RuleName})
	}
	return l
}

// pdDetails is an event's custom_details.
func pdDetails(ev *alert.Event) map[string]any {
	d := map[string]any{
		"event_id":  ev.ID,
		"rule_id":   ev.RuleID,
		"rule":      ev.RuleName,
		"type":      ev.Type,
		"state":     string(ev.State),
		"value":     ev.Value,
		"threshold": ev.Threshold,
	}
	set := func(k string, v any, ok bool) {
		if ok {
			d[k] = v
		}
	}
	set("expected", ev.Expected, ev.Expected != nil)
	set("band", ev.Band, ev.Band != nil)
	set("direction", ev.Direction, ev.Direction != "")
	set("metric", ev.Metric, ev.Metric != "")
	set("window", ev.Window, ev.Window != "")
	set("group", ev.Group, len(ev.Group) > 0)
	set("playbook", ev.Playbook, ev.Playbook != "")
	set("started_at", ev.StartedAt, !ev.StartedAt.IsZero())
	set("samples", ev.Samples, len(ev.Samples) > 0)
	return d
}

// severityRank orders severities from info (0) to critical (3).
func severityRank(s string) int {
	return slices.Index([]string{alert.SeverityInfo, alert.SeverityWarning, alert.SeverityError, alert.SeverityCritical}, s)
}

// pdDedupKey is "vigil/<rule_id>/<16 hex of SHA-256 of the sorted group>", or
// "vigil/<rule_id>" for an ungrouped rule; stable across ticks and restarts. A rule id too
// long for PagerDuty's 255 characters is replaced by its hash.
func pdDedupKey(ruleID string, group map[string]string) string {
	key := "vigil/" + ruleID
	if len(group) > 0 {
		h := sha256.New()
		writePairs(h, group, 0)
		key += "/" + hex.EncodeToString(h.Sum(nil)[:8])
	}
	if len(key) > pdMaxDedupKey {
		sum := sha256.Sum256([]byte(ruleID))
		return pdDedupKey("sha256-"+hex.EncodeToString(sum[:]), group)
	}
	return key
}

// pdIncidentKey is the dedup_key of an incident: "vigil/incident/<key>".
func pdIncidentKey(incident string) string {
	key := "vigil/incident/" + incident
	if len(key) > pdMaxDedupKey {
		sum := sha256.Sum256([]byte(incident))
		key = "vigil/incident/sha256-" + hex.EncodeToString(sum[:])
	}
	return key
}

var _ Channel = (*PagerDuty)(nil)
