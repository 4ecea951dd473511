package notifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/vigilgw/vigil/detector/alert"
)

// capturedRequest is one request a test receiver got.
type capturedRequest struct {
	Method, Path string
	Header       http.Header
	Body         []byte
	At           time.Time
}

// receiver is an httptest server that records requests and answers with the statuses
// given (the last one repeats).
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	requests []capturedRequest
	answers  []func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newReceiver(t *testing.T, answers ...func(w http.ResponseWriter, r *http.Request, body []byte)) *receiver {
	t.Helper()
	rc := &receiver{answers: answers}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		n := len(rc.requests)
		rc.requests = append(rc.requests, capturedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body, At: time.Now()})
		var answer func(http.ResponseWriter, *http.Request, []byte)
		if len(rc.answers) > 0 {
			answer = rc.answers[min(n, len(rc.answers)-1)]
		}
		rc.mu.Unlock()
		if answer == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		answer(w, r, body)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// status answers with a status code and a body.
func status(code int, body string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func (rc *receiver) got() []capturedRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]capturedRequest(nil), rc.requests...)
}

// verifyStandardWebhook checks a request the way the Standard Webhooks specification asks a
// receiver to, written from the specification and independent of the sender's code:
// the secret's key (base64 after "whsec_"), HMAC-SHA256 over "id.timestamp.body", any of the
// space-separated "v1,<base64>" signatures matching in constant time, and the timestamp
// within tolerance of now.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key := []byte(secret)
	if rest, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error
		if key, err = base64.StdEncoding.DecodeString(rest); err != nil {
			return fmt.Errorf("bad secret: %v", err)
		}
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	if strings.Contains(id, ".") || strings.Contains(ts, ".") {
		return errors.New("id or timestamp holds a full stop")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("timestamp %s is %s away from now: outside the tolerance", ts, d)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

func TestWebhookStandardSignature(t *testing.T) {
	const raw = "a raw secret of some length"
	whsec := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	now := time.Now()
	tests := []struct {
		name       string
		secret     string // the channel's
		verifyWith string // the receiver's
		sentAt     time.Time
		wantErr    string
	}{
		{name: "raw secret", secret: raw, verifyWith: raw, sentAt: now},
		{name: "whsec secret", secret: whsec, verifyWith: whsec, sentAt: now},
		{name: "wrong secret rejected", secret: whsec, verifyWith: "whsec_" + base64.StdEncoding.EncodeToString([]byte("another key of 32 bytes, exactly")), sentAt: now, wantErr: "no signature matches"},
		{name: "whsec used raw rejected", secret: whsec, verifyWith: strings.TrimPrefix(whsec, "whsec_"), sentAt: now, wantErr: "no signature matches"},
		{name: "stale timestamp rejected", secret: raw, verifyWith: raw, sentAt: now.Add(-6 * time.Minute), wantErr: "outside the tolerance"},
		{name: "future timestamp rejected", secret: raw, verifyWith: raw, sentAt: now.Add(6 * time.Minute), wantErr: "outside the tolerance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			ch := newTestChannel(t, Config{Name: "hook", Type: TypeWebhook, URL: rc.URL + "/vigil", Secret: tt.secret},
				Options{Now: func() time.Time { return tt.sentAt }})
			if err := ch.Send(sendCtx(t), batchOf("hook", firingEvent("ev_1"))); err != nil {
				t.Fatalf("Send: %v", err)
			}
			req := rc.got()[0]
			err := verifyStandardWebhook(tt.verifyWith, req.Header, req.Body, now, 5*time.Minute)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("verify: got %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
	t.Run("tampered body rejected", func(t *testing.T) {
		rc := newReceiver(t)
		ch := newTestChannel(t, Config{Name: "hook", Type: TypeWebhook, URL: rc.URL, Secret: raw}, Options{})
		if err := ch.Send(sendCtx(t), batchOf("hook", firingEvent("ev_1"))); err != nil {
			t.Fatal(err)
		}
		req := rc.got()[0]
		body := append([]byte(nil), req.Body...)
		body[len(body)-2] ^= 1
		if err := verifyStandardWebhook(raw, req.Header, body, time.Now(), 5*time.Minute); err == nil {
			t.Fatal("a tampered body verified")
		}
	})
}

func TestWebhookIDStableAcrossRetries(t *testing.T) {
	rc := newReceiver(t, status(503, "busy"), status(200, ""))
	clock := t0
	ch := newTestChannel(t, Config{Name: "hook", Type: TypeWebhook, URL: rc.URL, Secret: "s3cret-s3cret"},
		Options{Now: func() time.Time { clock = clock.Add(7 * time.Second); return clock }})
	b := batchOf("hook", firingEvent("ev_1"), firingEvent("ev_2"))
	if err := ch.Send(sendCtx(t), b); err == nil {
		t.Fatal("first attempt: want the 503 as an error")
	}
	if err := ch.Send(sendCtx(t), b); err != nil {
		t.Fatal(err)
	}
	other := batchOf("hook", firingEvent("ev_3"))
	if err := ch.Send(sendCtx(t), other); err != nil {
		t.Fatal(err)
	}
	got := rc.got()
	if a, b := got[0].Header.Get("webhook-id"), got[1].Header.Get("webhook-id"); a != b || a == "" {
		t.Errorf("webhook-id across retries: %q then %q, want the same", a, b)
	}
	if a, b := got[0].Header.Get("webhook-timestamp"), got[1].Header.Get("webhook-timestamp"); a == b {
		t.Errorf("webhook-timestamp across retries: %q both times, want one per attempt", a)
	}
	if a, c := got[0].Header.Get("webhook-id"), got[2].Header.Get("webhook-id"); a == c {
		t.Errorf("two batches share the webhook-id %q", a)
	}
	if s0, s1 := got[0].Header.Get("webhook-signature"), got[1].Header.Get("webhook-signature"); s0 == s1 {
		t.Error("the signature was not recomputed for the new timestamp")
	}
}

func TestWebhookPayload(t *testing.T) {
	incident := batchOf("hook", firingEvent("ev_1"), firingEvent("ev_2"))
	incident.Incident = "inc-7"
	tests := []struct {
		name         string
		batch        alert.Batch
		wantType     string
		wantIncident string
	}{
		{name: "one firing", batch: batchOf("hook", firingEvent("ev_1")), wantType: "alert.firing"},
		{name: "one resolved", batch: batchOf("hook", resolvedEvent("ev_1")), wantType: "alert.resolved"},
		{name: "mixed", batch: batchOf("hook", firingEvent("ev_1"), resolvedEvent("ev_2")), wantType: "alert.mixed"},
		{name: "test notification", batch: TestBatch("hook", t0), wantType: "alert.test"},
		{name: "incident", batch: incident, wantType: "alert.firing", wantIncident: "inc-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			req := sendThrough(t, rc, Config{Name: "hook", Type: TypeWebhook, URL: rc.URL + "/in"}, Options{}, tt.batch, 1)[0]
			if req.Method != http.MethodPost || req.Path != "/in" || req.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request: %s %s %s, want POST /in application/json", req.Method, req.Path, req.Header.Get("Content-Type"))
			}
			if req.Header.Get("webhook-signature") != "" {
				t.Error("signed without a secret")
			}
			var p map[string]any
			if err := json.Unmarshal(req.Body, &p); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if p["type"] != tt.wantType {
				t.Errorf("type = %v, want %s", p["type"], tt.wantType)
			}
			if ts, ok := p["timestamp"].(string); !ok {
				t.Errorf("timestamp = %v, want an RFC 3339 string", p["timestamp"])
			} else if _, err := time.Parse(time.RFC3339, ts); err != nil {
				t.Errorf("timestamp %q: %v", ts, err)
			}
			if p["count"] != float64(len(tt.batch.Events)) {
				t.Errorf("count = %v, want %d", p["count"], len(tt.batch.Events))
			}
			if got, _ := p["incident"].(string); got != tt.wantIncident {
				t.Errorf("incident = %q, want %q", got, tt.wantIncident)
			}
			events, _ := p["events"].([]any)
			if len(events) != len(tt.batch.Events) {
				t.Fatalf("events: %d, want %d", len(events), len(tt.batch.Events))
			}
			for i, e := range events {
				checkEventShape(t, e, tt.batch.Events[i])
			}
		})
	}
}

// checkEventShape checks one event of a webhook body against SPEC section 6.
func checkEventShape(t *testing.T, got any, want alert.Event) {
	t.Helper()
	ev, ok := got.(map[string]any)
	if !ok {
		t.Fatalf("event is %T, want an object", got)
	}
	for _, key := range []string{"id", "rule_id", "rule_name", "type", "state", "threshold", "group", "value", "expected", "time", "started_at", "resolved_at", "notifications", "samples"} {
		if _, ok := ev[key]; !ok {
			t.Errorf("event %s: no %q", want.ID, key)
		}
	}
	for key, w := range map[string]string{"id": want.ID, "rule_id": want.RuleID, "rule_name": want.RuleName, "type": want.Type, "state": string(want.State)} {
		if ev[key] != w {
			t.Errorf("event %s: %s = %v, want %q", want.ID, key, ev[key], w)
		}
	}
	if ev["value"] != want.Value {
		t.Errorf("event %s: value = %v, want %v", want.ID, ev["value"], want.Value)
	}
	if want.State == alert.Resolved && ev["resolved_at"] == nil {
		t.Errorf("event %s: resolved without resolved_at", want.ID)
	}
}

func TestWebhookAlertmanagerFormat(t *testing.T) {
	tests := []struct {
		name         string
		batch        alert.Batch
		wantStatus   string
		wantGroupKey string
		wantStatuses []string
	}{
		{name: "firing", batch: batchOf("am-hook", firingEvent("ev_1")), wantStatus: "firing",
			wantGroupKey: `{}:{rule_id="401-storm"}`, wantStatuses: []string{"firing"}},
		{name: "resolved", batch: batchOf("am-hook", resolvedEvent("ev_1")), wantStatus: "resolved",
			wantGroupKey: `{}:{rule_id="401-storm"}`, wantStatuses: []string{"resolved"}},
		{name: "mixed rules", batch: batchOf("am-hook", firingEvent("ev_1"), func() alert.Event {
			ev := resolvedEvent("ev_2")
			ev.RuleID, ev.RuleName = "5xx", "5xx anomaly"
			return ev
		}()), wantStatus: "firing", wantGroupKey: `{}:{}`, wantStatuses: []string{"firing", "resolved"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			req := sendThrough(t, rc, Config{Name: "am-hook", Type: TypeWebhook, URL: rc.URL, Format: FormatAlertmanager},
				Options{ExternalURL: "http://localhost:2019/vigil"}, tt.batch, 1)[0]
			var m AlertmanagerMessage
			dec := json.NewDecoder(strings.NewReader(string(req.Body)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("payload: %v", err)
			}
			if m.Version != "4" || m.Status != tt.wantStatus || m.Receiver != "am-hook" || m.GroupKey != tt.wantGroupKey {
				t.Errorf("got version %q status %q receiver %q groupKey %q, want 4 %s am-hook %s",
					m.Version, m.Status, m.Receiver, m.GroupKey, tt.wantStatus, tt.wantGroupKey)
			}
			if m.ExternalURL != "http://localhost:2019/vigil" {
				t.Errorf("externalURL = %q", m.ExternalURL)
			}
			if m.GroupLabels == nil || m.CommonLabels == nil || m.CommonAnnotations == nil {
				t.Error("groupLabels, commonLabels and commonAnnotations must be objects, not null")
			}
			if len(m.Alerts) != len(tt.wantStatuses) {
				t.Fatalf("alerts: %d, want %d", len(m.Alerts), len(tt.wantStatuses))
			}
			for i, a := range m.Alerts {
				ev := tt.batch.Events[i]
				if a.Status != tt.wantStatuses[i] {
					t.Errorf("alert %d: status %q, want %q", i, a.Status, tt.wantStatuses[i])
				}
				if a.Labels["alertname"] != ev.RuleName || a.Labels["rule_id"] != ev.RuleID || a.Labels["user"] != "u-42" ||
					a.Labels["severity"] != "error" || a.Labels["vigil_type"] != "alert" {
					t.Errorf("alert %d: labels %v", i, a.Labels)
				}
				if want := model.LabelSet(toLabelSet(a.Labels)).Fingerprint().String(); a.Fingerprint != want {
					t.Errorf("alert %d: fingerprint %s, Alertmanager's is %s", i, a.Fingerprint, want)
				}
				if !a.StartsAt.Equal(t0) {
					t.Errorf("alert %d: startsAt %s, want %s", i, a.StartsAt, t0)
				}
				wantEnd := time.Time{}
				if ev.State == alert.Resolved {
					wantEnd = *ev.ResolvedAt
				}
				if !a.EndsAt.Equal(wantEnd) {
					t.Errorf("alert %d: endsAt %s, want %s", i, a.EndsAt, wantEnd)
				}
				if a.Annotations["runbook_url"] != ev.Playbook || a.Annotations["summary"] != ev.Summary || a.Annotations["value"] != "31" {
					t.Errorf("alert %d: annotations %v", i, a.Annotations)
				}
				if !strings.HasPrefix(a.GeneratorURL, "http://localhost:2019/vigil/events?rule=") {
					t.Errorf("alert %d: generatorURL %q", i, a.GeneratorURL)
				}
			}
		})
	}
}

func toLabelSet(l map[string]string) model.LabelSet {
	s := model.LabelSet{}
	for k, v := range l {
		s[model.LabelName(k)] = model.LabelValue(v)
	}
	return s
}

func TestFingerprintMatchesAlertmanager(t *testing.T) {
	for _, l := range []map[string]string{
		{},
		{"alertname": "x"},
		{"alertname": "401 storm", "rule_id": "401-storm", "severity": "warning", "user": "u-42"},
		{"a": "", "b": "ünïcode", "c": "with\xffbyte"},
	} {
		if got, want := fingerprint(l), toLabelSet(l).Fingerprint().String(); got != want {
			t.Errorf("fingerprint(%v) = %s, Alertmanager's %s", l, got, want)
		}
	}
}
