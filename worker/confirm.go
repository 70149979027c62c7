package worker

import (
	"context"
	"errors"
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

// confirm waits for p's result event to be confirmed, then acks the job.
// An event not confirmed in time (or refused) is published again, waiting,
// with publish's retries: its message ID makes a second copy a duplicate.
// One that still cannot be confirmed hands the job back.
func (w *Worker) confirm(p *pending) {
	t := p.t
	if err := awaitAck(t.hard, p.ack, w.cfg.PublishTimeout); err != nil {
		if err := w.publish(t.hard, p.msg); err != nil {
			w.recordFailed(t, p.job, &recordError{kind: kindResult, err: err})
			return
		}
	}
	w.acked(t, p.job, p.d, p.res)
}

var (
	errNotPublished = errors.New("publish refused")
	errNotConfirmed = errors.New("publish not confirmed in time")
)

// awaitAck waits up to timeout for an asynchronous publish's confirmation;
// ctx ends the wait sooner at the end of shutdown's grace period.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture, timeout time.Duration) error {
	if f == nil {
		return errNotPublished
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errNotConfirmed
	}
}
