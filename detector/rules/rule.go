// Package rules holds Vigil's alert rules: the one rule model shared by the Caddyfile,
// the JSON config and the admin API, its validation, and the engine that evaluates rules
// against the store every tick, tracks each alert instance's lifecycle and raises events.
package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vigilgw/vigil/detector"
	"github.com/vigilgw/vigil/detector/alert"
)

// Rule types.
const (
	TypeStatic  = "static"
	TypeAnomaly = "anomaly"
	TypeCohort  = "cohort"
)

// Static metrics.
const (
	MetricCount         = "count"
	MetricErrorRate     = "error_rate"
	MetricSuccessRate   = "success_rate"
	MetricLatencyAvg    = "latency_avg"
	MetricLatencyP50    = "latency_p50"
	MetricLatencyP90    = "latency_p90"
	MetricLatencyP99    = "latency_p99"
	MetricUniqueUsers   = "unique_users"
	MetricPercentChange = "percent_change"
	// MetricLatency is the anomaly metric over latency.
	MetricLatency = "latency"
	// MetricAbsent fires when no call matched the filter for the rule's "for" (per group:
	// a group seen in the lookback that went silent), and resolves on the next call.
	MetricAbsent = "absent"
	// MetricTTFHW is time to first hello world, in seconds: from a user's sign-up
	// (created_at in the user registry, or the first call when unknown) to the first
	// call answered 1xx-3xx, or the time so far without one. As a static metric it is
	// each user's own (the rule groups by user; only users with calls matching the
	// filter in the window are judged); as an anomaly metric it is one series, the
	// median over the users who signed up in the last TTFHWSignupWindow.
	MetricTTFHW = "ttfhw"
)

