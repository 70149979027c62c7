package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pending is a job whose outcome is decided and whose result event is
// published, waiting for JetStream to confirm the event before the job is
// acked. It is still in the worker's hands: its ack wait is kept alive, and
// it counts among the jobs the worker holds.
type pending struct {
	t   *task
	job Job
	d   Decision
	res Result
	msg *nats.Msg
	// ack is the publish's confirmation to come; nil when the publish was
	// refused at once.
	ack jetstream.PubAckFuture
}

// confirmer waits for the result event of each job of confirms to be
// confirmed, then acks the job, in turn, until confirms is closed. One
// goroutine for them all: their events' publishes are confirmed in the
// order they were sent, so while it waits for one the next are confirmed
// meanwhile, and it parks once for many. A confirmation that is late holds
// those behind it, at most PublishTimeout (JetStreamOptions times every
// publish out): they share its stream and connection, so they are late
// too, and while they wait their jobs' ack waits are kept alive as any
// job's in the worker's hands. A job whose event failed, or was not
// confirmed in time, is published again by a goroutine of its own, so that
// the others do not wait behind its retries.
func (w *Worker) confirmer(confirms <-chan *pending, jobs *sync.WaitGroup) {
	for p := range confirms {
		if err := awaitAck(p.t.hard, p.ack, w.confirmClock); err != nil {
			go w.republish(p, jobs.Done)
			continue
		}
		w.ack(p, jobs.Done)
	}
}

// republish publishes p's result event again, waiting, with publish's
// retries (its message ID makes a second copy a duplicate), then acks the
// job; one that still cannot be confirmed hands the job back.
func (w *Worker) republish(p *pending, ended func()) {
	if err := w.publish(p.t.hard, p.msg); err != nil {
		w.recordFailed(p.t, p.job, &recordError{kind: kindResult, err: err})
		w.release(p.t)
		ended()
		return
	}
	w.ack(p, ended)
}

// ack acks p's job, whose record is confirmed. The job leaves the
// worker's hands, and its room, as its ack is sent: nothing is left to do
// for it but to learn whether the ack was confirmed, and its ack wait
// needs no keeping alive (an ack that is lost lets the job come back, to
// find its run gone). The server counts it among the worker's unacked
// jobs until it has read the ack, a round trip at most. ended is called
// once the ack is confirmed, or fails, on the acker's goroutine.
func (w *Worker) ack(p *pending, ended func()) {
	w.leave(p.t)
	w.acker.ack(p.t.msg, func(err error) {
		w.acked(p.t, p.job, p.d, p.res, err)
		p.t.endTrace()
		ended()
	})
}

var (
	errNotPublished = errors.New("publish refused")
	errNotConfirmed = errors.New("publish not confirmed in time")
)

// awaitAck waits for an asynchronous publish's confirmation, without a
// timer of its own (a timer per job was 2% of the worker's CPU at
// concurrency 64): until the future ends, which the worker's JetStream
// context makes happen after PublishTimeout (see JetStreamOptions); until
// ctx ends at the end of shutdown's grace period; or, for a JetStream
// context built without that timeout, until clock has marked two ends of a
// period of PublishTimeout, between one and two of them.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture, clock *periodClock) error {
	if f == nil {
		return errNotPublished
	}
	ok, failed := f.Ok(), f.Err()
	// Most are confirmed by the time they are waited for: a confirmation
	// that has come wins over a shutdown that has too.
	select {
	case <-ok:
		return nil
	case err := <-failed:
		return err
	default:
	}
	for range 2 {
		select {
		case <-ok:
			return nil
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-clock.current():
		}
	}
	return errNotConfirmed
}

// periodClock marks the end of each period for the waits that watch it,
// one channel closed per period instead of a timer per wait.
type periodClock struct {
	end atomic.Pointer[chan struct{}]
}

func newPeriodClock() *periodClock {
	c := &periodClock{}
	end := make(chan struct{})
	c.end.Store(&end)
	return c
}

// current is closed at the end of the period under way.
func (c *periodClock) current() <-chan struct{} { return *c.end.Load() }

func (c *periodClock) tick() {
	next := make(chan struct{})
	close(*c.end.Swap(&next))
}

// start ticks every period until done is closed, calling each of also
// after each tick; wg says when it stopped.
func (c *periodClock) start(wg *sync.WaitGroup, period time.Duration, done <-chan struct{}, also ...func()) {
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				c.tick()
				for _, f := range also {
					f()
				}
			}
		}
	})
}
