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

// pull takes jobs while ctx lives. While the worker can call Tallyfy and
// no pause runs, a prefetching pull keeps pull requests open on the
// server and renews them as jobs are taken, so that a slot never waits a round
// trip for its next job (see consume); it holds at most its slots' jobs and
// its prefetch (see prefetchFor). Otherwise it takes none while pulling is
// paused or the breaker is open, and one at a time (a probe) while the
// worker cannot call Tallyfy otherwise.
func (w *Worker) pull(ctx, hard context.Context, cons jetstream.Consumer, jobs *sync.WaitGroup) {
	// One long-lived goroutine per slot: a goroutine per job would grow its
	// stack anew for every job (the API call's chain is deep), which the
	// profile showed as runtime.newstack under net/http. The channel holds
	// the prefetched jobs: nothing that feeds it blocks on it, since it
	// has room for all the jobs the worker may hold (see capacity).
	//
	// A slot that has published a job's result event goes on to its next
	// job, and the confirmer waits for JetStream's confirmation and acks
	// it (see confirmer). Those jobs still count as held, so the worker
	// never holds more than its slots and prefetch; confirms has room for
	// them all, as queue has.
	queue := make(chan *task, w.capacity())
	defer close(queue)
	confirms := make(chan *pending, w.capacity())
	var slots sync.WaitGroup
	for range w.cfg.Concurrency {
		slots.Go(func() { w.slot(ctx, queue, confirms, jobs) })
	}
	jobs.Go(func() {
		slots.Wait()
		close(confirms)
	})
	jobs.Go(func() { w.confirmer(confirms, jobs) })
	defer w.stopping.Store(true)
	// A pull that keeps failing is logged once per interval, not per try.
	errLog := rate.Sometimes{Interval: 10 * time.Second}
	for ctx.Err() == nil {
		if w.flowing() {
			if w.inflight.Load() >= int64(w.room()) {
				// A pull drained for want of room: the next waits for it.
				w.sleep(ctx, time.Second)
				continue
			}
			if err := w.consume(ctx, hard, cons, queue); err != nil {
				errLog.Do(func() { w.log.Error().Err(err).Msg("pulling jobs failed; retrying") })
				w.sleep(ctx, time.Second)
			}
			continue
		}
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

// slot runs the jobs of one slot, from queue until it is closed.
//
// It waits for each job with stackReserve bytes of its stack in use: the
// garbage collector halves the stack of a goroutine using less than a
// quarter of it, and a slot parked on the queue with a shallow stack had
// its stack shrunk at every collection, to grow it again (copying it) on
// its next job's API call, one copy per slot per collection.
func (w *Worker) slot(ctx context.Context, queue <-chan *task, confirms chan<- *pending, jobs *sync.WaitGroup) {
	var reserve [stackReserve]byte
	w.runSlot(ctx, queue, confirms, jobs, reserve[:])
}

// stackReserve is the stack a slot keeps in use while it waits: a quarter
// of the 8 KiB most jobs need, so that it is never shrunk below that. At
// concurrency 256 (`tallyfy-deleter bench --memory --concurrency 256
// --memory-jobs 100000`, alternating rounds) 2 KiB took CPU per job from
// 0.93-0.97 to 0.87-0.88 s per 10k jobs for 0.8 MiB more peak RSS; 4 KiB
// doubled the slots' stacks to 16 KiB, 3 MiB more.
const stackReserve = 2 << 10

// runSlot is not inlined, so that the reserve stays in slot's frame,
// beneath the jobs' calls; reading it at the end keeps it there.
//
//go:noinline
func (w *Worker) runSlot(ctx context.Context, queue <-chan *task, confirms chan<- *pending, jobs *sync.WaitGroup, reserve []byte) {
	for t := range queue {
		if p := w.handle(ctx, t); p != nil {
			// Done once the job has left the worker's hands, see
			// confirmer.
			jobs.Add(1)
			confirms <- p
			continue
		}
		w.release(t)
	}
	_ = reserve[len(reserve)-1]
}

// consume takes jobs with a prefetching pull for as long as the worker can
// call Tallyfy, no pause runs, and ctx lives; then it drains the pull (no
// new pull request, and the jobs already on their way are still taken)
// and returns once it has ended. An error means the pull could not start,
// or ended by itself (the connection closed, the consumer was deleted).
//
// The pull is nats.go's Messages iterator: it keeps up to pullBuffer()
// jobs asked for, asking again as they are taken, so that a slot never
// waits a round trip for its next job. Each job taken comes into the
// worker's hands (its ack wait kept alive from then on), once there is
// room: at most room() jobs in the worker's hands, and at most pullBuffer()
// more on their way from the server. A pull that ends is first withdrawn
// (see withdraw), then drained; from the withdrawal on it does not wait
// for room, so the drain ends at once: the jobs it takes then are handed
// back by their slot, or kept through a pause.
//
// Not a Consume: nats.go (1.55, 1.56) skips renewing a pull while its
// previous pull request is still being sent, and a Consume only looks
// again as the next job arrives; when every job asked for arrived
// meanwhile, none comes until two heartbeats are missed, a second lost
// (seen at concurrency 256 in one bench round in three). The iterator
// looks again on every call to Next, so a Next that waits at most
// consumeKick ends such a gap within that. The iterator's own buffer holds
// pullBuffer() jobs, which is all it asks for; only a pull renewed after
// heartbeats missed while the server still held the last one (the worker
// starved of CPU for a second) could bring more, and nats.go drops what
// does not fit: those jobs come back after their ack wait, a delivery
// spent, where a Consume would have queued them.
func (w *Worker) consume(ctx, hard context.Context, cons jetstream.Consumer, queue chan<- *task) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(w.pullBuffer()),
		jetstream.PullExpiry(w.consumeExpiry()),
		jetstream.PullHeartbeat(consumeHeartbeat))
	if err != nil {
		return err
	}
	end := w.fetchStarted()
	defer close(end)

	// draining is closed when the pull is to end; crowded when the jobs on
	// their way may have waited a quarter of the ack wait (see bufferAge);
	// withdrawing when the loop is to stop asking for jobs, and stopped
	// once it has (see withdraw).
	draining := make(chan struct{})
	crowded := make(chan struct{})
	withdrawing := make(chan struct{})
	stopped := make(chan struct{})
	// The watcher owns the pull's end: once the worker stops flowing or
	// ctx ends it withdraws the pull, then drains the iterator; when the
	// jobs crowd, or the iterator ended by itself (done), it drains it at
	// once.
	done := make(chan struct{})
	withdrawn, cutWait := context.WithCancel(context.Background())
	defer cutWait()
	var watch sync.WaitGroup
	watch.Go(func() {
		w.awaitFlowEnd(ctx, crowded, done)
		if ctx.Err() != nil {
			w.stopping.Store(true)
		}
		if !closed(crowded) && !closed(done) {
			w.withdraw(withdrawing, cutWait, stopped, done)
		}
		close(draining)
		it.Drain()
	})
	defer func() {
		close(done)
		watch.Wait()
	}()

	room := int64(w.room())
	age := newBufferAge(w.pullBuffer())
	roomTimer := time.NewTimer(time.Hour)
	roomTimer.Stop()
	var quiet time.Duration
	for {
		select {
		case <-withdrawing:
			// Next may ask for more jobs: none until the drain.
			if !closed(stopped) {
				close(stopped)
			}
			<-draining
		default:
		}
		// Waits of consumeKick close the gap above; once no job has come
		// for two heartbeats, a longer wait lets the iterator notice
		// missed heartbeats (a pull request the server lost) and ask
		// again.
		wait := consumeKick
		var msg jetstream.Msg
		var err error
		if quiet >= 2*consumeHeartbeat {
			// A long wait, which a withdrawal cuts short (one context
			// per wait, only while no job comes).
			wait = 3 * consumeHeartbeat
			nctx, cancel := context.WithTimeout(withdrawn, wait)
			msg, err = it.Next(jetstream.NextContext(nctx))
			cancel()
		} else {
			msg, err = it.Next(jetstream.NextMaxWait(wait))
		}
		switch {
		case err == nil:
			quiet = 0
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			select {
			case <-draining:
				return nil
			default:
				return errors.New("the pull of jobs ended by itself")
			}
		case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			quiet += wait
			continue
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			// The iterator asks again by itself on the next call.
			w.log.Debug().Err(err).Msg("pull renewed after missed heartbeats")
			quiet = 0
			continue
		default:
			w.consumeErrLog.Do(func() { w.log.Warn().Err(err).Msg("pulling jobs met an error") })
			continue
		}
		t := w.take(hard, msg)
		if t == nil {
			continue
		}
		var waited time.Duration
		if w.inflight.Load() >= room {
			waited = w.awaitRoom(room, withdrawing, crowded, roomTimer, w.cfg.AckWait/4-age.total())
		}
		// The jobs behind this one on their way are not in the worker's
		// hands: their ack wait runs while the loop waits.
		switch old := age.add(waited); {
		case old >= w.cfg.AckWait/4:
			select {
			case <-crowded:
			default:
				// Only this loop closes it.
				close(crowded)
			}
			fallthrough
		case old >= w.cfg.AckWait/8:
			// This one may have waited that long too: reset its ack wait
			// now rather than at the next heartbeat.
			if t.msg.InProgress() == nil {
				t.lastTouch.Store(time.Now().UnixNano())
			}
		}
		w.inflight.Add(1)
		w.cfg.Metrics.JobStarted()
		queue <- t
	}
}

