// Package alert holds what the rule engine produces and hands on: alert events, the
// batches they are delivered in, and the Notifier interface that delivery implements.
package alert

import (
	"time"
)

// State is the lifecycle state of an alert instance (one rule, one group).
type State string

// The states of an alert instance. Events are raised for Firing and Resolved.
const (
	// Inactive: the condition does not hold.
	Inactive State = "inactive"
	// Pending: the condition holds, but for less than the rule's "for".
	Pending State = "pending"
	// Firing: the condition has held for at least "for".
	Firing State = "firing"
	// Resolved: the instance was firing and its condition stopped holding.
	Resolved State = "resolved"
)

// Event types, after the kind of rule that raised the event.
const (
	TypeAlert   = "alert"   // a static rule
	TypeAnomaly = "anomaly" // an anomaly rule
	TypeCohort  = "cohort"  // a cohort rule (a member entered the cohort)
	TypeTest    = "test"    // a test notification (caddy vigil test-channel)
)

// Severity levels, as PagerDuty and Alertmanager know them.
const (
	SeverityCritical = "critical"
	SeverityError    = "error"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"
)

// Event is one alert transition (firing, a throttled repeat of firing, or resolved), in the
// JSON shape of the admin API (SPEC section 6). Events are values: the engine keeps them in
// its history and hands copies to the notifier; delivery outcomes come back through
// DeliveryRecorder, never by mutating a shared event.
type Event struct {
	// ID is unique per event ("ev_" and random characters). A repeat of a firing alert is a
	// new event with a new ID.
	ID string `json:"id"`
	// RuleID and RuleName name the rule that raised the event.
	RuleID   string `json:"rule_id"`
	RuleName string `json:"rule_name"`
	// Type is TypeAlert, TypeAnomaly, TypeCohort or TypeTest.
	Type string `json:"type"`
	// State is Firing or Resolved.
	State State `json:"state"`
	// Repeat is true for a repeat notification of an instance that is still firing (sent at
	// most once per the rule's throttle).
	Repeat bool `json:"repeat,omitempty"`
	// Threshold describes the condition: for static rules the comparator and threshold
	// ("> 20"), for anomaly rules the sensitivity ("moderate").
	Threshold string `json:"threshold"`
	// Metric and Window describe what was measured ("count" over "15m").
	Metric string `json:"metric,omitempty"`
	Window string `json:"window,omitempty"`
	// Severity is one of the Severity constants.
	Severity string `json:"severity,omitempty"`
	// Group holds the group-by dimensions of the instance ({"user": "u-42"}); empty for an
	// ungrouped rule.
	Group map[string]string `json:"group"`
	// Value is the observed value when the event was raised, in the metric's unit.
	Value float64 `json:"value"`
	// Expected is the threshold of a static rule, or the expected value of an anomaly rule.
	Expected *float64 `json:"expected"`
	// Band is the expected range [low, high] of an anomaly rule; nil for static rules.
	Band *[2]float64 `json:"band,omitempty"`
	// Direction is "up" or "down" for anomaly events: where the value left the band.
	Direction string `json:"direction,omitempty"`
	// Time is when this event was raised.
	Time time.Time `json:"time"`
	// StartedAt is when the instance started firing; ResolvedAt when it resolved (nil while
	// firing).
	StartedAt  time.Time  `json:"started_at"`
	ResolvedAt *time.Time `json:"resolved_at"`
	// Playbook is the rule's playbook link or text.
	Playbook string `json:"playbook,omitempty"`
	// Channels names the channels the event is sent to (the rule's notify list).
	Channels []string `json:"channels,omitempty"`
	// Notifications records the outcome of delivery per channel.
	Notifications []Delivery `json:"notifications"`
	// Samples holds up to 5 recent calls that matched the rule's filter and group.
	Samples []Sample `json:"samples"`
	// Summary is a one-line human description ("31 x 401 in 15m for user u-42 (> 20)").
	Summary string `json:"summary,omitempty"`
	// Incident, when set, is the key of the correlated incident the event belongs to.
	Incident string `json:"incident,omitempty"`
	// Recipient, for cohort e-mails to API users, is the address the e-mail goes to.
	Recipient string `json:"recipient,omitempty"`
	// Email, for cohort e-mails to API users, is the rendered message an email channel
	// sends instead of an alert summary.
	Email *Email `json:"email,omitempty"`
}

