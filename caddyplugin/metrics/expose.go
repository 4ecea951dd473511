package metrics

import (
	"cmp"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// WritePrometheus runs the scrape hook, if any, then writes every family in the text
// exposition format: "# HELP" and "# TYPE" lines, then its samples. Families come in a
// fixed order; samples are sorted by label value, except methods, classes, buckets and
// outcomes, which keep their own fixed order. It writes only Vigil's families (Caddy
// already exposes the Go runtime and process metrics), in one Write call.
func (r *Registry) WritePrometheus(w io.Writer) error {
	_, err := w.Write(r.render())
	return err
}

// render runs the hook and returns the exposition text. Scrapes take turns here, but
// not while writing to a slow client.
func (r *Registry) render() []byte {
	r.scrapeMu.Lock()
	defer r.scrapeMu.Unlock()
	if hook := r.hook.Load(); hook != nil {
		(*hook)(r)
	}
	// Sized after the last scrape: growing a buffer of hundreds of kilobytes by appends
	// would copy it several times over.
	e := encoder{buf: make([]byte, 0, r.lastScrapeSize+r.lastScrapeSize/8+4096)}
	r.writeRequests(&e)
	r.writeRefusals(&e)
	r.writeReported(&e)
	e.family("vigil_metrics_label_overflow_total", "counter",
		`Updates counted under the label value "other" because the label had reached its cap, by metric family. Any increase means a cap is too low.`)
	for i, family := range foldFamilies {
		e.series("vigil_metrics_label_overflow_total", "family", family)
		e.uint(r.folded[i].Load())
	}
	r.lastScrapeSize = len(e.buf)
	return e.buf
}

// writeRequests writes vigil_requests_total and vigil_request_duration_seconds.
func (r *Registry) writeRequests(e *encoder) {
	// Every endpoint and method with a series, in output order.
	type ref struct {
		endpoint, method string
		s                *methodSeries
	}
	var refs []ref
	for _, ep := range r.endpoints.all() {
		for m := range ep.methods {
			if s := ep.methods[m].Load(); s != nil {
				refs = append(refs, ref{ep.label, methods[m], s})
			}
		}
	}

	e.family("vigil_requests_total", "counter",
		"Requests handled, by endpoint template, method and status class (1xx to 5xx; none when no status was sent).")
	for _, ref := range refs {
		for c := range ref.s.requests {
			if n := ref.s.requests[c].Load(); n > 0 {
				e.series("vigil_requests_total", "endpoint", ref.endpoint, "method", ref.method, "class", classes[c])
				e.uint(n)
			}
		}
	}

	e.family("vigil_request_duration_seconds", "histogram",
		"Time from a request's arrival to the end of its response, by endpoint template and method.")
	for _, ref := range refs {
		h := ref.s.duration.snapshot()
		if h.count() == 0 {
			continue
		}
		for i, le := range bucketLabels {
			e.series("vigil_request_duration_seconds_bucket", "endpoint", ref.endpoint, "method", ref.method, "le", le)
			e.uint(h.cumulative[i])
		}
		e.series("vigil_request_duration_seconds_sum", "endpoint", ref.endpoint, "method", ref.method)
		e.float(h.sumSeconds)
		e.series("vigil_request_duration_seconds_count", "endpoint", ref.endpoint, "method", ref.method)
		e.uint(h.count())
	}
}

// writeRefusals writes the counters of refused requests.
func (r *Registry) writeRefusals(e *encoder) {
	writePolicies(e, r.rateLimited, "vigil_rate_limited_total", "Requests refused by a rate limit, by policy.")

	e.family("vigil_blocked_total", "counter",
		"Requests refused by the block list, by the kind of entry that matched: user, company, key, ip or cidr.")
	for i := range r.blocked {
		n := r.blocked[i].Load()
		kind := Other
		if i < len(blockKinds) {
			kind = blockKinds[i]
		} else if n == 0 {
			continue
		}
		e.series("vigil_blocked_total", "kind", kind)
		e.uint(n)
	}

	writePolicies(e, r.quotaExceeded, "vigil_quota_exceeded_total", "Requests refused because a quota was used up, by policy.")
}

func writePolicies(e *encoder, t *table[counterSeries], name, help string) {
	e.family(name, "counter", help)
	for _, s := range t.all() {
		if n := s.n.Load(); n > 0 || s != t.other {
			e.series(name, "policy", s.label)
			e.uint(n)
		}
	}
}

// writeReported writes the families that the engine reports.
func (r *Registry) writeReported(e *encoder) {
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	rep := &r.reported

	e.family("vigil_alerts_firing", "gauge", "Alert instances firing, by rule (0 for a rule with none).")
	for _, s := range rep.firing {
		e.series("vigil_alerts_firing", "rule", s.label)
		e.int(s.value)
	}

	chans := slices.SortedFunc(maps.Values(rep.channels),
		func(a, b *channelState) int { return cmp.Compare(a.label, b.label) })
	if rep.otherChannel.used {
		chans = append(chans, rep.otherChannel)
	}
	e.family("vigil_notifications_total", "counter",
		"Notifications by channel and outcome: delivered, failed (given up after retries), dropped (queue full) and retried (failed attempts tried again).")
	for _, c := range chans {
		for i, outcome := range outcomes {
			e.series("vigil_notifications_total", "channel", c.label, "outcome", outcome)
			e.uint(c.outcomes[i].value())
		}
	}
	e.family("vigil_notification_queue_length", "gauge",
		"Notifications waiting to be delivered, by channel, the one in flight included.")
	for _, c := range chans {
		if c.present {
			e.series("vigil_notification_queue_length", "channel", c.label)
			e.int(c.queue)
		}
	}

	e.family("vigil_tracked_series", "gauge", "Time series held by the detector store.")
	if rep.storeSet {
		e.series("vigil_tracked_series")
		e.int(rep.store.Series)
	}
	e.family("vigil_tracked_callers", "gauge", "Callers tracked by the detector store, by kind: user, company or key.")
	if rep.storeSet {
		for _, kc := range [...]struct {
			kind string
			n    int64
		}{{"user", rep.store.Users}, {"company", rep.store.Companies}, {"key", rep.store.Keys}} {
			e.series("vigil_tracked_callers", "kind", kc.kind)
			e.int(kc.n)
		}
	}
	e.family("vigil_store_overflow_total", "counter",
		`Calls the detector store counted under an "other" series because a view was full.`)
	if rep.storeSet {
		e.series("vigil_store_overflow_total")
		e.uint(rep.storeOverflow.value())
	}

	snap := &rep.snapshot
	e.family("vigil_snapshot_writes_total", "counter",
		"Snapshot parts written to Caddy storage, by part (base: the settled history, daily; segment: the settled history since the last cut, every 10 minutes; delta: the rest, every snapshot interval) and outcome (ok or failed).")
	if rep.snapshotSet {
		for _, p := range snap.parts() {
			e.series("vigil_snapshot_writes_total", "part", p.name, "outcome", "ok")
			e.uint(p.Writes)
			e.series("vigil_snapshot_writes_total", "part", p.name, "outcome", "failed")
			e.uint(p.Failures)
		}
	}
	e.family("vigil_snapshot_bytes", "gauge", "Size of the last snapshot part written, by part: base, delta or segment.")
	if rep.snapshotSet {
		for _, p := range snap.parts() {
			e.series("vigil_snapshot_bytes", "part", p.name)
			e.int(p.Bytes)
		}
	}
	e.family("vigil_snapshot_last_success_timestamp_seconds", "gauge",
		"When the last snapshot was completed (its delta written), in Unix seconds: what a restart would get back.")
	if rep.snapshotSet && !snap.LastSuccess.IsZero() {
		e.series("vigil_snapshot_last_success_timestamp_seconds")
		e.float(float64(snap.LastSuccess.UnixNano()) / 1e9)
	}
}

// encoder builds the exposition text.
type encoder struct{ buf []byte }

// family writes the HELP and TYPE lines of a family. help must not hold a backslash or a
// line break.
func (e *encoder) family(name, typ, help string) {
	e.buf = append(e.buf, "# HELP "...)
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ' ')
	e.buf = append(e.buf, help...)
	e.buf = append(e.buf, "\n# TYPE "...)
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, ' ')
	e.buf = append(e.buf, typ...)
	e.buf = append(e.buf, '\n')
}