// awaitFlowEnd returns once the worker stops flowing (see flowing), ctx
// ends, crowded or done is closed.
func (w *Worker) awaitFlowEnd(ctx context.Context, crowded, done <-chan struct{}) {
	for ctx.Err() == nil && w.flowing() {
		changed := w.gate.changes()
		if !w.flowing() {
			return
		}
		select {
		case <-ctx.Done():
		case <-changed:
			continue
		case <-crowded:
		case <-done:
		}
		return
	}
}

// withdraw ends the pull's asking for jobs before it is drained: it tells
// the loop to stop calling Next (which may ask again) and, once it has,
// waits for the pull requests still open on the server to expire. A
// drain unsubscribes the pull's inbox, and a job the server was sending to
// an open request as it did would find no subscriber: JetStream redelivers
// it at once, but counts that delivery when it was the job's first, so a
// job on max deliver 1 was dead-lettered max_deliveries, and any other
// lost a delivery, for a worker withdrawing its pull (a pause, a breaker
// that opened, credentials it cannot use, shutdown). The jobs that arrive
// meanwhile wait in the iterator's buffer for the drain, which takes them
// all. cut ends the loop's wait in Next, if any; done ends the wait (the
// pull ended by itself).
func (w *Worker) withdraw(withdrawing chan struct{}, cut func(), stopped, done <-chan struct{}) {
	close(withdrawing)
	cut()
	select {
	case <-stopped:
	case <-done:
		return
	}
	t := time.NewTimer(w.withdrawWait())
	defer t.Stop()
	select {
	case <-t.C:
	case <-done:
	}
}

