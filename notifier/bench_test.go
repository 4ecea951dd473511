package notifier

import (
	"context"
	"testing"

	"github.com/vigilgw/vigil/detector/alert"
)

// discardRecorder is a DeliveryRecorder that keeps nothing.
type discardRecorder struct{}

func (discardRecorder) RecordDelivery(string, alert.Delivery) {}

// BenchmarkNotify measures Notify on the gateway's side: queueing a batch, or dropping it
// when the queue is full, with its outcomes handed to a recorder.
func BenchmarkNotify(b *testing.B) {
	release := make(chan struct{})
	set := fastQueue()
	set.Size = 1000
	q, err := NewQueue(QueueOptions{Defaults: set, Recorder: discardRecorder{}}, blockingChannel("slow", release))
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close(context.Background())
	defer close(release)
	batch := batchOf("slow", firingEvent("ev_1"))
	b.ReportAllocs()
	for b.Loop() {
		q.Notify(batch)
	}
}
