package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// silentFuture is a publish whose confirmation never comes, unless ok or
// failed is written to.
type silentFuture struct {
	ok     chan *jetstream.PubAck
	failed chan error
}

func newSilentFuture() *silentFuture {
	return &silentFuture{ok: make(chan *jetstream.PubAck, 1), failed: make(chan error, 1)}
}

func (f *silentFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f *silentFuture) Err() <-chan error            { return f.failed }
func (f *silentFuture) Msg() *nats.Msg               { return nil }

// TestAwaitAckWithoutAnAnswer: a confirmation that never comes (a
// JetStream context without an async publish timeout) does not hold its
// job forever: the wait ends with errNotConfirmed as the clock ticks.
func TestAwaitAckWithoutAnAnswer(t *testing.T) {
	clock := newPeriodClock()
	done := make(chan error, 1)
	go func() { done <- awaitAck(context.Background(), newSilentFuture(), clock) }()

	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if !errors.Is(err, errNotConfirmed) {
				t.Fatalf("awaitAck = %v, want errNotConfirmed", err)
			}
			return
		case <-tick.C:
			clock.tick()
		case <-deadline:
			t.Fatal("awaitAck still waiting after the clock ticked for 5 s")
		}
	}
}

// TestAwaitAckAnswers: the future's answer, or the end of ctx, ends the
// wait whatever the clock.
func TestAwaitAckAnswers(t *testing.T) {
	clock := newPeriodClock()
	f := newSilentFuture()
	f.ok <- &jetstream.PubAck{Stream: "results", Sequence: 1}
	if err := awaitAck(context.Background(), f, clock); err != nil {
		t.Errorf("confirmed publish: awaitAck = %v, want nil", err)
	}

	f = newSilentFuture()
	refused := errors.New("refused")
	f.failed <- refused
	if err := awaitAck(context.Background(), f, clock); !errors.Is(err, refused) {
		t.Errorf("refused publish: awaitAck = %v, want %v", err, refused)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := awaitAck(ctx, newSilentFuture(), clock); !errors.Is(err, context.Canceled) {
		t.Errorf("ended ctx: awaitAck = %v, want context.Canceled", err)
	}

	// A confirmation already come wins over a shutdown: the job is acked,
	// not handed back with its event recorded (every time, not by chance
	// of select).
	for range 50 {
		f = newSilentFuture()
		f.ok <- &jetstream.PubAck{Stream: "results", Sequence: 2}
		if err := awaitAck(ctx, f, clock); err != nil {
			t.Fatalf("confirmed publish, ended ctx: awaitAck = %v, want nil", err)
		}
	}

	if err := awaitAck(context.Background(), nil, clock); !errors.Is(err, errNotPublished) {
		t.Errorf("no future: awaitAck = %v, want errNotPublished", err)
	}
}

// TestPeriodClockCallsAlso: the clock runs what else it is given on every
// tick (the acker's expiry, see Run), and stops when told.
func TestPeriodClockCallsAlso(t *testing.T) {
	clock := newPeriodClock()
	calls := make(chan struct{}, 16)
	var wg sync.WaitGroup
	done := make(chan struct{})
	ended := clock.current()
	clock.start(&wg, time.Millisecond, done, func() {
		select {
		case calls <- struct{}{}:
		default:
		}
	})
	for i := range 2 {
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d never came", i+1)
		}
	}
	select {
	case <-ended:
	default:
		t.Error("the clock called also without ending the period")
	}
	close(done)
	wg.Wait()
}