// Rule is an alert rule, in the JSON shape of SPEC section 4. The Caddyfile alert blocks,
// apps.vigil.alerts and the admin API all produce this.
type Rule struct {
	// ID identifies the rule; derived from Name when empty ("401 storm" -> "401-storm").
	ID string `json:"id,omitempty"`
	// Name is the human name, shown in notifications.
	Name string `json:"name"`
	// Enabled turns the rule on or off; default on.
	Enabled *bool `json:"enabled,omitempty"`
	// Type is static (default), anomaly or cohort.
	Type string `json:"type,omitempty"`
	// Metric is what is measured. Static: count, error_rate, success_rate (percentages),
	// latency_avg, latency_p50, latency_p90, latency_p99 (milliseconds), unique_users,
	// percent_change (percent, this window against the one before or Compare ago),
	// absent, ttfhw (seconds: each user's time to first hello world; needs group_by
	// ["user"]). Anomaly: count, latency, ttfhw (the median time to first hello world of
	// the users who signed up in the last 7 days).
	Metric string `json:"metric"`
	// Filter selects the calls the rule looks at. For error_rate and success_rate the
	// status filter says which calls count as errors (successes) among all that match the
	// rest of the filter; without it, 5xx (1xx-3xx) do.
	Filter detector.Filter `json:"filter,omitzero"`
	// GroupBy makes one alert instance per distinct value of these dimensions: user,
	// company, key, endpoint, upstream, status, method.
	GroupBy []string `json:"group_by,omitempty"`
	// Window is how far back the metric looks (default 5m).
	Window Duration `json:"window,omitzero"`
	// Comparator is >, >=, <, <=, == or != (also gt, gte, lt, lte, eq, ne); default >.
	Comparator string `json:"comparator,omitempty"`
	// Threshold is the value the metric is compared with, in the metric's unit.
	Threshold *float64 `json:"threshold,omitempty"`
	// For is how long the condition must hold before the alert fires (default 0s).
	For Duration `json:"for,omitzero"`
	// MinCalls is the number of calls the window must hold for the condition to be
	// evaluated at all, so that ratios on tiny traffic do not fire. It counts the calls
	// matching the filter apart from its status, except for metric ttfhw, where it counts
	// each user's calls matching the whole filter ("more than 5 answered 400" is status
	// 400 and min_calls 6). For an anomaly rule of metric ttfhw it is the least number
	// of users who signed up in the last 7 days for a minute to be judged (default 1).
	MinCalls int `json:"min_calls,omitempty"`
	// Throttle is the least time between two notifications of one instance while it is
	// firing (repeats); empty: no repeats. "once": only the first firing of each group is
	// ever notified.
	Throttle Throttle `json:"throttle,omitzero"`
	// Notify names the channels that receive the rule's events.
	Notify []string `json:"notify,omitempty"`
	// Playbook is a link or text that tells whoever is paged what to do.
	Playbook string `json:"playbook,omitempty"`
	// Severity is critical, error, warning (default) or info.
	Severity string `json:"severity,omitempty"`
	// ResolveBelow (for > and >=) and ResolveAbove (for < and <=) set hysteresis: a firing
	// instance resolves only once the value crosses this second threshold, so that a value
	// hovering on the threshold does not flap.
	ResolveBelow *float64 `json:"resolve_below,omitempty"`
	ResolveAbove *float64 `json:"resolve_above,omitempty"`
	// Compare is, for percent_change, how far back the window compared with lies: default
	// the window itself (the window before); 7d compares with the same window a week ago.
	Compare Duration `json:"compare,omitzero"`
	// MaxGroups caps the alert instances (pending or firing) of a grouped rule; beyond it
	// new groups are counted and not tracked. Default 100.
	MaxGroups int `json:"max_groups,omitempty"`
	// Description is free text.
	Description string `json:"description,omitempty"`

	// Sensitivity (anomaly rules) is slight, moderate (default) or severe.
	Sensitivity string `json:"sensitivity,omitempty"`
	// Direction (anomaly rules) is up, down or both (default).
	Direction string `json:"direction,omitempty"`

	// Entity (cohort rules) is what the cohort is made of: user (default) or company.
	Entity string `json:"entity,omitempty"`
	// Match (cohort rules) selects members by who they are, from the user registry:
	// created_after and created_before (a relative time such as -28d, or RFC 3339), plan,
	// company, attributes.NAME (equality), ttfhw_over and ttfhw_under (a duration: the
	// time from sign-up, or first call, to the first successful call; a user with no
	// success yet counts the time so far).
	Match map[string]string `json:"match,omitempty"`
	// Behavior (cohort rules) selects members by what they did over a window.
	Behavior *Behavior `json:"behavior,omitempty"`
	// EmailUser (cohort rules, entity user) e-mails each member as it enters.
	EmailUser *EmailUser `json:"email_user,omitempty"`
	// Repeat (cohort rules) is "never" (default: act once per member, ever) or a duration:
	// a member that leaves and enters again is acted on again once this long has passed.
	Repeat string `json:"repeat,omitempty"`
}

// Behavior is a cohort rule's condition on what a member did.
type Behavior struct {
	// Metric is count (the only one for now): the member's calls matching Filter.
	Metric string `json:"metric,omitempty"`
	// Filter selects the calls counted (status and endpoint are the useful ones).
	Filter detector.Filter `json:"filter,omitzero"`
	// Window is how far back calls are counted (up to 35d; beyond 7d counted by day).
	Window Duration `json:"window"`
	// AtLeast and AtMost bound the count; "at_most": 0 with no filter is "never called".
	AtLeast *int64 `json:"at_least,omitempty"`
	AtMost  *int64 `json:"at_most,omitempty"`
}

// EmailUser is the e-mail a cohort rule sends each member as it enters.
type EmailUser struct {
	// Channel names an email channel of the configuration.
	Channel string `json:"channel"`
	// Template is the plain-text body: a Go text/template, inline or the path of a file
	// (a value without "{{" that names an existing file). Its data: .User (ID, Email,
	// Name, Company, Plan, CreatedAt, Attributes), .Figures (Calls, Errors4xx, Errors5xx,
	// TopEndpoint, TopStatus, TopFailing, FirstCall, FirstSuccess, TTFHW) and .Rule (ID,
	// Name).
	Template string `json:"template,omitempty"`
	// HTMLTemplate is the HTML body (html/template, inline or a file); optional.
	HTMLTemplate string `json:"html_template,omitempty"`
	// Subject, Cc and Bcc may hold {user.FIELD} and {user.attributes.NAME} placeholders
	// (for example the account's solutions engineer in Bcc).
	Subject string `json:"subject"`
	Cc      string `json:"cc,omitempty"`
	Bcc     string `json:"bcc,omitempty"`
}