// withdrawWait is how long a withdrawal waits for the pull requests still
// open on the server: until they expire, but never more than a quarter of
// the ack wait. The jobs that arrive meanwhile are not yet in the worker's
// hands, their ack wait running: with an ack wait of 1 s, waiting out the
// requests' 1.25 s let the server give up on a job's last delivery in the
// buffer (dead-lettered max_deliveries by the sweeper while the worker went
// on to delete it). Under an ack wait of 5 s a withdrawal may therefore
// still cut off a job on its way, at the price of a delivery.
func (w *Worker) withdrawWait() time.Duration {
	return min(w.consumeExpiry()+withdrawSlack, w.cfg.AckWait/4)
}

// withdrawSlack covers the time a pull request takes to reach the server
// and to be answered when it expires.
const withdrawSlack = 250 * time.Millisecond

// consumeExpiry is how long the pull's requests wait on the server: the
// least nats.go takes, since a withdrawal waits for them (see withdraw).
// A pull that flows renews them long before; an idle one asks again every
// second.
func (w *Worker) consumeExpiry() time.Duration { return time.Second }

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// awaitRoom waits until the worker has fewer than room jobs in its hands,
// the pull is withdrawn (ending is closed) or crowded, or at most limit,
// and says how long it waited.
// timer is consume's own, stopped: one per pull rather than one per wait.
func (w *Worker) awaitRoom(room int64, ending, crowded chan struct{}, timer *time.Timer, limit time.Duration) time.Duration {
	start := time.Now()
	timer.Reset(max(limit, 0))
	defer timer.Stop()
	for w.inflight.Load() >= room {
		select {
		case <-w.roomFreed:
			continue
		case <-ending:
		case <-crowded:
		case <-timer.C:
		}
		break
	}
	return time.Since(start)
}

// bufferAge bounds how long the jobs in the pull's buffer have waited
// there: consume's waits for room over the last pull buffer's worth of
// jobs (a job delivered at most that many jobs ago waited through them
// all). When it reaches a quarter of the ack wait (a slow API, a long
// pause filling the room), consume drains the pull: its buffered jobs
// come into the worker's hands, kept alive from then on, and the next
// pull starts once there is room again. At latency 0 the waits are
// milliseconds and it never comes near.
type bufferAge struct {
	waits []time.Duration
	next  int
	sum   time.Duration
}

func newBufferAge(n int) *bufferAge { return &bufferAge{waits: make([]time.Duration, max(n, 1))} }

// add records one wait and returns the bound, this wait included.
func (b *bufferAge) add(d time.Duration) time.Duration {
	b.sum += d - b.waits[b.next]
	b.waits[b.next] = d
	b.next = (b.next + 1) % len(b.waits)
	return b.sum
}

func (b *bufferAge) total() time.Duration { return b.sum }

// consumeHeartbeat is how often the server tells an idle pull it is still
// there (the least nats.go takes); two missed renew it (see consume).
const consumeHeartbeat = 500 * time.Millisecond

// consumeKick is the longest a pull that flows waits in Next before
// looking again whether it should ask for more jobs (see consume).
const consumeKick = 20 * time.Millisecond

