package notifier

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigilgw/vigil/detector/alert"
)

// blackHole accepts TCP connections and never answers. It returns its URL and a stop
// function (also run at the end of the test).
func blackHole(t *testing.T) (string, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() { // ends when stop closes the listener
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			l.Close()
			<-done
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + l.Addr().String(), stop
}

func TestQueueFaults(t *testing.T) {
	tests := []struct {
		name         string
		url          func(t *testing.T) (string, *receiver)
		set          func(*QueueConfig)
		wantStatus   string
		wantAttempts int
		wantInError  string
		check        func(t *testing.T, rc *receiver)
	}{
		{
			name: "never answers: timeout, retries, failed",
			url: func(t *testing.T) (string, *receiver) {
				u, _ := blackHole(t)
				return u, nil
			},
			set:        func(c *QueueConfig) { c.Timeout = Duration(100 * time.Millisecond) },
			wantStatus: alert.DeliveryFailed, wantAttempts: 3, wantInError: "no answer before the attempt timeout",
		},
		{
			name: "500 then 200: delivered at the second attempt",
			url: func(t *testing.T) (string, *receiver) {
				rc := newReceiver(t, status(500, "oops"), status(200, ""))
				return rc.URL, rc
			},
			wantStatus: alert.DeliveryDelivered, wantAttempts: 2,
		},
		{
			name: "429 with Retry-After: waits at least that",
			url: func(t *testing.T) (string, *receiver) {
				rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
				}, status(200, ""))
				return rc.URL, rc
			},
			set:        func(c *QueueConfig) { c.BackoffMax = Duration(3 * time.Second) },
			wantStatus: alert.DeliveryDelivered, wantAttempts: 2,
			check: func(t *testing.T, rc *receiver) {
				got := rc.got()
				if wait := got[1].At.Sub(got[0].At); wait < time.Second {
					t.Errorf("second attempt %s after the 429, want at least Retry-After (1s)", wait)
				}
			},
		},
		{
			name:       "unresolvable host: retries, failed",
			url:        func(t *testing.T) (string, *receiver) { return "http://vigil-nonexistent.invalid/hook", nil },
			set:        func(c *QueueConfig) { c.Timeout = Duration(2 * time.Second) },
			wantStatus: alert.DeliveryFailed, wantAttempts: 3, wantInError: "vigil-nonexistent.invalid",
		},
		{
			name: "400: no retry",
			url: func(t *testing.T) (string, *receiver) {
				rc := newReceiver(t, status(400, "bad event"))
				return rc.URL, rc
			},
			wantStatus: alert.DeliveryFailed, wantAttempts: 1, wantInError: "not retryable: POST http://127.0.0.1",
			check: func(t *testing.T, rc *receiver) {
				if n := len(rc.got()); n != 1 {
					t.Errorf("%d requests, want 1", n)
				}
			},
		},
		{
			name: "redirect: not followed, no retry",
			url: func(t *testing.T) (string, *receiver) {
				rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
					http.Redirect(w, r, "http://169.254.169.254/", http.StatusFound)
				})
				return rc.URL, rc
			},
			wantStatus: alert.DeliveryFailed, wantAttempts: 1, wantInError: "redirects are not followed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, rc := tt.url(t)
			set := fastQueue()
			if tt.set != nil {
				tt.set(&set)
			}
			rec := newRecorder()
			ch := newTestChannel(t, Config{Name: "hook", Type: TypeWebhook, URL: url}, Options{})
			q := startQueue(t, QueueOptions{Defaults: set, Recorder: rec}, ch)
			q.Notify(batchOf("hook", firingEvent("ev_1")))
			got := rec.waitFinal(t, "ev_1", 10*time.Second)
			if got.Status != tt.wantStatus || got.Attempts != tt.wantAttempts || !strings.Contains(got.Error, tt.wantInError) {
				t.Errorf("outcome %+v, want %s after %d attempts with %q", got, tt.wantStatus, tt.wantAttempts, tt.wantInError)
			}
			want := []string{alert.DeliveryQueued}
			for range tt.wantAttempts - 1 {
				want = append(want, alert.DeliveryRetrying)
			}
			want = append(want, tt.wantStatus)
			if s := rec.statuses("ev_1"); !slices.Equal(s, want) {
				t.Errorf("recorded %v, want %v", s, want)
			}
			for _, d := range rec.of("ev_1") {
				if d.Channel != "hook" || d.Time.IsZero() {
					t.Errorf("record %+v: want channel hook and a time", d)
				}
				if d.Status == alert.DeliveryRetrying && d.Error == "" {
					t.Errorf("retrying without a reason: %+v", d)
				}
			}
			if tt.check != nil {
				tt.check(t, rc)
			}
			st := q.Stats()[0]
			if tt.wantStatus == alert.DeliveryDelivered && st.Delivered != 1 || tt.wantStatus == alert.DeliveryFailed && st.Failed != 1 ||
				st.Retries != uint64(tt.wantAttempts-1) {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestQueueOrderResolveNeverOvertakesFiring(t *testing.T) {
	rc := newReceiver(t, status(503, "busy"), status(503, "busy"), status(200, ""))
	rec := newRecorder()
	ch := newTestChannel(t, Config{Name: "hook", Type: TypeWebhook, URL: rc.URL}, Options{})
	q := startQueue(t, QueueOptions{Defaults: fastQueue(), Recorder: rec}, ch)
	q.Notify(batchOf("hook", firingEvent("ev_fire")))
	q.Notify(batchOf("hook", resolvedEvent("ev_resolve")))
	rec.waitFinal(t, "ev_resolve", 5*time.Second)
	var order []string
	for _, req := range rc.got() {
		p := string(req.Body)
		switch {
		case strings.Contains(p, "ev_fire"):
			order = append(order, "firing")
		case strings.Contains(p, "ev_resolve"):
			order = append(order, "resolved")
		}
	}
	if want := []string{"firing", "firing", "firing", "resolved"}; !slices.Equal(order, want) {
		t.Errorf("receiver saw %v, want %v", order, want)
	}
}

func TestQueueFullDrops(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	rec := newRecorder()
	log, logs := testLogger()
	set := fastQueue()
	set.Size = 2
	q := startQueue(t, QueueOptions{Defaults: set, Recorder: rec, Logger: log}, blockingChannel("slow", release))
	for i := range 5 {
		q.Notify(batchOf("slow", firingEvent(fmt.Sprintf("ev_%d", i))))
	}
	for i := 2; i < 5; i++ {
		d := rec.waitFinal(t, fmt.Sprintf("ev_%d", i), time.Second)
		if d.Status != alert.DeliveryDropped || !strings.Contains(d.Error, "queue full") {
			t.Errorf("ev_%d: %+v, want dropped (queue full)", i, d)
		}
	}
	st := q.Stats()
	if len(st) != 1 || st[0].Dropped != 3 || st[0].QueueLength != 2 || st[0].QueueCapacity != 2 {
		t.Errorf("stats %+v, want 3 dropped, length 2 of 2", st)
	}
	if !strings.Contains(logs.String(), "queue full") {
		t.Errorf("the drops were not logged:\n%s", logs)
	}
}

func TestQueueNotifyNeverBlocks(t *testing.T) {
	var channels []Channel
	for i := range 3 {
		hole, _ := blackHole(t)
		ch := newTestChannel(t, Config{Name: fmt.Sprintf("hole-%d", i), Type: TypeWebhook, URL: hole}, Options{})
		channels = append(channels, ch)
	}
	set := fastQueue()
	set.Size = 1000
	set.Timeout = Duration(time.Minute)
	q := startQueue(t, QueueOptions{Defaults: set, Recorder: discardRecorder{}}, channels...)
	b := batchOf("", firingEvent("ev_1"))
	start := time.Now()
	for i := range 10000 {
		b.Channel = channels[i%3].Name()
		q.Notify(b)
	}
	took := time.Since(start)
	t.Logf("10,000 Notify calls with every channel black-holed: %s", took)
	if limit := raceSlowdown * 500 * time.Millisecond; took > limit {
		t.Errorf("10,000 Notify calls took %s, want under %s (well under a second without the race detector)", took, limit)
	}
	var dropped uint64
	for _, s := range q.Stats() {
		if s.QueueLength > s.QueueCapacity {
			t.Errorf("%s: queue length %d above its bound %d", s.Name, s.QueueLength, s.QueueCapacity)
		}
		dropped += s.Dropped
	}
	if dropped != 10000-3*1000 {
		t.Errorf("dropped %d, want %d", dropped, 10000-3*1000)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); err == nil {
		t.Error("Close delivered everything through black holes")
	}
}

func TestQueueCloseLeavesNoGoroutine(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	hole, stopHole := blackHole(t)
	rc := newReceiver(t)
	rec := newRecorder()
	am := newTestChannel(t, Config{Name: "am", Type: TypeAlertmanager, URL: rc.URL, KeepAlive: Duration(10 * time.Millisecond)}, Options{})
	hook := newTestChannel(t, Config{Name: "hole", Type: TypeWebhook, URL: hole}, Options{})
	set := fastQueue()
	set.Timeout = Duration(time.Minute)
	q, err := NewQueue(QueueOptions{Defaults: set, Recorder: rec}, am, hook)
	if err != nil {
		t.Fatal(err)
	}
	q.Notify(batchOf("am", firingEvent("ev_am")))
	q.Notify(batchOf("hole", firingEvent("ev_1")))
	q.Notify(batchOf("hole", firingEvent("ev_2")))
	rec.waitFinal(t, "ev_am", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = q.Close(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline as the reason batches were left", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %s, want about its 200ms deadline", took)
	}
	for _, id := range []string{"ev_1", "ev_2"} {
		if d := rec.waitFinal(t, id, time.Second); d.Status != alert.DeliveryFailed || !strings.Contains(d.Error, "notifier stopped before delivery") {
			t.Errorf("%s: %+v, want failed: notifier stopped before delivery", id, d)
		}
	}
	posts := len(rc.got())
	time.Sleep(50 * time.Millisecond)
	if n := len(rc.got()); n != posts {
		t.Errorf("%d keep-alives after Close", n-posts)
	}
	q.Notify(batchOf("am", firingEvent("ev_late"))) // must neither block nor panic
	if err := q.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v", err)
	}
	rc.Close()
	stopHole()
}