// IsEnabled reports whether the rule is on.
func (r *Rule) IsEnabled() bool { return r.Enabled == nil || *r.Enabled }

// DefaultMaxGroups is the default cap on a rule's alert instances.
const DefaultMaxGroups = 100

var idSlug = regexp.MustCompile(`[^a-z0-9]+`)

// DeriveID returns the id a rule of that name gets: lower case, runs of other characters
// turned into "-".
func DeriveID(name string) string {
	return strings.Trim(idSlug.ReplaceAllString(strings.ToLower(name), "-"), "-")
}

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Normalize fills defaults (id, type, comparator, window, severity) in place.
func (r *Rule) Normalize() {
	r.Name = strings.TrimSpace(r.Name)
	if r.ID == "" {
		r.ID = DeriveID(r.Name)
	}
	if r.Type == "" {
		r.Type = TypeStatic
	}
	if r.Comparator == "" && r.Type == TypeStatic && r.Metric != MetricAbsent {
		r.Comparator = ">"
	}
	if c, ok := comparatorAliases[r.Comparator]; ok {
		r.Comparator = c
	}
	if r.Window == 0 && r.Type == TypeStatic && r.Metric == MetricAbsent {
		r.Window = r.For
	}
	if r.Window == 0 && r.Type == TypeStatic {
		r.Window = Duration(5 * time.Minute)
	}
	if r.Severity == "" {
		r.Severity = alert.SeverityWarning
		if r.Type == TypeCohort {
			r.Severity = alert.SeverityInfo
		}
	}
	if r.Type == TypeCohort && r.Entity == "" {
		r.Entity = "user"
	}
	if r.Filter.Method != "" {
		r.Filter.Method = strings.ToUpper(r.Filter.Method)
	}
	if r.Type == TypeAnomaly {
		if r.Sensitivity == "" {
			r.Sensitivity = "moderate"
		}
		if r.Direction == "" {
			r.Direction = "both"
		}
	}
}

var comparatorAliases = map[string]string{"gt": ">", "gte": ">=", "ge": ">=", "lt": "<", "lte": "<=", "le": "<=", "eq": "==", "=": "==", "ne": "!="}

// FieldError is a validation error naming the JSON field it is about.
type FieldError = detector.FieldError

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks a normalized rule; the error names the field that is wrong.
func (r *Rule) Validate() error {
	if r.Name == "" {
		return fieldErr("name", "required")
	}
	if !validID.MatchString(r.ID) {
		return fieldErr("id", "%q: want 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit", r.ID)
	}
	switch r.Type {
	case TypeStatic:
		return r.validateStatic()
	case TypeAnomaly:
		return r.validateAnomaly()
	case TypeCohort:
		return r.validateCohort()
	default:
		return fieldErr("type", "%q: want static, anomaly or cohort", r.Type)
	}
}

func (r *Rule) validateCommon() error {
	if _, err := r.Filter.Compile(); err != nil {
		var fe *detector.FieldError
		if errors.As(err, &fe) {
			return fieldErr("filter."+fe.Field, "%v", fe.Err)
		}
		return fieldErr("filter", "%v", err)
	}
	if _, err := parseGroupBy(r.GroupBy); err != nil {
		return err
	}
	if r.For < 0 {
		return fieldErr("for", "must not be negative")
	}
	if r.MaxGroups < 0 {
		return fieldErr("max_groups", "must not be negative")
	}
	switch r.Severity {
	case alert.SeverityCritical, alert.SeverityError, alert.SeverityWarning, alert.SeverityInfo:
	default:
		return fieldErr("severity", "%q: want critical, error, warning or info", r.Severity)
	}
	for i, n := range r.Notify {
		if strings.TrimSpace(n) == "" {
			return fieldErr(fmt.Sprintf("notify[%d]", i), "empty channel name")
		}
	}
	return nil
}

