package metrics

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// scrape returns what r writes.
func scrape(t testing.TB, r *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// family returns the lines of the named family in out, from its HELP line to the next
// family's.
func family(t testing.TB, out, name string) string {
	t.Helper()
	start := strings.Index(out, "# HELP "+name+" ")
	if start < 0 {
		t.Fatalf("no family %s in:\n%s", name, out)
	}
	end := strings.Index(out[start+1:], "# HELP ")
	if end < 0 {
		return out[start:]
	}
	return out[start : start+1+end]
}

// header is the HELP and TYPE lines of every family, in order, with the overflow counter's
// samples: what an unused registry writes.
const emptyOutput = `# HELP vigil_requests_total Requests handled, by endpoint template, method and status class (1xx to 5xx; none when no status was sent).
# TYPE vigil_requests_total counter
# HELP vigil_request_duration_seconds Time from a request's arrival to the end of its response, by endpoint template and method.
# TYPE vigil_request_duration_seconds histogram
# HELP vigil_rate_limited_total Requests refused by a rate limit, by policy.
# TYPE vigil_rate_limited_total counter
# HELP vigil_blocked_total Requests refused by the block list, by the kind of entry that matched: user, company, key, ip or cidr.
# TYPE vigil_blocked_total counter
vigil_blocked_total{kind="user"} 0
vigil_blocked_total{kind="company"} 0
vigil_blocked_total{kind="key"} 0
vigil_blocked_total{kind="ip"} 0
vigil_blocked_total{kind="cidr"} 0
# HELP vigil_quota_exceeded_total Requests refused because a quota was used up, by policy.
# TYPE vigil_quota_exceeded_total counter
# HELP vigil_alerts_firing Alert instances firing, by rule (0 for a rule with none).
# TYPE vigil_alerts_firing gauge
# HELP vigil_notifications_total Notifications by channel and outcome: delivered, failed (given up after retries), dropped (queue full) and retried (failed attempts tried again).
# TYPE vigil_notifications_total counter
# HELP vigil_notification_queue_length Notifications waiting to be delivered, by channel, the one in flight included.
# TYPE vigil_notification_queue_length gauge
# HELP vigil_tracked_series Time series held by the detector store.
# TYPE vigil_tracked_series gauge
# HELP vigil_tracked_callers Callers tracked by the detector store, by kind: user, company or key.
# TYPE vigil_tracked_callers gauge
# HELP vigil_store_overflow_total Calls the detector store counted under an "other" series because a view was full.
# TYPE vigil_store_overflow_total counter
# HELP vigil_snapshot_writes_total Snapshot parts written to Caddy storage, by part (base: the settled history, daily; segment: the settled history since the last cut, every 10 minutes; delta: the rest, every snapshot interval) and outcome (ok or failed).
# TYPE vigil_snapshot_writes_total counter
# HELP vigil_snapshot_bytes Size of the last snapshot part written, by part: base, delta or segment.
# TYPE vigil_snapshot_bytes gauge
# HELP vigil_snapshot_last_success_timestamp_seconds When the last snapshot was completed (its delta written), in Unix seconds: what a restart would get back.
# TYPE vigil_snapshot_last_success_timestamp_seconds gauge
# HELP vigil_metrics_label_overflow_total Updates counted under the label value "other" because the label had reached its cap, by metric family. Any increase means a cap is too low.
# TYPE vigil_metrics_label_overflow_total counter
vigil_metrics_label_overflow_total{family="vigil_requests_total"} 0
vigil_metrics_label_overflow_total{family="vigil_rate_limited_total"} 0
vigil_metrics_label_overflow_total{family="vigil_blocked_total"} 0
vigil_metrics_label_overflow_total{family="vigil_quota_exceeded_total"} 0
vigil_metrics_label_overflow_total{family="vigil_alerts_firing"} 0
vigil_metrics_label_overflow_total{family="vigil_notifications_total"} 0
`

func TestWritePrometheusEmpty(t *testing.T) {
	if got := scrape(t, New(Options{})); got != emptyOutput {
		t.Errorf("got:\n%s\nwant:\n%s", got, emptyOutput)
	}
}

// TestWritePrometheusText checks the exact text of one family after some updates.
func TestWritePrometheusText(t *testing.T) {
	const (
		requestsHead = "# HELP vigil_requests_total Requests handled, by endpoint template, method and status class (1xx to 5xx; none when no status was sent).\n# TYPE vigil_requests_total counter\n"
		durationHead = "# HELP vigil_request_duration_seconds Time from a request's arrival to the end of its response, by endpoint template and method.\n# TYPE vigil_request_duration_seconds histogram\n"
		rateHead     = "# HELP vigil_rate_limited_total Requests refused by a rate limit, by policy.\n# TYPE vigil_rate_limited_total counter\n"
		quotaHead    = "# HELP vigil_quota_exceeded_total Requests refused because a quota was used up, by policy.\n# TYPE vigil_quota_exceeded_total counter\n"
		blockedHead  = "# HELP vigil_blocked_total Requests refused by the block list, by the kind of entry that matched: user, company, key, ip or cidr.\n# TYPE vigil_blocked_total counter\n"
		firingHead   = "# HELP vigil_alerts_firing Alert instances firing, by rule (0 for a rule with none).\n# TYPE vigil_alerts_firing gauge\n"
		notifHead    = "# HELP vigil_notifications_total Notifications by channel and outcome: delivered, failed (given up after retries), dropped (queue full) and retried (failed attempts tried again).\n# TYPE vigil_notifications_total counter\n"
		queueHead    = "# HELP vigil_notification_queue_length Notifications waiting to be delivered, by channel, the one in flight included.\n# TYPE vigil_notification_queue_length gauge\n"
		seriesHead   = "# HELP vigil_tracked_series Time series held by the detector store.\n# TYPE vigil_tracked_series gauge\n"
		callersHead  = "# HELP vigil_tracked_callers Callers tracked by the detector store, by kind: user, company or key.\n# TYPE vigil_tracked_callers gauge\n"
		storeOvHead  = "# HELP vigil_store_overflow_total Calls the detector store counted under an \"other\" series because a view was full.\n# TYPE vigil_store_overflow_total counter\n"
		overflowHead = "# HELP vigil_metrics_label_overflow_total Updates counted under the label value \"other\" because the label had reached its cap, by metric family. Any increase means a cap is too low.\n# TYPE vigil_metrics_label_overflow_total counter\n"
	)
	tests := []struct {
		name   string
		opts   Options
		update func(r *Registry)
		family string
		want   string
	}{
		{
			name: "requests by endpoint, method and class, sorted",
			update: func(r *Registry) {
				r.ObserveRequest("/users/{id}", "POST", 503, time.Millisecond)
				r.ObserveRequest("/users/{id}", "GET", 200, time.Millisecond)
				r.ObserveRequest("/users/{id}", "GET", 204, time.Millisecond)
				r.ObserveRequest("/users/{id}", "GET", 404, time.Millisecond)
				r.ObserveRequest("/health", "GET", 200, time.Millisecond)
			},
			family: "vigil_requests_total",
			want: requestsHead +
				`vigil_requests_total{endpoint="/health",method="GET",class="2xx"} 1
vigil_requests_total{endpoint="/users/{id}",method="GET",class="2xx"} 2
vigil_requests_total{endpoint="/users/{id}",method="GET",class="4xx"} 1
vigil_requests_total{endpoint="/users/{id}",method="POST",class="5xx"} 1
`,
		},
		{
			name: "unknown methods and statuses",
			update: func(r *Registry) {
				r.ObserveRequest("/a", "get", 0, 0)        // methods are case-sensitive; no status
				r.ObserveRequest("/a", "PROPFIND", 700, 0) // status out of range
				r.ObserveRequest("/a", "", 101, 0)         // switching protocols
				r.ObserveRequest("/a", "PATCH", 599, 0)
			},
			family: "vigil_requests_total",
			want: requestsHead +
				`vigil_requests_total{endpoint="/a",method="PATCH",class="5xx"} 1
vigil_requests_total{endpoint="/a",method="OTHER",class="1xx"} 1
vigil_requests_total{endpoint="/a",method="OTHER",class="none"} 2
`,
		},
		{
			name: "label values escaped",
			update: func(r *Registry) {
				r.ObserveRequest("/q\"uote/back\\slash/new\nline", "GET", 200, 0)
				r.ObserveRequest("/bad\xffutf8", "GET", 200, 0)
				r.ObserveRequest("/bad\xfeutf8", "GET", 200, 0) // the same label value: one series
			},
			family: "vigil_requests_total",
			want: requestsHead +
				`vigil_requests_total{endpoint="/bad` + "\uFFFD" + `utf8",method="GET",class="2xx"} 2
vigil_requests_total{endpoint="/q\"uote/back\\slash/new\nline",method="GET",class="2xx"} 1
`,
		},
		{
			name: "histogram",
			update: func(r *Registry) {
				r.ObserveRequest("/a", "GET", 200, 150*time.Millisecond)
				r.ObserveRequest("/a", "GET", 500, time.Millisecond) // on the bound: le is inclusive
				r.ObserveRequest("/a", "GET", 200, time.Minute)      // beyond the last bound
			},
			family: "vigil_request_duration_seconds",
			want: durationHead +
				`vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.001"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.0025"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.005"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.01"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.025"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.05"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.1"} 1
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.25"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="0.5"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="1"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="2.5"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="5"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="10"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="30"} 2
vigil_request_duration_seconds_bucket{endpoint="/a",method="GET",le="+Inf"} 3
vigil_request_duration_seconds_sum{endpoint="/a",method="GET"} 60.151
vigil_request_duration_seconds_count{endpoint="/a",method="GET"} 3
`,
		},
		{
			name: "endpoint cap folds into other",
			opts: Options{MaxEndpoints: 2},
			update: func(r *Registry) {
				r.ObserveRequest("/a", "GET", 200, 0)
				r.ObserveRequest("/b", "GET", 200, 0)
				r.ObserveRequest("/c", "GET", 200, 0)
				r.ObserveRequest("/d", "GET", 200, 0)
				r.ObserveRequest("/a", "GET", 200, 0) // still kept
				r.ObserveRequest(Other, "GET", 200, 0)
			},
			family: "vigil_requests_total",
			want: requestsHead +
				`vigil_requests_total{endpoint="/a",method="GET",class="2xx"} 2
vigil_requests_total{endpoint="/b",method="GET",class="2xx"} 1
vigil_requests_total{endpoint="other",method="GET",class="2xx"} 3
`,
		},
		{
			name: "endpoint folds are counted",
			opts: Options{MaxEndpoints: 1},
			update: func(r *Registry) {
				r.ObserveRequest("/a", "GET", 200, 0)
				r.ObserveRequest("/b", "GET", 200, 0)
				r.ObserveRequest("/c", "POST", 200, 0)
				r.ObserveRequest(Other, "GET", 200, 0) // not a fold
				r.Blocked("asn")
			},
			family: "vigil_metrics_label_overflow_total",
			want: overflowHead +
				`vigil_metrics_label_overflow_total{family="vigil_requests_total"} 2
vigil_metrics_label_overflow_total{family="vigil_rate_limited_total"} 0
vigil_metrics_label_overflow_total{family="vigil_blocked_total"} 1
vigil_metrics_label_overflow_total{family="vigil_quota_exceeded_total"} 0
vigil_metrics_label_overflow_total{family="vigil_alerts_firing"} 0
vigil_metrics_label_overflow_total{family="vigil_notifications_total"} 0
`,
		},
		{
			name: "rate limits by policy, capped",
			opts: Options{MaxLabelValues: 2},
			update: func(r *Registry) {
				r.RateLimited("per-user")
				r.RateLimited("per-user")
				r.RateLimited("burst")
				r.RateLimited("third")
			},
			family: "vigil_rate_limited_total",
			want: rateHead +
				`vigil_rate_limited_total{policy="burst"} 1
vigil_rate_limited_total{policy="per-user"} 2
vigil_rate_limited_total{policy="other"} 1
`,
		},
		{
			name:   "quotas by policy",
			update: func(r *Registry) { r.QuotaExceeded("monthly") },
			family: "vigil_quota_exceeded_total",
			want:   quotaHead + "vigil_quota_exceeded_total{policy=\"monthly\"} 1\n",
		},
		{
			name: "blocked by kind",
			update: func(r *Registry) {
				r.Blocked("ip")
				r.Blocked("ip")
				r.Blocked("cidr")
				r.Blocked("IP")
			},
			family: "vigil_blocked_total",
			want: blockedHead +
				`vigil_blocked_total{kind="user"} 0
vigil_blocked_total{kind="company"} 0
vigil_blocked_total{kind="key"} 0
vigil_blocked_total{kind="ip"} 2
vigil_blocked_total{kind="cidr"} 1
vigil_blocked_total{kind="other"} 1
`,
		},
		{
			name: "alerts firing: the last report wins, a rule left out disappears",
			update: func(r *Registry) {
				r.SetAlertsFiring(map[string]int{"gone": 1, "errors": 0})
				r.SetAlertsFiring(map[string]int{"latency": 2, "errors": 0})
			},
			family: "vigil_alerts_firing",
			want: firingHead +
				`vigil_alerts_firing{rule="errors"} 0
vigil_alerts_firing{rule="latency"} 2
`,
		},
		{
			name: "alerts firing: capped in name order",
			opts: Options{MaxLabelValues: 1},
			update: func(r *Registry) {
				r.SetAlertsFiring(map[string]int{"c": 1, "a": 0, "b": 2, Other: 4})
			},
			family: "vigil_alerts_firing",
			want: firingHead +
				`vigil_alerts_firing{rule="a"} 0
vigil_alerts_firing{rule="other"} 7
`,
		},
		{
			name: "notifications: totals that go down mean a new channel, counters go on",
			update: func(r *Registry) {
				r.SetNotificationStats([]ChannelStats{
					{Channel: "slack", Delivered: 5, Failed: 1, Dropped: 0, Retried: 2},
					{Channel: "pager", Delivered: 1},
				})
				// slack created anew by a reload: its totals start again.
				r.SetNotificationStats([]ChannelStats{{Channel: "slack", Delivered: 1, Failed: 1, Retried: 2}})
			},
			family: "vigil_notifications_total",
			want: notifHead +
				`vigil_notifications_total{channel="pager",outcome="delivered"} 1
vigil_notifications_total{channel="pager",outcome="failed"} 0
vigil_notifications_total{channel="pager",outcome="dropped"} 0
vigil_notifications_total{channel="pager",outcome="retried"} 0
vigil_notifications_total{channel="slack",outcome="delivered"} 6
vigil_notifications_total{channel="slack",outcome="failed"} 1
vigil_notifications_total{channel="slack",outcome="dropped"} 0
vigil_notifications_total{channel="slack",outcome="retried"} 2
`,
		},
		{
			name: "notification queues: only the channels of the last report",
			opts: Options{MaxLabelValues: 1},
			update: func(r *Registry) {
				r.SetNotificationStats([]ChannelStats{{Channel: "slack", QueueLength: 3}})
				r.SetNotificationStats([]ChannelStats{
					{Channel: "webhook", QueueLength: 4},
					{Channel: "email", QueueLength: 1},
				})
			},
			family: "vigil_notification_queue_length",
			want: queueHead + `vigil_notification_queue_length{channel="other"} 5
`,
		},
		{
			name:   "store: nothing before the first report",
			family: "vigil_tracked_callers",
			want:   callersHead,
		},
		{
			name: "store: tracked callers",
			update: func(r *Registry) {
				r.SetStoreStats(StoreStats{Series: 10, Users: 3, Companies: 2, Keys: 1, Overflow: 9})
			},
			family: "vigil_tracked_callers",
			want: callersHead + `vigil_tracked_callers{kind="user"} 3
vigil_tracked_callers{kind="company"} 2
vigil_tracked_callers{kind="key"} 1
`,
		},
		{
			name: "store: series",
			update: func(r *Registry) {
				r.SetStoreStats(StoreStats{Series: 10})
				r.SetStoreStats(StoreStats{Series: 7})
			},
			family: "vigil_tracked_series",
			want:   seriesHead + "vigil_tracked_series 7\n",
		},
		{
			name: "snapshots: writes by part and outcome",
			update: func(r *Registry) {
				r.SetSnapshotStats(SnapshotStats{Base: SnapshotPartStats{Writes: 1, Bytes: 900}, Delta: SnapshotPartStats{Writes: 60, Failures: 2, Bytes: 34}, Segment: SnapshotPartStats{Writes: 3}})
			},
			family: "vigil_snapshot_writes_total",
			want: "# HELP vigil_snapshot_writes_total Snapshot parts written to Caddy storage, by part (base: the settled history, daily; segment: the settled history since the last cut, every 10 minutes; delta: the rest, every snapshot interval) and outcome (ok or failed).\n# TYPE vigil_snapshot_writes_total counter\n" +
				`vigil_snapshot_writes_total{part="base",outcome="ok"} 1
vigil_snapshot_writes_total{part="base",outcome="failed"} 0
vigil_snapshot_writes_total{part="delta",outcome="ok"} 60
vigil_snapshot_writes_total{part="delta",outcome="failed"} 2
vigil_snapshot_writes_total{part="segment",outcome="ok"} 3
vigil_snapshot_writes_total{part="segment",outcome="failed"} 0
`,
		},
		{
			name: "snapshots: last success, once there is one",
			update: func(r *Registry) {
				r.SetSnapshotStats(SnapshotStats{Delta: SnapshotPartStats{Failures: 1}})
				r.SetSnapshotStats(SnapshotStats{Delta: SnapshotPartStats{Writes: 1}, LastSuccess: time.Unix(1795536000, 500000000)})
			},
			family: "vigil_snapshot_last_success_timestamp_seconds",
			want: "# HELP vigil_snapshot_last_success_timestamp_seconds When the last snapshot was completed (its delta written), in Unix seconds: what a restart would get back.\n# TYPE vigil_snapshot_last_success_timestamp_seconds gauge\n" +
				"vigil_snapshot_last_success_timestamp_seconds 1.7955360005e+09\n",
		},
		{
			name: "store: overflow never goes down",
			update: func(r *Registry) {
				r.SetStoreStats(StoreStats{Overflow: 9})
				r.SetStoreStats(StoreStats{Overflow: 2}) // a new store
				r.SetStoreStats(StoreStats{Overflow: 3})
			},
			family: "vigil_store_overflow_total",
			want:   storeOvHead + "vigil_store_overflow_total 12\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New(tt.opts)
			if tt.update != nil {
				tt.update(r)
			}
			if got := family(t, scrape(t, r), tt.family); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestScrapeHook checks that the hook reports before writing and that setting it again,
// as every config reload does, replaces it instead of adding a second one.
func TestScrapeHook(t *testing.T) {
	r := New(Options{})
	calls := 0
	for range 3 { // three reloads
		r.SetScrapeHook(func(r *Registry) {
			calls++
			r.SetStoreStats(StoreStats{Series: int64(calls)})
		})
	}
	out := scrape(t, r)
	if calls != 1 {
		t.Errorf("the hook ran %d times in one scrape, want 1", calls)
	}
	if got, want := family(t, out, "vigil_tracked_series"), "vigil_tracked_series 1\n"; !strings.HasSuffix(got, want) {
		t.Errorf("got:\n%s\nwant it to end with %q", got, want)
	}
	r.SetScrapeHook(nil)
	scrape(t, r)
	if calls != 1 {
		t.Errorf("the removed hook ran")
	}
}

func TestOptionsBounds(t *testing.T) {
	tests := []struct {
		opts           Options
		endpoints, lab int
	}{
		{Options{}, DefaultMaxEndpoints, DefaultMaxLabelValues},
		{Options{MaxEndpoints: -1, MaxLabelValues: -5}, DefaultMaxEndpoints, DefaultMaxLabelValues},
		{Options{MaxEndpoints: 7, MaxLabelValues: 3}, 7, 3},
		{Options{MaxEndpoints: 1e6, MaxLabelValues: 1e6}, maxCap, maxCap},
	}
	for _, tt := range tests {
		r := New(tt.opts)
		if r.endpoints.max != tt.endpoints || r.maxLabels != tt.lab || r.rateLimited.max != tt.lab {
			t.Errorf("%+v: caps %d and %d, want %d and %d", tt.opts, r.endpoints.max, r.maxLabels, tt.endpoints, tt.lab)
		}
	}
}