// flowing says whether the worker takes jobs as fast as its slots free:
// it can call Tallyfy, the breaker is closed, and no pause runs.
func (w *Worker) flowing() bool {
	if time.Now().Before(w.gate.paused()) {
		return false
	}
	// State moves an open breaker whose timeout is over to half-open.
	if w.breaker.State() != gobreaker.StateClosed {
		return false
	}
	cannot, _ := w.ab.state()
	return cannot == Able
}

// prefetchFor is how many jobs beyond its slots a worker holds: its pull
// buffer (jobs asked for, on their way from the server) and its spare room
// (jobs in its hands waiting for a slot, or for their result event's
// confirmation): 32 + 80 = 112 at concurrency 16, 128 + 128 = 256 at 64,
// 256 + 128 = 384 from 128 up.
func prefetchFor(concurrency int) int { return pullBufferFor(concurrency) + spareFor(concurrency) }

// MaxHeld is how many jobs a worker of that concurrency holds at most: in
// its slots, prefetched, or waiting for their result event's confirmation.
// Each counts against the consumer's max ack pending, as unacked.
func MaxHeld(concurrency int) int { return concurrency + prefetchFor(concurrency) }

// pullBuffer is how many jobs the pull keeps asked for: on their way
// from the server, or delivered and not yet in the worker's hands. Twice
// the slots, as the bare loop's, so that a slot that frees finds its next
// job in hand however long a pull's round trip takes under load: at
// concurrency 16 a buffer of 16 ran at 0.81 of the bare loop's rate, 32 at
// 0.88; at concurrency 256, 64 at 0.78 and 128 at 0.85 (`tallyfy-deleter
// bench`). At most 256: at concurrency 256 (three runs of 5 rounds each,
// the three binaries alternating) a cap of 128 ran at 0.85, 0.88 and 0.93
// of the bare loop's rate, 256 at 0.92 to 0.95 and 512 at 0.91 to 0.96;
// the worker then waited in the iterator's Next for 1.7 s of a 1.8 s run
// with 128, 0.8 s with 256. Peak RSS with 100,000 jobs waiting moved within
// its noise (35.2 to 36.9 MiB).
func (w *Worker) pullBuffer() int { return pullBufferFor(w.cfg.Concurrency) }

func pullBufferFor(concurrency int) int { return min(max(2*concurrency, 16), 256) }

// spareFor is the room, beyond the slots, for jobs waiting for a slot or
// for their result event's confirmation: the concurrency, at most 64, and
// 64 more. A finished job waits a round trip to JetStream (the publish's
// ack; it leaves as its own ack is sent), milliseconds when the cores
// are busy, so at a high rate the confirmations alone fill tens of places
// whatever the concurrency: at concurrency 16 a spare room of 16 ran at
// 0.84 of the bare loop's rate and 80 at 0.97; at 64, 64 at 0.85 and 128
// at 0.94 (`tallyfy-deleter bench`, latency 0).
func spareFor(concurrency int) int { return min(concurrency, 64) + 64 }

// room is how many jobs the worker has in its hands at most while it
// consumes: its slots' and its spare room's.
func (w *Worker) room() int { return w.cfg.Concurrency + spareFor(w.cfg.Concurrency) }

// capacity is how many jobs the worker can have in its hands: its room,
// and what a draining pull delivers besides (at most the iterator's buffer,
// one pull buffer; twice that is kept as a margin, and the probes' Fetch
// counts its free share from it, see pullable).
func (w *Worker) capacity() int { return w.room() + 2*w.pullBuffer() }

func (w *Worker) fetchStarted() chan struct{} {
	end := make(chan struct{})
	w.fetchMu.Lock()
	w.fetchEnd = end
	w.fetchMu.Unlock()
	return end
}

// awaitFetchEnd waits, when the worker is stopping or cannot take jobs, for
// the end of its pull in progress, if any. A job handed back while the pull
// is open on the server would be delivered straight back to it, and back
// again, for as long as the pull lasts: handed back after it, the copy goes
// to another worker's pull (or to this worker's next probe). A worker that
// takes jobs may take its own copy.
func (w *Worker) awaitFetchEnd(ctx context.Context) {
	if !w.stopping.Load() && w.flowing() {
		return
	}
	w.fetchMu.Lock()
	end := w.fetchEnd
	w.fetchMu.Unlock()
	if end == nil {
		return
	}
	// A Fetch expires after PullWait and a pull drains in a round trip;
	// the slack covers a slow server.
	t := time.NewTimer(max(w.cfg.PullWait, time.Second) + time.Second)
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
	w.leave(t)
}

// leave takes t out of the worker's hands: out of the room and of the ack
// wait's heartbeats.
func (w *Worker) leave(t *task) {
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
	select {
	case w.roomFreed <- struct{}{}:
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