// series writes the start of a sample line: the name and the labels, given as pairs of
// label name and escaped value. A value method ends the line.
func (e *encoder) series(name string, labels ...string) {
	e.buf = append(e.buf, name...)
	for i := 0; i < len(labels); i += 2 {
		if i == 0 {
			e.buf = append(e.buf, '{')
		} else {
			e.buf = append(e.buf, ',')
		}
		e.buf = append(e.buf, labels[i]...)
		e.buf = append(e.buf, `="`...)
		e.buf = append(e.buf, labels[i+1]...)
		e.buf = append(e.buf, '"')
	}
	if len(labels) > 0 {
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, ' ')
}

func (e *encoder) uint(v uint64) {
	e.buf = append(strconv.AppendUint(e.buf, v, 10), '\n')
}

func (e *encoder) int(v int64) {
	e.buf = append(strconv.AppendInt(e.buf, v, 10), '\n')
}

func (e *encoder) float(v float64) {
	e.buf = append(strconv.AppendFloat(e.buf, v, 'g', -1, 64), '\n')
}

// labelEscaper escapes a label value as the text format wants it.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labelValue returns v as a label value: bytes that are not UTF-8 become U+FFFD (the
// format is UTF-8), then backslash, double quote and line feed are escaped.
func labelValue(v string) string {
	return labelEscaper.Replace(strings.ToValidUTF8(v, "\uFFFD"))
}
