package worker

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// consumerWatcher reads the consumer's backlog for the Observer, and looks
// for stranded jobs whose advisory nobody heard (every worker was down when
// it was sent): when nothing is pending or in flight, a job at or below the
// last delivered sequence that is still in the stream can only be one.
type consumerWatcher struct {
	p    watcherParams
	done chan struct{}
}

type watcherParams struct {
	consumer  jetstream.Consumer
	interval  time.Duration
	metrics   Observer
	jsContext func() (context.Context, context.CancelFunc)
	// sweepStranded sweeps the jobs found stranded now that were suspects
	// already, and returns those found stranded for the first time; it
	// stops early when done is closed.
	sweepStranded func(lastDelivered uint64, suspects map[uint64]bool, done <-chan struct{}) map[uint64]bool
}

func newConsumerWatcher(p watcherParams) *consumerWatcher {
	return &consumerWatcher{p: p, done: make(chan struct{})}
}

// start watches until shutdown; wg says when it has stopped.
func (cw *consumerWatcher) start(wg *sync.WaitGroup) {
	wg.Go(func() {
		tick := time.NewTicker(cw.p.interval)
		defer tick.Stop()
		// A job is swept only when two checks in a row find it stranded: in
		// a cluster, an ack can reach the consumer before the job's removal
		// reaches the stream replica that answers.
		var suspects map[uint64]bool
		for {
			select {
			case <-cw.done:
				return
			case <-tick.C:
			}
			suspects = cw.check(suspects)
		}
	})
}

func (cw *consumerWatcher) shutdown() { close(cw.done) }

// check reads the backlog once and returns the suspects for the next check.
func (cw *consumerWatcher) check(suspects map[uint64]bool) map[uint64]bool {
	ctx, cancel := cw.p.jsContext()
	info, err := cw.p.consumer.Info(ctx)
	cancel()
	if err != nil {
		return suspects
	}
	cw.p.metrics.ConsumerBacklog(info.NumPending, uint64(info.NumAckPending), uint64(info.NumRedelivered))
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return cw.p.sweepStranded(info.Delivered.Stream, suspects, cw.done)
	}
	return nil
}

// sweepStranded sweeps the jobs found stranded now that were suspects
// already, and returns those found stranded for the first time.
func (w *Worker) sweepStranded(lastDelivered uint64, suspects map[uint64]bool, done <-chan struct{}) map[uint64]bool {
	ctx, cancel := w.jsContext()
	defer cancel()
	stream, err := w.js.Stream(ctx, w.cfg.JobsStream)
	if err != nil {
		return nil
	}
	st := stream.CachedInfo().State
	if st.Msgs == 0 {
		return nil
	}
	next := map[uint64]bool{}
	const maxPerRound = 1000
	for seq, n := st.FirstSeq, 0; seq <= lastDelivered && seq <= st.LastSeq && n < maxPerRound; seq++ {
		select {
		case <-done:
			return nil
		default:
		}
		n++
		if _, err := stream.GetMsg(ctx, seq); err != nil {
			continue
		}
		if suspects[seq] {
			w.sweepOne(seq, w.cfg.MaxDeliver)
		} else {
			next[seq] = true
		}
	}
	return next
}