func (r *Rule) validateStatic() error {
	if r.Metric == MetricAbsent {
		return r.validateAbsent()
	}
	switch r.Metric {
	case MetricCount, MetricErrorRate, MetricSuccessRate, MetricLatencyAvg, MetricLatencyP50,
		MetricLatencyP90, MetricLatencyP99, MetricUniqueUsers, MetricPercentChange, MetricTTFHW:
	case "":
		return fieldErr("metric", "required")
	default:
		return fieldErr("metric", "%q: want count, error_rate, success_rate, latency_avg, latency_p50, latency_p90, latency_p99, unique_users, percent_change, absent or ttfhw", r.Metric)
	}
	if err := r.validateCommon(); err != nil {
		return err
	}
	if r.Metric == MetricTTFHW && (len(r.GroupBy) != 1 || r.GroupBy[0] != "user") {
		// A company has no time to first hello world of its own, and other dimensions
		// would repeat one user's value once per endpoint or status.
		return fieldErr("group_by", "metric ttfhw is each user's own: want [\"user\"]")
	}
	if r.Window <= 0 {
		return fieldErr("window", "must be positive")
	}
	if time.Duration(r.Window) > 35*24*time.Hour {
		return fieldErr("window", "%s: at most 35d (the store's horizon)", r.Window)
	}
	if _, ok := comparators[r.Comparator]; !ok {
		return fieldErr("comparator", "%q: want >, >=, <, <=, == or !=", r.Comparator)
	}
	if r.Threshold == nil {
		return fieldErr("threshold", "required: a number")
	}
	if math.IsNaN(*r.Threshold) || math.IsInf(*r.Threshold, 0) {
		return fieldErr("threshold", "must be a finite number")
	}
	if r.MinCalls < 0 {
		return fieldErr("min_calls", "must not be negative")
	}
	if r.ResolveBelow != nil {
		if r.Comparator != ">" && r.Comparator != ">=" {
			return fieldErr("resolve_below", "only for comparators > and >=")
		}
		if *r.ResolveBelow > *r.Threshold {
			return fieldErr("resolve_below", "%v is above the threshold %v", *r.ResolveBelow, *r.Threshold)
		}
	}
	if r.ResolveAbove != nil {
		if r.Comparator != "<" && r.Comparator != "<=" {
			return fieldErr("resolve_above", "only for comparators < and <=")
		}
		if *r.ResolveAbove < *r.Threshold {
			return fieldErr("resolve_above", "%v is below the threshold %v", *r.ResolveAbove, *r.Threshold)
		}
	}
	if r.Compare != 0 && r.Metric != MetricPercentChange {
		return fieldErr("compare", "only for metric percent_change")
	}
	if r.Compare < 0 {
		return fieldErr("compare", "must not be negative")
	}
	if time.Duration(r.Compare+r.Window) > 35*24*time.Hour {
		return fieldErr("compare", "window plus compare reach back more than 35d (the store's horizon)")
	}
	if r.Sensitivity != "" || r.Direction != "" {
		return fieldErr("sensitivity", "only for anomaly rules")
	}
	return nil
}

// AbsentLookback is how far back an absence rule grouped by a dimension looks for the
// groups that should be calling: ten times its "for", at least an hour.
func AbsentLookback(forDur time.Duration) time.Duration {
	return min(max(10*forDur, time.Hour), 35*24*time.Hour-forDur)
}

func (r *Rule) validateAbsent() error {
	if err := r.validateCommon(); err != nil {
		return err
	}
	if r.For <= 0 {
		return fieldErr("for", "required for metric absent: how long without a matching call")
	}
	if time.Duration(r.For) > 7*24*time.Hour {
		return fieldErr("for", "%s: at most 7d", r.For)
	}
	if r.Window != r.For {
		return fieldErr("window", "metric absent takes its window from for: leave window out")
	}
	if r.Threshold != nil || r.Comparator != "" {
		return fieldErr("threshold", "metric absent takes no threshold or comparator")
	}
	if r.ResolveBelow != nil || r.ResolveAbove != nil || r.Compare != 0 || r.MinCalls != 0 {
		return fieldErr("min_calls", "metric absent takes no min_calls, compare or hysteresis")
	}
	if r.Sensitivity != "" || r.Direction != "" {
		return fieldErr("sensitivity", "only for anomaly rules")
	}
	return nil
}

// cohortMatchKeys are the keys Match accepts (besides attributes.NAME).
var cohortMatchKeys = map[string]bool{"created_after": true, "created_before": true, "plan": true, "company": true, "ttfhw_over": true, "ttfhw_under": true}

