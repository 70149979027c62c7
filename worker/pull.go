package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// pull takes jobs while ctx lives: as many as there are slots, plus as
// many again waiting for a slot (see prefetch), so that a slot never waits a
// round trip to the server for its next job. None while pulling is paused
// or the breaker is open, and one at a time (a probe) while the worker
// cannot call Tallyfy otherwise.
func (w *Worker) pull(ctx, hard context.Context, cons jetstream.Consumer, jobs *sync.WaitGroup) {
	// One long-lived goroutine per slot: a goroutine per job would grow its
	// stack anew for every job (the API call's chain is deep), which the
	// profile showed as runtime.newstack under net/http. The channel holds
	// the prefetched jobs: the pull loop never blocks on it, since it
	// takes no more than there is room for.
	//
	// A slot that has published a job's result event goes on to its next
	// job, and a goroutine of the job's own waits for JetStream's
	// confirmation and acks it: as many as there are jobs waiting, and no
	// more. Those jobs still count as held, so the worker never holds more
	// than its slots and prefetch.
	queue := make(chan *task, w.capacity())
	defer close(queue)
	for range w.cfg.Concurrency {
		jobs.Go(func() {
			for t := range queue {
				if p := w.handle(ctx, t); p != nil {
					jobs.Go(func() {
						w.confirm(p)
						w.release(t)
					})
					continue
				}
				w.release(t)
			}
		})
	}
	// A pull that keeps failing is logged once per interval, not per try.
	errLog := rate.Sometimes{Interval: 10 * time.Second}
	for ctx.Err() == nil {
		n, wait := w.pullable()
		if n == 0 {
			w.sleep(ctx, wait)
			w.recheckCredentials(ctx)
			continue
		}
		end := w.fetchStarted()
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(w.cfg.PullWait))
		if err != nil {
			close(end)
			errLog.Do(func() { w.log.Error().Err(err).Msg("pulling jobs failed; retrying") })
			w.sleep(ctx, time.Second)
			continue
		}
		for msg := range batch.Messages() {
			// One that arrives after shutdown began is handed straight
			// back by its slot.
			t := w.take(hard, msg)
			if t == nil {
				continue
			}
			w.inflight.Add(1)
			w.cfg.Metrics.JobStarted()
			queue <- t
		}
		close(end)
		if err := batch.Error(); err != nil && !benignFetchError(err) {
			errLog.Do(func() { w.log.Warn().Err(err).Msg("pull request ended with an error") })
		}
	}
}

// prefetch is how many jobs beyond its slots the worker holds, waiting for
// a slot or for their result event's confirmation: its concurrency, at
// least 8, so that a worker of few slots still fetches in batches rather
// than one round trip per job, and at most 64: at high concurrency 64 jobs
// outlast a fetch's round trip many times over, and each job held costs
// memory (at concurrency 256, a prefetch of 256 cost 1.7 MiB of peak RSS).
func (w *Worker) prefetch() int { return prefetchFor(w.cfg.Concurrency) }

func prefetchFor(concurrency int) int { return min(max(concurrency, 8), 64) }

// capacity is how many jobs the worker holds at most: in its slots,
// prefetched, or waiting for their result event's confirmation.
func (w *Worker) capacity() int { return w.cfg.Concurrency + w.prefetch() }

func (w *Worker) fetchStarted() chan struct{} {
	end := make(chan struct{})
	w.fetchMu.Lock()
	w.fetchEnd = end
	w.fetchMu.Unlock()
	return end
}

// awaitFetchEnd waits for the end of this worker's pull request in
// progress, if any. A job handed back while that request waits on the
// server would be delivered straight back to it, and back again, for as
// long as the request lasts: handed back after it, the copy goes to
// another worker's request (or to this worker's next probe).
func (w *Worker) awaitFetchEnd(ctx context.Context) {
	w.fetchMu.Lock()
	end := w.fetchEnd
	w.fetchMu.Unlock()
	if end == nil {
		return
	}
	// The request expires after PullWait; the slack covers a slow server.
	t := time.NewTimer(w.cfg.PullWait + time.Second)
	defer t.Stop()
	select {
	case <-end:
	case <-ctx.Done():
	case <-t.C:
	}
}

func benignFetchError(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages) ||
		errors.Is(err, context.DeadlineExceeded)
}

// release lets go of a job done with: handed back, or acked.
func (w *Worker) release(t *task) {
	t.endTrace()
	w.tracked.Delete(t)
	w.inflight.Add(-1)
	w.cfg.Metrics.JobEnded()
	w.signal()
}

func (w *Worker) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Worker) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-w.wake:
	case <-t.C:
	}
}

// pullable says how many jobs may be pulled now, or how long to wait
// before asking again (a wake-up, when a job ends, may come sooner).
func (w *Worker) pullable() (int, time.Duration) {
	const idle = time.Second
	now := time.Now()
	if until := w.gate.paused(); now.Before(until) {
		return 0, until.Sub(now)
	}
	// State moves an open breaker whose timeout is over to half-open.
	if w.breaker.State() == gobreaker.StateOpen {
		return 0, max(time.Until(w.gate.openUntil()), 10*time.Millisecond)
	}
	// Room counts the prefetched jobs, and those whose result event is
	// being confirmed. Pulling only once a quarter of the room is free
	// keeps batches large (a Fetch costs a subscription and a round trip)
	// while the jobs still held keep every slot busy.
	capacity := w.capacity()
	free := capacity - int(w.inflight.Load())
	if free < (capacity+3)/4 && w.inflight.Load() > 0 {
		return 0, idle
	}
	switch cannot, _ := w.ab.state(); {
	case cannot == CredentialsUnreadable && w.creds != nil:
		// No job could tell more than the check in the pull loop does.
		return 0, idle
	case cannot != Able:
		// One job probes: the breaker's half-open call, or the first call
		// with credentials that were rejected or unreadable. A job in hand
		// is that probe already.
		if w.inflight.Load() > 0 {
			return 0, idle
		}
		free = 1
	}
	if free <= 0 {
		return 0, idle
	}
	return free, 0
}

// recheckCredentials asks the Deleter, while the credentials are
// unreadable, whether they can be read again. Any other answer (a token,
// or a token endpoint that refuses) ends the state: the next job finds out
// the rest.
func (w *Worker) recheckCredentials(ctx context.Context) {
	if cannot, _ := w.ab.state(); cannot != CredentialsUnreadable || w.creds == nil || ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.APITimeout)
	defer cancel()
	err := w.creds.CheckCredentials(ctx)
	switch {
	case errors.Is(err, tallyfy.ErrCredentialsUnreadable):
		w.ab.setUnreadable(tallyfy.OneLine(err.Error(), maxErrorHeader))
	case ctx.Err() != nil:
		// Shutdown, or a check that took too long: says nothing.
	default:
		w.ab.setUnreadable("")
	}
}
