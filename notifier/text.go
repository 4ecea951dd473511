package notifier

import (
	"fmt"
	"maps"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigilgw/vigil/detector/alert"
)

// The wording shared by the human-readable channels (Slack, e-mail, SMS, PagerDuty).

// stateWord says what an event is: FIRING, RESOLVED or TEST.
func stateWord(ev *alert.Event) string {
	switch {
	case ev.Type == alert.TypeTest:
		return "TEST"
	case ev.State == alert.Resolved:
		return "RESOLVED"
	case ev.Repeat:
		return "FIRING (repeat)"
	}
	return "FIRING"
}

// formatNumber prints integers without decimals and other values with 6 significant digits.
func formatNumber(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', 6, 64)
}

// groupText prints the group dimensions sorted by name: "company=acme, user=u-42".
func groupText(g map[string]string) string {
	keys := slices.Sorted(maps.Keys(g))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+g[k])
	}
	return strings.Join(parts, ", ")
}

// conditionText says the value against the condition: "31 (threshold > 20)", or for an
// anomaly "31, expected 12 in [5, 19] (moderate, up)".
func conditionText(ev *alert.Event) string {
	var b strings.Builder
	b.WriteString(formatNumber(ev.Value))
	if ev.Band != nil || (ev.Expected != nil && ev.Type == alert.TypeAnomaly) {
		if ev.Expected != nil {
			b.WriteString(", expected " + formatNumber(*ev.Expected))
		}
		if ev.Band != nil {
			fmt.Fprintf(&b, " in [%s, %s]", formatNumber(ev.Band[0]), formatNumber(ev.Band[1]))
		}
		detail := ev.Threshold
		if ev.Direction != "" {
			detail = strings.TrimPrefix(detail+", "+ev.Direction, ", ")
		}
		if detail != "" {
			b.WriteString(" (" + detail + ")")
		}
		return b.String()
	}
	if ev.Threshold != "" {
		b.WriteString(" (threshold " + ev.Threshold + ")")
	}
	return b.String()
}

// summaryText is the event's one-line summary, or one made from the rule and condition.
func summaryText(ev *alert.Event) string {
	if ev.Summary != "" {
		return ev.Summary
	}
	s := ev.RuleName + ": " + ev.Metric
	if ev.Window != "" {
		s += " over " + ev.Window
	}
	s += " = " + conditionText(ev)
	if g := groupText(ev.Group); g != "" {
		s += " for " + g
	}
	return s
}

// headline sums a batch up in a few words: "401 storm firing (user=u-42)" for one event,
// "3 alerts: 2 firing, 1 resolved" for more.
func headline(b *alert.Batch) string {
	if len(b.Events) == 1 {
		ev := &b.Events[0]
		if ev.Type == alert.TypeTest {
			return ev.RuleName
		}
		s := ev.RuleName + " " + strings.ToLower(stateWord(ev))
		if g := groupText(ev.Group); g != "" {
			s += " (" + g + ")"
		}
		return s
	}
	firing := b.Firing()
	s := fmt.Sprintf("%d alerts: ", len(b.Events))
	switch {
	case firing == len(b.Events):
		s += fmt.Sprintf("%d firing", firing)
	case firing == 0:
		s += fmt.Sprintf("%d resolved", len(b.Events))
	default:
		s += fmt.Sprintf("%d firing, %d resolved", firing, len(b.Events)-firing)
	}
	if b.Incident != "" {
		s += " in incident " + b.Incident
	}
	return s
}

// ruleNames lists the distinct rule names of a batch, at most max, then "and N more".
func ruleNames(b *alert.Batch, max int) string {
	var names []string
	for i := range b.Events {
		if n := b.Events[i].RuleName; !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:max], ", ") + fmt.Sprintf(" and %d more", len(names)-max)
}

// isTest reports whether a batch is a test notification.
func isTest(b *alert.Batch) bool {
	for i := range b.Events {
		if b.Events[i].Type == alert.TypeTest {
			return true
		}
	}
	return false
}

// sampleText prints one sample on one line.
func sampleText(s *alert.Sample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s -> %d in %sms", s.Time.UTC().Format(time.RFC3339), s.Method, s.Path, s.Status, formatNumber(s.LatencyMS))
	for _, kv := range [][2]string{{"user", s.User}, {"company", s.Company}, {"upstream", s.Upstream}, {"request", s.RequestID}} {
		if kv[1] != "" {
			b.WriteString(" " + kv[0] + "=" + kv[1])
		}
	}
	return b.String()
}

// playbookURL returns the playbook when it is an http(s) link, else "".
func playbookURL(ev *alert.Event) string {
	if u, err := url.Parse(ev.Playbook); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return ev.Playbook
	}
	return ""
}

// truncateRunes cuts s to at most n runes, ending with an ellipsis when cut.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// newestTime returns the latest event time of a batch, or now when none is set.
func newestTime(b *alert.Batch, now time.Time) time.Time {
	var t time.Time
	for i := range b.Events {
		if b.Events[i].Time.After(t) {
			t = b.Events[i].Time
		}
	}
	if t.IsZero() {
		return now
	}
	return t
}
