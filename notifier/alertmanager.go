package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// keepAliveHorizons is how many keep-alive intervals ahead the endsAt of a firing alert is
// set: Alertmanager resolves the alert by itself if that many keep-alives in a row are lost
// (Vigil stopped, or the network is down), as Prometheus does with its resend delay.
const keepAliveHorizons = 4

// Alertmanager pushes alerts into an Alertmanager through its API: POST URL/api/v2/alerts
// with a JSON array of alerts (labels, annotations, startsAt, endsAt, generatorURL), one per
// event. The labels identify the alert instance: alertname (the rule name), rule_id,
// vigil_type, severity and the group dimensions. A resolved event posts the same labels with
// endsAt set to the resolve time.
//
// Alertmanager resolves an alert by itself once its endsAt has passed, so the channel
// remembers the alerts it posted as firing and posts them again every KeepAlive (1m by
// default), with endsAt 4 intervals ahead, until their resolve is delivered. This is a
// protocol keep-alive, not a new notification (Alertmanager deduplicates it); the Queue runs
// it from the channel's worker and stops it on Close. Test notifications are not kept alive:
// they expire by themselves.
type Alertmanager struct {
	base
	endpoint *url.URL
	display  string
	interval time.Duration

	firing atomic.Pointer[firingSet] // shared with the channel it replaced on a reload
}

// firingSet holds the alerts posted as firing and not yet resolved, by fingerprint.
type firingSet struct {
	mu     sync.Mutex
	alerts map[string]amAlert
}

func newAlertmanager(b base, c Config) (*Alertmanager, error) {
	u, err := c.endpoint("")
	if err != nil {
		return nil, err
	}
	u = u.JoinPath("api", "v2", "alerts")
	interval := time.Duration(c.KeepAlive)
	if interval <= 0 {
		interval = DefaultKeepAlive
	}
	a := &Alertmanager{base: b, endpoint: u, display: redactURL(u, false), interval: interval}
	a.firing.Store(&firingSet{alerts: map[string]amAlert{}})
	return a, nil
}

// Send posts one alert per event of b, in order.
func (a *Alertmanager) Send(ctx context.Context, b alert.Batch) error {
	if len(b.Events) == 0 {
		return errEmptyBatch
	}
	now := a.now()
	alerts := make([]amAlert, len(b.Events))
	for i := range b.Events {
		ev := &b.Events[i]
		alerts[i] = amAlert{
			Labels:       amLabels(ev),
			Annotations:  amAnnotations(ev),
			StartsAt:     startsAt(ev),
			GeneratorURL: a.eventURL(ev),
		}
		if ev.State == alert.Resolved {
			alerts[i].EndsAt = resolvedAt(ev)
		} else {
			alerts[i].EndsAt = a.horizon(now)
		}
	}
	if err := a.postAlerts(ctx, alerts); err != nil {
		return err
	}
	set := a.firing.Load()
	set.mu.Lock()
	defer set.mu.Unlock()
	for i := range b.Events {
		ev := &b.Events[i]
		fp := fingerprint(alerts[i].Labels)
		switch {
		case ev.Type == alert.TypeTest:
		case ev.State == alert.Resolved:
			delete(set.alerts, fp)
		default:
			set.alerts[fp] = alerts[i]
		}
	}
	return nil
}

// horizon is the endsAt of a firing alert posted at now.
func (a *Alertmanager) horizon(now time.Time) time.Time {
	return now.Add(keepAliveHorizons * a.interval).UTC()
}

// KeepAliveInterval returns the keep_alive setting.
func (a *Alertmanager) KeepAliveInterval() time.Duration { return a.interval }

// KeepAlive posts again every alert still firing, with a new endsAt.
func (a *Alertmanager) KeepAlive(ctx context.Context) error {
	set := a.firing.Load()
	set.mu.Lock()
	alerts := slices.Collect(maps.Values(set.alerts))
	set.mu.Unlock()
	if len(alerts) == 0 {
		return nil
	}
	end := a.horizon(a.now())
	for i := range alerts {
		alerts[i].EndsAt = end
	}
	return a.postAlerts(ctx, alerts)
}

// Firing returns how many alerts the channel keeps alive.
func (a *Alertmanager) Firing() int {
	set := a.firing.Load()
	set.mu.Lock()
	defer set.mu.Unlock()
	return len(set.alerts)
}

// adopt shares the set of firing alerts of the channel a replaces on a configuration reload
// (same name, same endpoint), so that they are still kept alive and resolved after it, and
// so that an attempt still in flight on the old channel updates the same set.
func (a *Alertmanager) adopt(old Channel) {
	prev, ok := old.(*Alertmanager)
	if !ok || prev == a || prev.endpoint.String() != a.endpoint.String() {
		return
	}
	shared, own := prev.firing.Load(), a.firing.Load()
	if shared == own {
		return
	}
	own.mu.Lock()
	mine := maps.Clone(own.alerts)
	own.mu.Unlock()
	shared.mu.Lock()
	maps.Copy(shared.alerts, mine)
	shared.mu.Unlock()
	a.firing.Store(shared)
}

func (a *Alertmanager) postAlerts(ctx context.Context, alerts []amAlert) error {
	body, err := json.Marshal(alerts)
	if err != nil {
		return Permanent(fmt.Errorf("alertmanager %q: encoding the alerts: %w", a.name, err))
	}
	return a.post(ctx, httpRequest{url: a.endpoint, display: a.display, contentType: "application/json", body: body})
}

// String describes the channel.
func (a *Alertmanager) String() string {
	return fmt.Sprintf("alertmanager channel %q (%s)", a.name, strings.TrimSuffix(a.display, "/api/v2/alerts"))
}

var (
	_ Channel    = (*Alertmanager)(nil)
	_ KeepAliver = (*Alertmanager)(nil)
)