func (r *Rule) validateCohort() error {
	if r.Entity == "" {
		r.Entity = "user"
	}
	if r.Entity != "user" && r.Entity != "company" {
		return fieldErr("entity", "%q: want user or company", r.Entity)
	}
	if r.Metric != "" || r.Threshold != nil || r.Comparator != "" || r.Window != 0 || r.For != 0 || len(r.GroupBy) > 0 {
		return fieldErr("metric", "cohort rules take match and behavior, not metric, threshold, window, for or group_by")
	}
	if r.Filter.Dims() != 0 {
		return fieldErr("filter", "cohort rules filter calls in behavior.filter")
	}
	if len(r.Match) == 0 && r.Behavior == nil {
		return fieldErr("match", "a cohort needs match or behavior (or both)")
	}
	for k, v := range r.Match {
		field := "match." + k
		switch {
		case strings.HasPrefix(k, "attributes.") && len(k) > len("attributes."):
		case !cohortMatchKeys[k]:
			return fieldErr(field, "unknown condition (want created_after, created_before, plan, company, attributes.NAME, ttfhw_over or ttfhw_under)")
		case k == "created_after" || k == "created_before":
			if _, err := ParseRelativeTime(v, time.Now()); err != nil {
				return fieldErr(field, "%v", err)
			}
		case k == "ttfhw_over" || k == "ttfhw_under":
			if d, err := ParseDuration(v); err != nil || d <= 0 {
				return fieldErr(field, "%q is not a positive duration", v)
			}
		}
		if r.Entity == "company" && k != "created_after" && k != "created_before" && !strings.HasPrefix(k, "attributes.") && k != "plan" {
			if k == "company" || k == "ttfhw_over" || k == "ttfhw_under" {
				return fieldErr(field, "not a condition on companies")
			}
		}
	}
	if b := r.Behavior; b != nil {
		if b.Metric == "" {
			b.Metric = MetricCount
		}
		if b.Metric != MetricCount {
			return fieldErr("behavior.metric", "%q: want count", b.Metric)
		}
		if _, err := b.Filter.Compile(); err != nil {
			var fe *detector.FieldError
			if errors.As(err, &fe) {
				return fieldErr("behavior.filter."+fe.Field, "%v", fe.Err)
			}
			return fieldErr("behavior.filter", "%v", err)
		}
		if b.Filter.User != "" || b.Filter.Company != "" || b.Filter.Key != "" {
			return fieldErr("behavior.filter", "a cohort counts each member's own calls: no user, company or key filter")
		}
		if b.Window <= 0 || time.Duration(b.Window) > 35*24*time.Hour {
			return fieldErr("behavior.window", "want a duration up to 35d")
		}
		if (b.AtLeast == nil) == (b.AtMost == nil) {
			return fieldErr("behavior.at_least", "give exactly one of at_least and at_most")
		}
		if (b.AtLeast != nil && *b.AtLeast < 0) || (b.AtMost != nil && *b.AtMost < 0) {
			return fieldErr("behavior.at_least", "must not be negative")
		}
	}
	if e := r.EmailUser; e != nil {
		if r.Entity != "user" {
			return fieldErr("email_user", "only for cohorts of users")
		}
		if e.Channel == "" {
			return fieldErr("email_user.channel", "required: an email channel")
		}
		if e.Template == "" && e.HTMLTemplate == "" {
			return fieldErr("email_user.template", "required: a text template (or html_template)")
		}
		if strings.TrimSpace(e.Subject) == "" {
			return fieldErr("email_user.subject", "required")
		}
	}
	if r.Repeat != "" && r.Repeat != "never" {
		if d, err := ParseDuration(r.Repeat); err != nil || d <= 0 {
			return fieldErr("repeat", "%q: want never or a positive duration", r.Repeat)
		}
	}
	if r.Sensitivity != "" || r.Direction != "" || !r.Throttle.IsZero() {
		return fieldErr("repeat", "cohort rules take repeat, not throttle, sensitivity or direction")
	}
	return nil
}

