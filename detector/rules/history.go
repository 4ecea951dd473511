package rules

import (
	"sync"
	"time"

	"github.com/vigilgw/vigil/detector/alert"
)

// History keeps the most recent events, newest first, and the delivery outcome of each.
// It is bounded: beyond its size the oldest events are dropped. Safe for concurrent use.
type History struct {
	mu     sync.Mutex
	events []alert.Event // ring, oldest at head
	head   int
	size   int
	byID   map[string]int // event id -> index in events
}

// DefaultHistory is the default number of events kept.
const DefaultHistory = 1000

// NewHistory returns a history that keeps n events (DefaultHistory when n <= 0).
func NewHistory(n int) *History {
	if n <= 0 {
		n = DefaultHistory
	}
	return &History{events: make([]alert.Event, n), byID: make(map[string]int, n)}
}

// Add appends events (in the order they happened).
func (h *History) Add(events []alert.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range events {
		i := (h.head + h.size) % len(h.events)
		if h.size == len(h.events) {
			delete(h.byID, h.events[h.head].ID)
			h.head = (h.head + 1) % len(h.events)
		} else {
			h.size++
		}
		if ev.Notifications == nil {
			ev.Notifications = []alert.Delivery{}
		}
		h.events[i] = ev
		h.byID[ev.ID] = i
	}
}

// RecordDelivery records the outcome of delivering an event through a channel,
// replacing the channel's previous outcome. Unknown (already dropped) events are ignored.
func (h *History) RecordDelivery(eventID string, d alert.Delivery) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, ok := h.byID[eventID]
	if !ok {
		return
	}
	ev := &h.events[i]
	for j := range ev.Notifications {
		if ev.Notifications[j].Channel == d.Channel {
			ev.Notifications[j] = d
			return
		}
	}
	ev.Notifications = append(ev.Notifications, d)
}

// Get returns one event by id.
func (h *History) Get(id string) (alert.Event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, ok := h.byID[id]
	if !ok {
		return alert.Event{}, false
	}
	return cloneEvent(&h.events[i]), true
}

// EventFilter selects events. Zero fields select everything.
type EventFilter struct {
	// From and To bound the event time (inclusive).
	From, To time.Time
	// Types, States, Thresholds and Rules, when not empty, keep events whose type, state,
	// threshold (sensitivity for anomaly events) or rule id is among them.
	Types, States, Thresholds, Rules []string
}

func (f *EventFilter) match(ev *alert.Event) bool {
	if !f.From.IsZero() && ev.Time.Before(f.From) {
		return false
	}
	if !f.To.IsZero() && ev.Time.After(f.To) {
		return false
	}
	return in(f.Types, ev.Type) && in(f.States, string(ev.State)) && in(f.Thresholds, ev.Threshold) && in(f.Rules, ev.RuleID)
}

func in(set []string, v string) bool {
	if len(set) == 0 {
		return true
	}
	for _, s := range set {
		if s == v {
			return true
		}
	}
	return false
}

// Events returns matching events newest first, skipping offset and returning at most
// limit (all when limit <= 0), with the number of matching events in all.
func (h *History) Events(f EventFilter, offset, limit int) (events []alert.Event, total int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	events = []alert.Event{}
	for k := h.size - 1; k >= 0; k-- {
		ev := &h.events[(h.head+k)%len(h.events)]
		if !f.match(ev) {
			continue
		}
		total++
		if total <= offset || (limit > 0 && len(events) >= limit) {
			continue
		}
		events = append(events, cloneEvent(ev))
	}
	return events, total
}

// All returns every kept event, oldest first (for snapshots).
func (h *History) All() []alert.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]alert.Event, 0, h.size)
	for k := 0; k < h.size; k++ {
		out = append(out, cloneEvent(&h.events[(h.head+k)%len(h.events)]))
	}
	return out
}

func cloneEvent(ev *alert.Event) alert.Event {
	c := *ev
	c.Notifications = append([]alert.Delivery{}, ev.Notifications...)
	return c
}

var _ alert.DeliveryRecorder = (*History)(nil)
