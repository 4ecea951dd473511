package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// postedAlerts decodes the body of a POST /api/v2/alerts against Alertmanager's schema
// (postableAlert: labels required, the rest optional, no other field).
func postedAlerts(t *testing.T, body []byte) []amAlert {
	t.Helper()
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("body is not a JSON array: %v", err)
	}
	for i, a := range raw {
		if _, ok := a["labels"]; !ok {
			t.Errorf("alert %d: no labels", i)
		}
		for k := range a {
			switch k {
			case "labels", "annotations", "startsAt", "endsAt", "generatorURL":
			default:
				t.Errorf("alert %d: field %q is not in Alertmanager's postableAlert", i, k)
			}
		}
	}
	var alerts []amAlert
	if err := json.Unmarshal(body, &alerts); err != nil {
		t.Fatal(err)
	}
	return alerts
}

func TestAlertmanagerPosts(t *testing.T) {
	now := t0.Add(time.Hour)
	grouped := firingEvent("ev_g")
	grouped.Group = map[string]string{"user": "u-42", "endpoint": "GET /users/{id}/orders", "alertname": "clash", "9bad-name": "x"}
	tests := []struct {
		name       string
		batch      alert.Batch
		wantLabels []map[string]string
		wantEnds   []time.Time
	}{
		{name: "firing ends a few keep-alives ahead", batch: batchOf("am", firingEvent("ev_1")),
			wantLabels: []map[string]string{{"alertname": "401 storm", "rule_id": "401-storm", "vigil_type": "alert", "severity": "error", "user": "u-42"}},
			wantEnds:   []time.Time{now.Add(4 * time.Minute)}},
		{name: "resolved ends when resolved", batch: batchOf("am", resolvedEvent("ev_1")),
			wantLabels: []map[string]string{{"alertname": "401 storm", "rule_id": "401-storm", "vigil_type": "alert", "severity": "error", "user": "u-42"}},
			wantEnds:   []time.Time{t0.Add(10 * time.Minute)}},
		{name: "group dimensions become valid labels", batch: batchOf("am", grouped),
			wantLabels: []map[string]string{{"alertname": "401 storm", "rule_id": "401-storm", "vigil_type": "alert", "severity": "error",
				"user": "u-42", "endpoint": "GET /users/{id}/orders", "group_alertname": "clash", "_9bad_name": "x"}},
			wantEnds: []time.Time{now.Add(4 * time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := newReceiver(t)
			req := sendThrough(t, rc, Config{Name: "am", Type: TypeAlertmanager, URL: rc.URL + "/"},
				Options{Now: func() time.Time { return now }, ExternalURL: "http://gw:2019/vigil"}, tt.batch, 1)[0]
			if req.Path != "/api/v2/alerts" || req.Header.Get("Content-Type") != "application/json" {
				t.Errorf("request: %s %s", req.Path, req.Header.Get("Content-Type"))
			}
			alerts := postedAlerts(t, req.Body)
			if len(alerts) != len(tt.wantLabels) {
				t.Fatalf("alerts: %d, want %d", len(alerts), len(tt.wantLabels))
			}
			for i, a := range alerts {
				if fmt.Sprint(a.Labels) != fmt.Sprint(tt.wantLabels[i]) {
					t.Errorf("alert %d: labels %v, want %v", i, a.Labels, tt.wantLabels[i])
				}
				if !a.StartsAt.Equal(t0) || !a.EndsAt.Equal(tt.wantEnds[i]) {
					t.Errorf("alert %d: startsAt %s endsAt %s, want %s and %s", i, a.StartsAt, a.EndsAt, t0, tt.wantEnds[i])
				}
				for _, k := range []string{"summary", "description", "runbook_url", "value", "expected"} {
					if a.Annotations[k] == "" {
						t.Errorf("alert %d: no annotation %q", i, k)
					}
				}
				if !strings.Contains(a.Annotations["description"], "GET /users/42/orders") && tt.batch.Events[i].State == alert.Firing {
					t.Errorf("alert %d: description lacks the samples: %q", i, a.Annotations["description"])
				}
				if !strings.HasPrefix(a.GeneratorURL, "http://gw:2019/vigil/events?rule=") {
					t.Errorf("alert %d: generatorURL %q", i, a.GeneratorURL)
				}
			}
		})
	}
}

// postsWith counts the requests whose alerts include one with the given user label.
func postsWith(t *testing.T, rc *receiver, user string) int {
	n := 0
	for _, req := range rc.got() {
		for _, a := range postedAlerts(t, req.Body) {
			if a.Labels["user"] == user {
				n++
				break
			}
		}
	}
	return n
}

// waitUntil polls cond every few milliseconds until it holds or within passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAlertmanagerKeepAlive(t *testing.T) {
	rc := newReceiver(t)
	cfg := Config{Name: "am", Type: TypeAlertmanager, URL: rc.URL, KeepAlive: Duration(20 * time.Millisecond)}
	ch := newTestChannel(t, cfg, Options{})
	rec := newRecorder()
	q := startQueue(t, QueueOptions{Defaults: fastQueue(), Recorder: rec}, ch)

	q.Notify(batchOf("am", firingEvent("ev_1")))
	q.Notify(TestBatch("am", time.Now()))
	rec.waitFinal(t, "ev_1", 5*time.Second)
	waitUntil(t, 5*time.Second, "three keep-alives of the firing alert", func() bool { return postsWith(t, rc, "u-42") >= 4 })
	for _, req := range rc.got()[2:] {
		for _, a := range postedAlerts(t, req.Body) {
			if a.Labels["rule_id"] == TestRuleID {
				t.Fatal("the test notification was kept alive")
			}
			if !a.EndsAt.After(time.Now().Add(-time.Second)) {
				t.Errorf("keep-alive endsAt %s is not ahead", a.EndsAt)
			}
		}
	}

	// A reload keeps the alert alive through the new channel.
	ch2 := newTestChannel(t, cfg, Options{})
	if err := q.Update([]Channel{ch2}); err != nil {
		t.Fatal(err)
	}
	if got := ch2.(*Alertmanager).Firing(); got != 1 {
		t.Fatalf("after Update the new channel keeps %d alerts alive, want 1", got)
	}

	q.Notify(batchOf("am", resolvedEvent("ev_2")))
	rec.waitFinal(t, "ev_2", 5*time.Second)
	if got := ch2.(*Alertmanager).Firing(); got != 0 {
		t.Fatalf("after the resolve %d alerts are kept alive, want 0", got)
	}
	before := len(rc.got())
	time.Sleep(100 * time.Millisecond)
	if after := len(rc.got()); after != before {
		t.Errorf("%d posts after the resolve, want none", after-before)
	}
}