// ParseRelativeTime reads -28d, -7d, -12h (before now) or an RFC 3339 time.
func ParseRelativeTime(v string, now time.Time) (time.Time, error) {
	if strings.HasPrefix(v, "-") {
		d, err := ParseDuration(v[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: want -28d, -12h or an RFC 3339 time", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want -28d, -12h or an RFC 3339 time", v)
	}
	return t, nil
}

func (r *Rule) validateAnomaly() error {
	switch r.Metric {
	case MetricCount, MetricLatency, MetricTTFHW:
	case "":
		return fieldErr("metric", "required")
	default:
		return fieldErr("metric", "%q: anomaly rules measure count, latency or ttfhw", r.Metric)
	}
	if err := r.validateCommon(); err != nil {
		return err
	}
	if r.Metric == MetricTTFHW {
		// One series over the user registry: there are no calls to filter or group.
		if r.Filter.Dims() != 0 {
			return fieldErr("filter", "metric ttfhw (anomaly) is the median over the users who signed up in the last 7 days: no filter")
		}
		if len(r.GroupBy) > 0 {
			return fieldErr("group_by", "metric ttfhw (anomaly) is one series: no group_by")
		}
		if r.MinCalls < 0 {
			return fieldErr("min_calls", "must not be negative")
		}
	}
	switch r.Sensitivity {
	case "slight", "moderate", "severe":
	default:
		return fieldErr("sensitivity", "%q: want slight, moderate or severe", r.Sensitivity)
	}
	switch r.Direction {
	case "up", "down", "both":
	default:
		return fieldErr("direction", "%q: want up, down or both", r.Direction)
	}
	if r.Threshold != nil {
		return fieldErr("threshold", "anomaly rules take a sensitivity, not a threshold")
	}
	if r.Comparator != "" {
		return fieldErr("comparator", "anomaly rules take a direction, not a comparator")
	}
	if r.Window != 0 && time.Duration(r.Window) != time.Minute {
		return fieldErr("window", "anomaly rules look at closed one-minute buckets: leave window out")
	}
	if r.Metric == MetricPercentChange || r.Compare != 0 {
		return fieldErr("compare", "only for static rules")
	}
	if r.ResolveBelow != nil || r.ResolveAbove != nil {
		return fieldErr("resolve_below", "only for static rules")
	}
	return nil
}

var comparators = map[string]func(v, t float64) bool{
	">":  func(v, t float64) bool { return v > t },
	">=": func(v, t float64) bool { return v >= t },
	"<":  func(v, t float64) bool { return v < t },
	"<=": func(v, t float64) bool { return v <= t },
	"==": func(v, t float64) bool { return v == t },
	"!=": func(v, t float64) bool { return v != t },
}

// groupDims are the dimensions a rule may group by.
var groupDims = map[string]detector.Dim{
	"user": detector.DimUser, "company": detector.DimCompany, "key": detector.DimKey,
	"endpoint": detector.DimEndpoint, "upstream": detector.DimUpstream, "status": detector.DimStatus,
	"method": detector.DimMethod,
}

func parseGroupBy(names []string) (detector.DimSet, error) {
	var s detector.DimSet
	for i, n := range names {
		d, ok := groupDims[n]
		if !ok {
			return 0, fieldErr(fmt.Sprintf("group_by[%d]", i), "%q: want user, company, key, endpoint, upstream, status or method", n)
		}
		if s.Has(d) {
			return 0, fieldErr(fmt.Sprintf("group_by[%d]", i), "%q given twice", n)
		}
		s |= detector.Dims(d)
	}
	return s, nil
}

// Fingerprint returns a stable text of everything that defines the rule's behaviour, so
// that a reload can tell an unchanged rule (which keeps its state) from a changed one.
func (r *Rule) Fingerprint() string {
	c := *r
	c.Notify = nil // changing where it goes does not change what it watches
	c.Playbook, c.Description, c.Name = "", "", ""
	b, _ := json.Marshal(&c)
	return string(b)
}

// DecodeRule decodes one rule from JSON strictly (unknown fields are errors), normalizes
// and validates it. Errors name the field.
func DecodeRule(data []byte) (Rule, error) {
	var r Rule
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Rule{}, jsonFieldError(err, data)
	}
	if dec.More() {
		return Rule{}, fieldErr("body", "more than one JSON value")
	}
	r.Normalize()
	if err := r.Validate(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// jsonFieldError turns a decoding error into a FieldError naming the field. Errors of
// fields with their own decoding (durations, throttle) do not say which field they are
// about, so each top-level field is decoded alone to find it.
func jsonFieldError(err error, data []byte) error {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
		fe        *FieldError
	)
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.As(err, &typeErr):
		f := typeErr.Field
		if f == "" {
			f = "body"
		}
		want := typeErr.Type.String()
		switch typeErr.Type.Kind().String() {
		case "float64", "float32", "int", "int64":
			want = "a number"
		case "string":
			want = "a string"
		case "bool":
			want = "true or false"
		}
		return fieldErr(f, "must be %s, got JSON %s", want, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fieldErr("body", "invalid JSON at byte %d: %v", syntaxErr.Offset, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldErr(f, "unknown field")
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) == nil {
		for name, raw := range fields {
			one, _ := json.Marshal(map[string]json.RawMessage{name: raw})
			var r Rule
			if e := json.Unmarshal(one, &r); e != nil {
				return fieldErr(name, "%v", e)
			}
		}
	}
	return fieldErr("body", "%v", err)
}

// Duration is a length of time in JSON: a string such as "15m", "1h30m" or "7d", or a
// number of seconds.
type Duration time.Duration

// ParseDuration parses "15m", "1h30m", "7d", "2w" or "1d12h".
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty duration")
	}
	var total time.Duration
	rest := s
	// Days and weeks first ("7d", "1w2d3h").
	for {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i >= len(rest) || (rest[i] != 'd' && rest[i] != 'w') {
			break
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		unit := 24 * time.Hour
		if rest[i] == 'w' {
			unit *= 7
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (want a number and a unit: s, m, h, d, w)", s)
		}
		total += d
	}
	return total, nil
}

// FormatDuration writes d compactly: "15m", "1h30m", "7d", "0s".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	if d < 0 {
		b.WriteByte('-')
		d = -d
	}
	if days := d / (24 * time.Hour); days > 0 {
		b.WriteString(strconv.FormatInt(int64(days), 10))
		b.WriteByte('d')
		d -= days * 24 * time.Hour
	}
	if d > 0 {
		s := d.String() // "1h30m0s", "2h0m0s", "1m30s", "45s"
		if strings.HasSuffix(s, "m0s") {
			s = s[:len(s)-2]
		}
		if strings.HasSuffix(s, "h0m") {
			s = s[:len(s)-2]
		}
		b.WriteString(s)
	}
	return b.String()
}

