package caddyplugin

import (
	"net/url"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"now": now, "-12h": now.Add(-12 * time.Hour), "-10min": now.Add(-10 * time.Minute), "-7d": now.Add(-7 * 24 * time.Hour),
		"-30s": now.Add(-30 * time.Second), "-2hours": now.Add(-2 * time.Hour), "-1w": now.Add(-7 * 24 * time.Hour),
		"2026-11-23T10:00:00Z": time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC),
	} {
		got, err := parseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-12", "12h", "-1y", "-99999999999999999999h"} {
		if _, err := parseTime(bad, now); err == nil {
			t.Errorf("parseTime(%q): no error", bad)
		}
	}
}

func FuzzAdminQuery(f *testing.F) {
	f.Add("from=-12h&to=now&type=alert,anomaly&threshold=moderate&state=firing&rule=401-storm&limit=10&offset=5")
	f.Add("metric=count&status=5xx&group_by=endpoint&from=-1h&step=1m&blocked=true")
	f.Add("from=2026-11-23T10:00:00Z&to=-1x&limit=-3")
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		_, _ = parseEventFilter(q, now)
		_, _ = filterFromQuery(q)
		_, _ = intParam(q, "limit", 100, 1000)
		_, _ = listParam(q.Get("group_by"), "group_by", []string{"user", "endpoint"})
	})
}