// alertmanagerBinary is where Debian's prometheus-alertmanager package puts it.
const alertmanagerBinary = "/usr/bin/prometheus-alertmanager"

// startAlertmanager runs a real Alertmanager on a free loopback port until the test ends,
// and returns its base URL. Without the binary the test is skipped, except in CI.
func startAlertmanager(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(alertmanagerBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing in CI: apt-get install prometheus-alertmanager", alertmanagerBinary)
		}
		t.Skipf("%s is not installed (apt-get install prometheus-alertmanager); CI runs this test", alertmanagerBinary)
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(config, []byte("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, alertmanagerBinary,
		"--config.file="+config,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--cluster.listen-address=",
		"--log.level=warn",
	)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting Alertmanager: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // ends when the process does; cleanup kills it
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("Alertmanager exited: %v\n%s", err, logs.String())
		default:
		}
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Alertmanager not ready within 20s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gettableAlert is the part of Alertmanager's GET /api/v2/alerts answer the test reads.
type gettableAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Fingerprint string            `json:"fingerprint"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func listAlerts(t *testing.T, base string) []gettableAlert {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []gettableAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("GET /api/v2/alerts: %v", err)
	}
	return out
}

func TestAlertmanagerReal(t *testing.T) {
	base := startAlertmanager(t)
	ch := newTestChannel(t, Config{Name: "am", Type: TypeAlertmanager, URL: base}, Options{})
	now := time.Now().UTC().Truncate(time.Second)
	firing := firingEvent("ev_real")
	firing.StartedAt, firing.Time = now.Add(-5*time.Minute), now.Add(-time.Minute)
	if err := ch.Send(sendCtx(t), batchOf("am", firing)); err != nil {
		t.Fatalf("posting the firing alert: %v", err)
	}
	var found gettableAlert
	waitUntil(t, 10*time.Second, "the alert is active in Alertmanager", func() bool {
		for _, a := range listAlerts(t, base) {
			if a.Labels["rule_id"] == "401-storm" && a.Status.State == "active" {
				found = a
				return true
			}
		}
		return false
	})
	want := map[string]string{"alertname": "401 storm", "rule_id": "401-storm", "vigil_type": "alert", "severity": "error", "user": "u-42"}
	if fmt.Sprint(found.Labels) != fmt.Sprint(want) {
		t.Errorf("labels %v, want %v", found.Labels, want)
	}
	if found.Fingerprint != fingerprint(want) {
		t.Errorf("fingerprint %s, ours %s", found.Fingerprint, fingerprint(want))
	}
	if found.Annotations["runbook_url"] != firing.Playbook || found.Annotations["summary"] != firing.Summary {
		t.Errorf("annotations %v", found.Annotations)
	}

	resolved := firing
	resolved.State = alert.Resolved
	at := time.Now().UTC()
	resolved.Time, resolved.ResolvedAt = at, &at
	if err := ch.Send(sendCtx(t), batchOf("am", resolved)); err != nil {
		t.Fatalf("posting the resolve: %v", err)
	}
	waitUntil(t, 10*time.Second, "the alert is no longer active", func() bool {
		for _, a := range listAlerts(t, base) {
			if a.Labels["rule_id"] == "401-storm" && a.EndsAt.After(time.Now()) {
				return false
			}
		}
		return true
	})
	if n := ch.(*Alertmanager).Firing(); n != 0 {
		t.Errorf("%d alerts still kept alive after the resolve", n)
	}
}
