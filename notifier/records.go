package notifier

import (
	"log/slog"
	"runtime/debug"
	"sync"

	"github.com/vigilgw/vigil/detector/alert"
)

// maxPendingRecords bounds the delivery outcomes waiting to be handed to the recorder.
const maxPendingRecords = 1 << 18

// record is one delivery outcome of one event.
type record struct {
	eventID string
	d       alert.Delivery
}

// recordStage hands delivery outcomes to the DeliveryRecorder from one goroutine of its
// own, in the order they happened. Notify and the workers only append to a list, so that
// neither ever waits for the recorder, and a recorder that takes the rule engine's lock
// cannot deadlock with an engine that calls Notify while holding it.
type recordStage struct {
	rec alert.DeliveryRecorder
	log *slog.Logger

	mu      sync.Mutex
	pending []record
	lost    uint64 // outcomes dropped because pending was full, since the last log line
	stopped bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// newRecordStage starts the stage's goroutine; close stops it. A nil recorder makes a
// stage that discards everything and runs no goroutine.
func newRecordStage(rec alert.DeliveryRecorder, log *slog.Logger) *recordStage {
	s := &recordStage{rec: rec, log: log, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if rec == nil {
		close(s.done)
		return s
	}
	go s.run()
	return s
}

// add queues the outcome d for every event of events. It never blocks.
func (s *recordStage) add(events []alert.Event, d alert.Delivery) {
	if s.rec == nil {
		return
	}
	s.mu.Lock()
	for i := range events {
		if s.stopped || len(s.pending) >= maxPendingRecords {
			s.lost++
			continue
		}
		s.pending = append(s.pending, record{eventID: events[i].ID, d: d})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run hands outcomes to the recorder until close.
func (s *recordStage) run() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
			s.flush()
		case <-s.stop:
			s.flush()
			return
		}
	}
}

// flush hands every pending outcome to the recorder.
func (s *recordStage) flush() {
	for {
		s.mu.Lock()
		batch, lost := s.pending, s.lost
		s.pending, s.lost = nil, 0
		s.mu.Unlock()
		if lost > 0 {
			s.log.Error("notifier: delivery outcomes not recorded on their events: too many waiting for the recorder",
				"lost", lost, "limit", maxPendingRecords)
		}
		if len(batch) == 0 {
			return
		}
		for _, r := range batch {
			s.call(r)
		}
	}
}

// call hands one outcome to the recorder, surviving a panic in it.
func (s *recordStage) call(r record) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("notifier: the delivery recorder panicked", "event", r.eventID, "channel", r.d.Channel,
				"panic", p, "stack", string(debug.Stack()))
		}
	}()
	s.rec.RecordDelivery(r.eventID, r.d)
}

// close hands over what is pending and stops the goroutine; later outcomes are counted as
// lost.
func (s *recordStage) close() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.stopped = true
	s.mu.Unlock()
	if s.rec != nil {
		close(s.stop)
	}
	<-s.done
}