func TestQueueCloseDrains(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var sent atomic.Int32
	slow := &funcChannel{name: "slow", send: func(ctx context.Context, _ alert.Batch) error {
		select {
		case <-time.After(10 * time.Millisecond):
			sent.Add(1)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	rec := newRecorder()
	q, err := NewQueue(QueueOptions{Defaults: fastQueue(), Recorder: rec}, slow)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		q.Notify(batchOf("slow", firingEvent(fmt.Sprintf("ev_%d", i))))
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if sent.Load() != 10 {
		t.Errorf("delivered %d of 10 before Close returned", sent.Load())
	}
	for i := range 10 {
		if s := rec.statuses(fmt.Sprintf("ev_%d", i)); !slices.Equal(s, []string{"queued", "delivered"}) {
			t.Errorf("ev_%d: %v, want queued then delivered (all recorded before Close returns)", i, s)
		}
	}
}

func TestQueueUpdateKeepsQueuedBatches(t *testing.T) {
	release := make(chan struct{})
	rec := newRecorder()
	oldInFlight := make(chan string, 1)
	old := &funcChannel{name: "kept", send: func(ctx context.Context, b alert.Batch) error {
		oldInFlight <- b.Events[0].ID
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}}
	inFlight := make(chan struct{})
	gone := &funcChannel{name: "gone", send: func(ctx context.Context, _ alert.Batch) error {
		close(inFlight)
		<-ctx.Done() // until Update cancels it
		return ctx.Err()
	}}
	q := startQueue(t, QueueOptions{Defaults: fastQueue(), Recorder: rec}, old, gone)
	for i := range 4 {
		q.Notify(batchOf("kept", firingEvent(fmt.Sprintf("kept_%d", i))))
		q.Notify(batchOf("gone", firingEvent(fmt.Sprintf("gone_%d", i))))
	}
	<-inFlight
	if id := <-oldInFlight; id != "kept_0" {
		t.Fatalf("in flight on the old channel: %s, want kept_0", id)
	}
	var mu sync.Mutex
	var through []string
	replacement := &funcChannel{name: "kept", send: func(_ context.Context, b alert.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		through = append(through, b.Events[0].ID)
		return nil
	}}
	added := blockingChannel("added", release)
	if err := q.Update([]Channel{replacement, added}); err != nil {
		t.Fatal(err)
	}
	close(release) // the attempt in flight on the old channel finishes
	for i := range 4 {
		if d := rec.waitFinal(t, fmt.Sprintf("kept_%d", i), 5*time.Second); d.Status != alert.DeliveryDelivered {
			t.Errorf("kept_%d: %+v, want delivered", i, d)
		}
		if d := rec.waitFinal(t, fmt.Sprintf("gone_%d", i), 5*time.Second); d.Status != alert.DeliveryFailed || !strings.Contains(d.Error, "channel removed") {
			t.Errorf("gone_%d: %+v, want failed: channel removed", i, d)
		}
	}
	mu.Lock()
	if want := []string{"kept_1", "kept_2", "kept_3"}; !slices.Equal(through, want) {
		t.Errorf("the new channel sent %v, want the batches queued before the reload, in order: %v", through, want)
	}
	mu.Unlock()
	var names []string
	for _, s := range q.Stats() {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"added", "kept"}) {
		t.Errorf("channels after Update: %v", names)
	}
	q.Notify(batchOf("gone", firingEvent("late")))
	if d := rec.waitFinal(t, "late", time.Second); d.Status != alert.DeliveryFailed || !strings.Contains(d.Error, `no channel named "gone"`) {
		t.Errorf("batch for a removed channel: %+v", d)
	}
	if err := q.Update([]Channel{replacement, replacement}); err == nil {
		t.Error("Update accepted two channels of the same name")
	}
}

func TestQueueChannelPanics(t *testing.T) {
	rec := newRecorder()
	log, logs := testLogger()
	n := 0
	ch := &funcChannel{name: "p", send: func(context.Context, alert.Batch) error {
		n++
		if n == 1 {
			panic("boom")
		}
		return nil
	}}
	q := startQueue(t, QueueOptions{Defaults: fastQueue(), Recorder: rec, Logger: log}, ch)
	q.Notify(batchOf("p", firingEvent("ev_1")))
	q.Notify(batchOf("p", firingEvent("ev_2")))
	if d := rec.waitFinal(t, "ev_1", time.Second); d.Status != alert.DeliveryFailed || !strings.Contains(d.Error, "panicked: boom") {
		t.Errorf("ev_1: %+v, want failed after the panic", d)
	}
	if d := rec.waitFinal(t, "ev_2", time.Second); d.Status != alert.DeliveryDelivered {
		t.Errorf("ev_2: %+v, want delivered by the same worker", d)
	}
	if !strings.Contains(logs.String(), "boom") {
		t.Error("the panic was not logged")
	}
}

func TestQueueMaxAge(t *testing.T) {
	rec := newRecorder()
	calls := 0
	ch := &funcChannel{name: "c", send: func(context.Context, alert.Batch) error {
		calls++
		return Retryable(errors.New("busy"), 0)
	}}
	set := fastQueue()
	set.MaxAttempts = 1000
	set.MaxAge = Duration(50 * time.Millisecond)
	q := startQueue(t, QueueOptions{Defaults: set, Recorder: rec}, ch)
	q.Notify(batchOf("c", firingEvent("ev_1")))
	d := rec.waitFinal(t, "ev_1", 5*time.Second)
	if d.Status != alert.DeliveryFailed || !strings.Contains(d.Error, "max_age") {
		t.Errorf("%+v, want failed because of max_age", d)
	}
}

func TestQueueSendNow(t *testing.T) {
	ok := newReceiver(t)
	bad := newReceiver(t, status(400, "invalid"))
	rec := newRecorder()
	chOK := newTestChannel(t, Config{Name: "ok", Type: TypeWebhook, URL: ok.URL}, Options{})
	chBad := newTestChannel(t, Config{Name: "bad", Type: TypeWebhook, URL: bad.URL}, Options{})
	q := startQueue(t, QueueOptions{Defaults: fastQueue(), Recorder: rec}, chOK, chBad)
	tests := []struct {
		name       string
		channel    string
		wantStatus string
		wantErr    string
	}{
		{name: "delivered", channel: "ok", wantStatus: alert.DeliveryDelivered},
		{name: "refused", channel: "bad", wantStatus: alert.DeliveryFailed, wantErr: "400"},
		{name: "unknown channel", channel: "nope", wantStatus: alert.DeliveryFailed, wantErr: `no channel named "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := TestBatch(tt.channel, time.Now())
			d, err := q.SendNow(sendCtx(t), tt.channel, b)
			if d.Status != tt.wantStatus || d.Channel != tt.channel {
				t.Errorf("delivery %+v, want %s on %s", d, tt.wantStatus, tt.channel)
			}
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want %q", err, tt.wantErr)
			}
			if len(rec.of(b.Events[0].ID)) != 0 {
				t.Error("SendNow recorded an outcome")
			}
		})
	}
	body := string(ok.got()[0].Body)
	if !strings.Contains(body, `"type":"alert.test"`) || !strings.Contains(body, TestRuleName) {
		t.Errorf("test notification body %s", body)
	}
}

func TestBackoff(t *testing.T) {
	set := QueueConfig{BackoffBase: Duration(time.Second), BackoffMax: Duration(10 * time.Second)}
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		min, max   time.Duration
	}{
		{name: "first retry below the base", attempt: 1, max: time.Second},
		{name: "doubles", attempt: 3, max: 4 * time.Second},
		{name: "capped", attempt: 30, max: 10 * time.Second},
		{name: "Retry-After honoured", attempt: 1, retryAfter: 5 * time.Second, min: 5 * time.Second, max: 5 * time.Second},
		{name: "Retry-After capped", attempt: 1, retryAfter: time.Hour, min: 10 * time.Second, max: 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 200 {
				if got := backoff(set, tt.attempt, tt.retryAfter); got < tt.min || got > tt.max {
					t.Fatalf("backoff = %s, want within [%s, %s]", got, tt.min, tt.max)
				}
			}
		})
	}
}

func TestNewQueueRejects(t *testing.T) {
	tests := []struct {
		name     string
		opts     QueueOptions
		channels []Channel
		want     string
	}{
		{name: "negative size", opts: QueueOptions{Defaults: QueueConfig{Size: -1}}, want: "queue.size"},
		{name: "base above max", opts: QueueOptions{Defaults: QueueConfig{BackoffBase: Duration(time.Minute), BackoffMax: Duration(time.Second)}}, want: "queue.backoff_base"},
		{name: "duplicate names", channels: []Channel{&funcChannel{name: "a"}, &funcChannel{name: "a"}}, want: `two channels are named "a"`},
		{name: "nil channel", channels: []Channel{nil}, want: "channel 0 is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := NewQueue(tt.opts, tt.channels...)
			if err == nil {
				q.Close(context.Background())
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}