// Email is a message to an API user (a behavioral e-mail of a cohort rule).
type Email struct {
	// To, Cc and Bcc are the recipients' addresses (To is the user).
	To  []string `json:"to"`
	Cc  []string `json:"cc,omitempty"`
	Bcc []string `json:"bcc,omitempty"`
	// Subject is the subject line, placeholders filled.
	Subject string `json:"subject"`
	// Text and HTML are the plain-text and HTML parts (HTML empty: text only).
	Text string `json:"text"`
	HTML string `json:"html,omitempty"`
}

// Sample is one recorded call shown with an event.
type Sample struct {
	// Time is when the call arrived.
	Time time.Time `json:"time"`
	// Method and Path are the request's (the path as called, not normalised).
	Method string `json:"method"`
	Path   string `json:"path"`
	// Status is the answer's status code (0: no answer from the upstream).
	Status int `json:"status"`
	// LatencyMS is the time to answer, in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
	// User, Company and Upstream identify the caller and where the call went.
	User     string `json:"user,omitempty"`
	Company  string `json:"company,omitempty"`
	Upstream string `json:"upstream,omitempty"`
	// RequestID is Caddy's request id, to find the call in the access log.
	RequestID string `json:"request_id,omitempty"`
}

// Delivery statuses recorded on an event.
const (
	DeliveryQueued    = "queued"    // accepted by the channel's queue, not yet attempted
	DeliveryDelivered = "delivered" // the receiver accepted it
	DeliveryRetrying  = "retrying"  // an attempt failed; another one is scheduled
	DeliveryFailed    = "failed"    // given up (non-retryable answer, or attempts or age exhausted)
	DeliveryDropped   = "dropped"   // the channel's queue was full
)

// Delivery is the outcome of sending an event through one channel.
type Delivery struct {
	// Channel is the channel's configured name.
	Channel string `json:"channel"`
	// Status is one of the Delivery constants.
	Status string `json:"status"`
	// Attempts counts the attempts made so far.
	Attempts int `json:"attempts"`
	// Error says why the last attempt failed (never containing a secret).
	Error string `json:"error,omitempty"`
	// Time is when this outcome was recorded.
	Time time.Time `json:"time"`
}

// Batch is what one channel receives in one notification: the events of one tick for that
// channel (storm grouping), or the members of one incident.
type Batch struct {
	// Channel is the name of the channel to deliver through.
	Channel string
	// Events are the members, in the order they were raised. A batch is never empty.
	Events []Event
	// Incident, when set, names the correlated incident the batch is about; channels that
	// deduplicate (PagerDuty) key on it instead of on each member.
	Incident string
	// IncidentFiring is, for a batch about an incident, how many of the incident's members
	// are still firing after this batch: an incident resolves when it reaches zero, not
	// when one member's resolve arrives alone.
	IncidentFiring int
}

// Firing returns how many events of the batch are firing (new or repeated).
func (b Batch) Firing() int {
	n := 0
	for i := range b.Events {
		if b.Events[i].State == Firing {
			n++
		}
	}
	return n
}

// Notifier delivers batches. Notify must never block: it queues the batch and returns.
type Notifier interface {
	Notify(b Batch)
}

// DeliveryRecorder receives the outcome of every delivery attempt, so that the event
// history can show it. Implementations must be safe for concurrent use.
type DeliveryRecorder interface {
	RecordDelivery(eventID string, d Delivery)
}