// String returns the duration in compact form.
func (d Duration) String() string { return FormatDuration(time.Duration(d)) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a string ("15m", "7d") or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("want a duration such as \"15m\" or a number of seconds")
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// Throttle is how often a firing instance may be notified again: every Every, or, with
// Once, only its first firing ever.
type Throttle struct {
	Every time.Duration
	Once  bool
}

// IsZero reports whether the throttle is unset (no repeats).
func (t Throttle) IsZero() bool { return t.Every == 0 && !t.Once }

// String returns "once", a duration, or "".
func (t Throttle) String() string {
	switch {
	case t.Once:
		return "once"
	case t.Every > 0:
		return FormatDuration(t.Every)
	}
	return ""
}

// ParseThrottle parses "once" or a duration.
func ParseThrottle(s string) (Throttle, error) {
	if s == "once" {
		return Throttle{Once: true}, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return Throttle{}, err
	}
	if d < 0 {
		return Throttle{}, errors.New("must not be negative")
	}
	return Throttle{Every: d}, nil
}

// MarshalJSON writes "once" or a duration.
func (t Throttle) MarshalJSON() ([]byte, error) { return json.Marshal(t.String()) }

// UnmarshalJSON reads "once", a duration string or a number of seconds.
func (t *Throttle) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*t = Throttle{}
			return nil
		}
		v, err := ParseThrottle(s)
		if err != nil {
			return err
		}
		*t = v
		return nil
	}
	var d Duration
	if err := d.UnmarshalJSON(b); err != nil {
		return err
	}
	*t = Throttle{Every: time.Duration(d)}
	return nil
}
