package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigilgw/vigil/caddyplugin/blocklist"
	"github.com/vigilgw/vigil/detector/alert"
)

// Text is a JSON value shown as text: a string as it is, a number as written, null as "".
// Durations ("15m" or a number of seconds) and thresholds ("> 20" or "moderate") are read
// into it, so that the table does not depend on which form the API chose.
type Text string

// UnmarshalJSON reads a string, a number, a boolean or null.
func (t *Text) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*t = Text(s)
	case bytes.Equal(b, []byte("null")):
		*t = ""
	case len(b) > 0 && (b[0] == '{' || b[0] == '['):
		return fmt.Errorf("want a string or a number, got %s", b)
	default:
		*t = Text(b)
	}
	return nil
}

// Duration is a duration the API gives as a string ("15m", "7d") or a number of
// seconds (300), shown as text ("5m").
type Duration string

// UnmarshalJSON reads a string, a number of seconds or null.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var t Text
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	*d = Duration(t)
	if secs, err := strconv.ParseFloat(string(t), 64); err == nil && len(b) > 0 && b[0] != '"' {
		*d = Duration(formatDuration(time.Duration(secs * float64(time.Second))))
	}
	return nil
}

// formatDuration writes whole days as "7d" and drops zero units: "5m", "1h30m", "90s".
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// Rule is an element of GET /vigil/alerts: a rule of SPEC section 4 with source and firing.
type Rule struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Enabled     *bool     `json:"enabled"`
	Type        string    `json:"type"`
	Metric      string    `json:"metric"`
	Window      Duration  `json:"window"`
	For         Duration  `json:"for"`
	Comparator  string    `json:"comparator"`
	Threshold   *float64  `json:"threshold"`
	Sensitivity string    `json:"sensitivity"`
	Direction   string    `json:"direction"`
	Behavior    *Behavior `json:"behavior"`
	Source      string    `json:"source"`
	Firing      int       `json:"firing"`
}

// Behavior is what a cohort rule's members did.
type Behavior struct {
	Metric  string   `json:"metric"`
	Window  Duration `json:"window"`
	AtLeast *float64 `json:"at_least"`
	AtMost  *float64 `json:"at_most"`
}

// AlertsTable renders rules.
func AlertsTable(rules []Rule) *Table {
	t := NewTable("ID", "NAME", "TYPE", "METRIC", "CONDITION", "FIRING", "SOURCE", "ENABLED")
	for _, r := range rules {
		metric := r.Metric
		if metric == "" && r.Behavior != nil {
			metric = r.Behavior.Metric
		}
		t.Row(r.ID, r.Name, orDefault(r.Type, "static"), metric, Condition(r),
			strconv.Itoa(r.Firing), r.Source, yesNo(r.Enabled == nil || *r.Enabled))
	}
	return t
}

// Condition describes when a rule fires: "> 20 over 15m", "> 5% over 5m for 2m",
// "absent for 30m", "moderate, up" (anomaly) or ">= 1000 over 7d" (cohort).
func Condition(r Rule) string {
	switch {
	case r.Type == "anomaly":
		return orDefault(r.Sensitivity, "moderate") + ", " + orDefault(r.Direction, "both")
	case r.Type == "cohort":
		b := r.Behavior
		if b == nil {
			return ""
		}
		var s string
		switch {
		case b.AtLeast != nil:
			s = ">= " + Number(*b.AtLeast)
		case b.AtMost != nil:
			s = "<= " + Number(*b.AtMost)
		}
		return joinNonEmpty(s, over(b.Window))
	case r.Metric == "absent":
		return joinNonEmpty("absent", forDuration(r.For))
	}
	var s string
	if r.Threshold != nil {
		s = orDefault(r.Comparator, ">") + " " + Number(*r.Threshold) + unit(r.Metric)
	}
	return joinNonEmpty(s, over(r.Window), forDuration(r.For))
}

func over(window Duration) string {
	if window == "" {
		return ""
	}
	return "over " + string(window)
}

func forDuration(d Duration) string {
	if d == "" || d == "0s" {
		return ""
	}
	return "for " + string(d)
}

// unit is the unit a threshold of the metric is in (SPEC section 4).
func unit(metric string) string {
	switch {
	case metric == "error_rate", metric == "success_rate", metric == "percent_change":
		return "%"
	case strings.HasPrefix(metric, "latency"):
		return "ms"
	case metric == "ttfhw":
		return "s"
	}
	return ""
}

// EventList is the answer of GET /vigil/events: events in the shape of SPEC section 6.
type EventList struct {
	Events []alert.Event `json:"events"`
	Total  int           `json:"total"`
	Offset int           `json:"offset"`
	Limit  int           `json:"limit"`
}

// EventsTable renders events, times in loc.
func EventsTable(events []alert.Event, loc *time.Location) *Table {
	t := NewTable("TIME", "STATE", "RULE", "GROUP", "VALUE", "THRESHOLD", "DELIVERY")
	for _, e := range events {
		when := e.Time
		if when.IsZero() {
			when = e.StartedAt
		}
		state := string(e.State)
		if e.Repeat {
			state += " (repeat)"
		}
		value := Number(e.Value)
		if e.Type == "anomaly" && e.Expected != nil {
			value += " (expected " + Number(*e.Expected) + ")"
		}
		t.Row(Time(when, loc), state, orDefault(e.RuleID, e.RuleName), Group(e.Group),
			value, e.Threshold, Deliveries(e.Notifications))
	}
	return t
}

