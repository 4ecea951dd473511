package notifier

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigilgw/vigil/detector/alert"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// t0 is the time of the test events.
var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// firingEvent returns a firing static-rule event with a sample and a playbook link.
func firingEvent(id string) alert.Event {
	expected := 20.0
	return alert.Event{
		ID: id, RuleID: "401-storm", RuleName: "401 storm", Type: alert.TypeAlert, State: alert.Firing,
		Threshold: "> 20", Metric: "count", Window: "15m", Severity: alert.SeverityError,
		Group: map[string]string{"user": "u-42"}, Value: 31, Expected: &expected,
		Time: t0, StartedAt: t0, Playbook: "https://wiki.example.com/401",
		Channels: []string{"test"}, Notifications: []alert.Delivery{},
		Samples: []alert.Sample{{Time: t0.Add(-2 * time.Second), Method: "GET", Path: "/users/42/orders",
			Status: 401, LatencyMS: 12, User: "u-42", RequestID: "req-1"}},
		Summary: "31 x 401 in 15m for user u-42 (> 20)",
	}
}

// resolvedEvent returns the resolve of firingEvent.
func resolvedEvent(id string) alert.Event {
	ev := firingEvent(id)
	ev.State = alert.Resolved
	r := t0.Add(10 * time.Minute)
	ev.Time, ev.ResolvedAt = r, &r
	ev.Samples = nil
	return ev
}

// batchOf makes a batch for channel.
func batchOf(channel string, events ...alert.Event) alert.Batch {
	return alert.Batch{Channel: channel, Events: events}
}

// recorder is a DeliveryRecorder that keeps everything.
type recorder struct {
	mu      sync.Mutex
	byEvent map[string][]alert.Delivery
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{byEvent: map[string][]alert.Delivery{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) RecordDelivery(eventID string, d alert.Delivery) {
	r.mu.Lock()
	r.byEvent[eventID] = append(r.byEvent[eventID], d)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// of returns the outcomes recorded for an event.
func (r *recorder) of(eventID string) []alert.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byEvent[eventID])
}

// statuses returns the statuses recorded for an event, in order.
func (r *recorder) statuses(eventID string) []string {
	var s []string
	for _, d := range r.of(eventID) {
		s = append(s, d.Status)
	}
	return s
}

// all returns every outcome as text, for searching.
func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.byEvent)
}

// waitFinal waits until the event's last outcome is final (delivered, failed, dropped) and
// returns it.
func (r *recorder) waitFinal(t *testing.T, eventID string, within time.Duration) alert.Delivery {
	t.Helper()
	deadline := time.After(within)
	for {
		if ds := r.of(eventID); len(ds) > 0 {
			switch last := ds[len(ds)-1]; last.Status {
			case alert.DeliveryDelivered, alert.DeliveryFailed, alert.DeliveryDropped:
				return last
			}
		}
		select {
		case <-r.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("event %s: no final outcome within %s; recorded %v", eventID, within, r.statuses(eventID))
		}
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a logger writing everything (debug included) into a buffer.
func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// fastQueue is a QueueConfig for tests: short timeout and backoff.
func fastQueue() QueueConfig {
	return QueueConfig{
		Size:        100,
		Timeout:     Duration(2 * time.Second),
		MaxAttempts: 3,
		MaxAge:      Duration(time.Minute),
		BackoffBase: Duration(time.Millisecond),
		BackoffMax:  Duration(5 * time.Millisecond),
	}
}

// funcChannel is a Channel whose Send is a function.
type funcChannel struct {
	name string
	send func(ctx context.Context, b alert.Batch) error
}

func (f *funcChannel) Name() string                                  { return f.name }
func (f *funcChannel) Type() string                                  { return "func" }
func (f *funcChannel) Send(ctx context.Context, b alert.Batch) error { return f.send(ctx, b) }

// blockingChannel blocks every Send until ctx ends or release is closed.
func blockingChannel(name string, release <-chan struct{}) *funcChannel {
	return &funcChannel{name: name, send: func(ctx context.Context, _ alert.Batch) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
}

// newTestChannel builds a channel from cfg and closes its idle connections at the end.
func newTestChannel(t *testing.T, cfg Config, opts Options) Channel {
	t.Helper()
	ch, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg, err)
	}
	t.Cleanup(func() { closeIdle(ch) })
	return ch
}

// sendThrough builds the channel cfg describes, sends b through it, and returns what the
// receiver got, checking that it got want requests.
func sendThrough(t *testing.T, rc *receiver, cfg Config, opts Options, b alert.Batch, want int) []capturedRequest {
	t.Helper()
	ch := newTestChannel(t, cfg, opts)
	if err := ch.Send(sendCtx(t), b); err != nil {
		t.Fatalf("Send: %v", err)
	}
	got := rc.got()
	if len(got) != want {
		t.Fatalf("requests: %d, want %d", len(got), want)
	}
	return got
}

// startQueue starts a Queue and closes it at the end of the test.
func startQueue(t *testing.T, opts QueueOptions, channels ...Channel) *Queue {
	t.Helper()
	q, err := NewQueue(opts, channels...)
	if err != nil {
		t.Fatalf("NewQueue: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = q.Close(ctx)
	})
	return q
}

// sendCtx is the context of direct Send calls in tests.
func sendCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}
