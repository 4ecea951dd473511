package metrics

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fullRegistry returns a registry with every family populated: capped endpoints, label
// values to escape, every method and class, folds in every capped family.
func fullRegistry() *Registry {
	r := New(Options{MaxEndpoints: 4, MaxLabelValues: 2})
	endpoints := []string{"/users/{id}", "/orders", `/q"uote\back` + "\nslash", "/bad\xffutf8", "/e5", "/e6"}
	durations := []time.Duration{0, 800 * time.Microsecond, 3 * time.Millisecond, 70 * time.Millisecond,
		time.Second, 4 * time.Second, 45 * time.Second}
	for i := range 200 {
		m := methods[i%len(methods)]
		if m == "OTHER" {
			m = "PROPFIND"
		}
		status := []int{0, 101, 200, 302, 404, 503}[i%6]
		r.ObserveRequest(endpoints[i%len(endpoints)], m, status, durations[i%len(durations)])
	}
	for _, p := range []string{"per-user", "burst", "third", `we"ird`} {
		r.RateLimited(p)
		r.QuotaExceeded(p)
	}
	for _, k := range append(blockKinds[:], "asn") {
		r.Blocked(k)
	}
	r.SetAlertsFiring(map[string]int{"errors": 1, "latency": 0, "rule\nwith\\newline": 3})
	r.SetNotificationStats([]ChannelStats{
		{Channel: "slack", QueueLength: 2, Delivered: 10, Failed: 1, Dropped: 2, Retried: 3},
		{Channel: "pager\"duty", Delivered: 1},
		{Channel: "email", QueueLength: 1, Failed: 4},
	})
	r.SetStoreStats(StoreStats{Series: 120, Users: 30, Companies: 4, Keys: 50, Overflow: 7})
	r.SetSnapshotStats(SnapshotStats{Base: SnapshotPartStats{Writes: 2, Bytes: 900 << 20}, Delta: SnapshotPartStats{Writes: 90, Failures: 1, Bytes: 34 << 20},
		LastSuccess: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)})
	return r
}

// TestPromtool runs `promtool check metrics` on a full registry's output: the format and
// the lint rules (HELP text, names and units, counter suffixes). Without promtool the test
// is skipped, except in CI.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is missing in CI: apt-get install prometheus")
		}
		t.Skip("promtool is not installed (apt-get install prometheus); CI runs this test")
	}
	out := scrape(t, fullRegistry())
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	if msg, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(msg)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\non:\n%s", err, msg, out)
	}
}

// parse reads out with the Prometheus text parser, which rejects malformed lines, a
// family that comes twice, and histogram samples that do not belong together.
func parse(t *testing.T, out string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, out)
	}
	return families
}

func TestParsedFamilies(t *testing.T) {
	families := parse(t, scrape(t, fullRegistry()))
	want := map[string]dto.MetricType{
		"vigil_requests_total":                          dto.MetricType_COUNTER,
		"vigil_request_duration_seconds":                dto.MetricType_HISTOGRAM,
		"vigil_rate_limited_total":                      dto.MetricType_COUNTER,
		"vigil_blocked_total":                           dto.MetricType_COUNTER,
		"vigil_quota_exceeded_total":                    dto.MetricType_COUNTER,
		"vigil_alerts_firing":                           dto.MetricType_GAUGE,
		"vigil_notifications_total":                     dto.MetricType_COUNTER,
		"vigil_notification_queue_length":               dto.MetricType_GAUGE,
		"vigil_tracked_series":                          dto.MetricType_GAUGE,
		"vigil_tracked_callers":                         dto.MetricType_GAUGE,
		"vigil_store_overflow_total":                    dto.MetricType_COUNTER,
		"vigil_snapshot_writes_total":                   dto.MetricType_COUNTER,
		"vigil_snapshot_bytes":                          dto.MetricType_GAUGE,
		"vigil_snapshot_last_success_timestamp_seconds": dto.MetricType_GAUGE,
		"vigil_metrics_label_overflow_total":            dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		f, ok := families[name]
		switch {
		case !ok:
			t.Errorf("no family %s", name)
		case f.GetType() != typ:
			t.Errorf("%s is a %v, want %v", name, f.GetType(), typ)
		case f.GetHelp() == "":
			t.Errorf("%s has no help text", name)
		}
	}
	if len(families) != len(want) {
		t.Errorf("%d families, want %d", len(families), len(want))
	}

	// Escaped label values come back as they went in.
	endpoints := map[string]bool{}
	for _, m := range families["vigil_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "endpoint" {
				endpoints[l.GetValue()] = true
			}
		}
	}
	for _, ep := range []string{"/users/{id}", "/orders", `/q"uote\back` + "\nslash", "/bad\uFFFDutf8", Other} {
		if !endpoints[ep] {
			t.Errorf("no endpoint %q in %v", ep, endpoints)
		}
	}
	if len(endpoints) != 5 {
		t.Errorf("endpoints %v, want 4 and other", endpoints)
	}
}

// TestHistogramBuckets checks every histogram of a full registry as histogram_quantile
// reads it: le bounds strictly increasing and ending in +Inf, cumulative counts that
// never decrease, the +Inf bucket equal to _count, and as many observations as requests.
func TestHistogramBuckets(t *testing.T) {
	families := parse(t, scrape(t, fullRegistry()))
	var observed uint64
	for _, m := range families["vigil_request_duration_seconds"].GetMetric() {
		h := m.GetHistogram()
		buckets := h.GetBucket()
		if len(buckets) != len(bucketBounds)+1 {
			t.Fatalf("%v: %d buckets, want %d", m.GetLabel(), len(buckets), len(bucketBounds)+1)
		}
		prevLE, prevCount := math.Inf(-1), uint64(0)
		for _, b := range buckets {
			if b.GetUpperBound() <= prevLE {
				t.Errorf("%v: le %g after %g", m.GetLabel(), b.GetUpperBound(), prevLE)
			}
			if b.GetCumulativeCount() < prevCount {
				t.Errorf("%v: bucket le=%g holds %d, less than the one before (%d)", m.GetLabel(), b.GetUpperBound(), b.GetCumulativeCount(), prevCount)
			}
			prevLE, prevCount = b.GetUpperBound(), b.GetCumulativeCount()
		}
		if !math.IsInf(prevLE, 1) {
			t.Errorf("%v: last bucket le=%g, want +Inf", m.GetLabel(), prevLE)
		}
		if prevCount != h.GetSampleCount() {
			t.Errorf("%v: +Inf bucket %d, _count %d", m.GetLabel(), prevCount, h.GetSampleCount())
		}
		if h.GetSampleSum() < 0 {
			t.Errorf("%v: negative sum %g", m.GetLabel(), h.GetSampleSum())
		}
		observed += h.GetSampleCount()
	}
	if observed != 200 {
		t.Errorf("histograms hold %d observations, want the 200 requests", observed)
	}
	var requests float64
	for _, m := range families["vigil_requests_total"].GetMetric() {
		requests += m.GetCounter().GetValue()
	}
	if requests != 200 {
		t.Errorf("vigil_requests_total sums to %g, want 200", requests)
	}
}