// Group renders an event's group as k=v pairs sorted by key: "company=acme,user=u-42".
func Group(g map[string]string) string {
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + g[k]
	}
	return strings.Join(parts, ",")
}

// Deliveries renders delivery outcomes: "ops-slack:delivered pd:retrying".
func Deliveries(ds []alert.Delivery) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = d.Channel + ":" + d.Status
	}
	return strings.Join(parts, " ")
}

// BlocklistTable renders block-list entries, times in loc.
func BlocklistTable(entries []blocklist.Entry, loc *time.Location) *Table {
	t := NewTable("KIND", "VALUE", "REASON", "EXPIRES", "ADDED", "SOURCE")
	for _, e := range entries {
		t.Row(string(e.Kind), e.Value, e.Reason, Expiry(e.Expires, loc), Time(e.Added, loc), e.Source)
	}
	return t
}

// Expiry renders an expiry time; the zero time is "never".
func Expiry(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "never"
	}
	return Time(t, loc)
}

// Upstream is an element of GET /vigil/upstreams.
type Upstream struct {
	Upstream   string                    `json:"upstream"`
	Windows    map[string]UpstreamWindow `json:"windows"`
	OpenAlerts []OpenAlert               `json:"open_alerts"`
}

// UpstreamWindow is an upstream's health over one window.
type UpstreamWindow struct {
	Calls       int64   `json:"calls"`
	Failures    int64   `json:"failures"`
	FailureRate float64 `json:"failure_rate"`
	ByKind      struct {
		Status  int64 `json:"status"`
		Connect int64 `json:"connect"`
		Timeout int64 `json:"timeout"`
		TLS     int64 `json:"tls"`
		Other   int64 `json:"other"`
	} `json:"by_kind"`
	LatencyMS struct {
		P50 float64 `json:"p50"`
		P90 float64 `json:"p90"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
}

// OpenAlert is a firing alert about an upstream.
type OpenAlert struct {
	RuleID    string    `json:"rule_id"`
	RuleName  string    `json:"rule_name"`
	StartedAt time.Time `json:"started_at"`
}

// UpstreamsTable renders upstream health: calls, failure kinds and latency over 5
// minutes, the failure rate over 1 minute, 5 minutes and 1 hour.
func UpstreamsTable(ups []Upstream) *Table {
	t := NewTable("UPSTREAM", "CALLS 5m", "FAIL% 1m/5m/1h", "5XX 5m", "CONNECT 5m", "TIMEOUT 5m", "TLS 5m", "P50/P99 5m", "OPEN ALERTS")
	for _, u := range ups {
		w1, w5, wh := u.Windows["1m"], u.Windows["5m"], u.Windows["1h"]
		latency := "-"
		if w5.Calls > 0 {
			latency = Millis(w5.LatencyMS.P50) + "/" + Millis(w5.LatencyMS.P99)
		}
		alerts := make([]string, len(u.OpenAlerts))
		for i, a := range u.OpenAlerts {
			alerts[i] = orDefault(a.RuleName, a.RuleID)
		}
		k := w5.ByKind
		t.Row(u.Upstream, count(w5.Calls), rate(w1)+"/"+rate(w5)+"/"+rate(wh),
			count(k.Status), count(k.Connect), count(k.Timeout), count(k.TLS), latency,
			strings.Join(alerts, ", "))
	}
	return t
}

func rate(w UpstreamWindow) string {
	if w.Calls == 0 {
		return "-"
	}
	return strconv.FormatFloat(w.FailureRate, 'f', 1, 64)
}

func count(n int64) string { return strconv.FormatInt(n, 10) }

// Millis renders a latency in milliseconds: "0.8ms", "12ms", "1.35s".
func Millis(ms float64) string {
	switch {
	case ms >= 1000:
		return strconv.FormatFloat(ms/1000, 'f', 2, 64) + "s"
	case ms < 10:
		return Number(math.Round(ms*10)/10) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

// DeliveryOutcome describes the outcome of a delivery, as POST
// /vigil/channels/{name}/test answers it: "ops-slack: delivered (1 attempt)" or
// "ops-slack: failed after 3 attempts: HTTP 500".
func DeliveryOutcome(d alert.Delivery) string {
	attempts := plural(d.Attempts, "attempt")
	if d.Status == alert.DeliveryDelivered {
		return fmt.Sprintf("%s: delivered (%s)", d.Channel, attempts)
	}
	s := fmt.Sprintf("%s: %s after %s", d.Channel, orDefault(d.Status, "not delivered"), attempts)
	if d.Error != "" {
		s += ": " + d.Error
	}
	return s
}

// Number renders a number without needless digits: 20, 0.5, 12.35 (two decimals at most).
func Number(v float64) string {
	if math.Abs(v) < 1e15 {
		v = math.Round(v*100) / 100
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// Time renders a time in loc as "2006-01-02 15:04:05"; the zero time is "".
func Time(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return ""
	}
	return t.In(loc).Format(time.DateTime)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func joinNonEmpty(parts ...string) string {
	out := parts[:0:0]
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}
