package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// Deleter permanently deletes one run. It must be safe for concurrent use.
// A nil error means the run is gone (the API answered 2xx). An answer other
// than 2xx is a *tallyfy.APIError; anything else (a timeout, a refused
// connection, a cancelled ctx) is returned as it is. *tallyfy.Client
// satisfies it.
type Deleter interface {
	DeleteRun(ctx context.Context, orgID, runID string) (*tallyfy.Response, error)
}

// RunChecker reads a run, to tell a run that is gone from one the delete
// endpoint answered 404 for although it exists. Same rules as Deleter; a
// nil error means the run exists. Needed only with Config.VerifyNotFound.
type RunChecker interface {
	GetRun(ctx context.Context, orgID, runID string) (*tallyfy.Run, *tallyfy.Response, error)
}

// CredentialsChecker is implemented by a Deleter that can tell, without
// calling the API, whether it has credentials it can read: nil, or an error
// matching tallyfy.ErrCredentialsUnreadable while it has none. A worker
// whose credentials became unreadable asks it about once a second instead
// of bouncing jobs off a token file that cannot be read. *tallyfy.Client
// satisfies it.
type CredentialsChecker interface {
	CheckCredentials(ctx context.Context) error
}

// Worker pulls jobs from the durable consumer and gives each one outcome.
// Build it with New, run it with Run.
type Worker struct {
	cfg     Config
	policy  Policy
	js      jetstream.JetStream
	api     Deleter
	log     *zerolog.Logger
	checker RunChecker
	creds   CredentialsChecker // nil when the Deleter cannot tell
	breaker *gobreaker.CircuitBreaker[*tallyfy.Response]
	gate    gate
	limiter *limiter
	ab      ability

	allowAll bool
	allowed  map[string]bool

	inflight atomic.Int64
	// wake tells the pull loop that something it waits for may have
	// changed: a slot freed, the breaker moved, a pause was set.
	wake chan struct{}

	tracked sync.Map // *task → struct{}, for ack-wait heartbeats

	// fetchEnd is closed when the pull request in progress ends; see
	// awaitFetchEnd.
	fetchMu  sync.Mutex
	fetchEnd chan struct{}

	bound atomic.Bool
}

// task is one message in the worker's hands.
type task struct {
	// hard is cancelled when shutdown's grace period is over.
	hard context.Context
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	// seq is the job's identity: its stream sequence, or that of the job
	// it is a handed-back copy of.
	seq uint64
	// priorAttempts are real attempts at the job before this copy.
	priorAttempts int
	// tried: this delivery is a real attempt, see reachedTallyfy.
	tried     bool
	start     time.Time
	lastTouch atomic.Int64 // unix nanos of the last ack-wait reset
}

// New checks cfg and builds a worker. js must be connected; api is called
// through the worker's circuit breaker.
func New(js jetstream.JetStream, api Deleter, cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || api == nil {
		return nil, errors.New("worker: JetStream and Deleter are required")
	}
	cfg = cfg.withDefaults()
	w := &Worker{
		cfg:     cfg,
		policy:  cfg.policy(),
		js:      js,
		api:     api,
		log:     cfg.Logger,
		allowed: map[string]bool{},
		wake:    make(chan struct{}, 1),
		limiter: newLimiter(cfg.RateLimit, cfg.RateBurst),
	}
	w.creds, _ = api.(CredentialsChecker)
	w.ab = ability{log: cfg.Logger, metrics: cfg.Metrics, changed: func() { w.gate.changed(); w.signal() }}
	if cfg.VerifyNotFound {
		rc, ok := api.(RunChecker)
		if !ok {
			return nil, errors.New("worker: DELETER_VERIFY_NOT_FOUND needs an API client that can read runs")
		}
		w.checker = rc
	}
	w.gate.ch = make(chan struct{})
	for _, o := range cfg.AllowedOrgs {
		if o == "*" {
			w.allowAll = true
		}
		w.allowed[o] = true
	}
	w.breaker = gobreaker.NewCircuitBreaker[*tallyfy.Response](gobreaker.Settings{
		Name:        "tallyfy",
		MaxRequests: 1,
		Timeout:     cfg.BreakerTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= uint32(cfg.BreakerFailures)
		},
		IsSuccessful: func(err error) bool { return !isBreakerFailure(err) },
		IsExcluded:   isBreakerExcluded,
		OnStateChange: func(_ string, from, to gobreaker.State) {
			// Under the breaker's lock: nothing here may call the breaker.
			w.gate.breakerOpened(to, cfg.BreakerTimeout)
			cfg.Metrics.BreakerChanged(to)
			// Open and half-open alternate every breaker timeout while the
			// calls keep failing; the ability log says so once.
			ev := w.log.Info()
			if from != gobreaker.StateClosed && to != gobreaker.StateClosed {
				ev = w.log.Debug()
			}
			ev.Str("from", from.String()).Str("to", to.String()).Msg("circuit breaker changed state")
			w.ab.setBreaker(to)
		},
	})
	return w, nil
}

// Health is a snapshot of what readiness depends on.
type Health struct {
	ConsumerBound bool
	BreakerState  gobreaker.State
	// Unable says why this worker cannot call Tallyfy (Able when it can),
	// and Reason in words, for /readyz.
	Unable   Inability
	Reason   string
	InFlight int
}

// Health reports the worker's state; safe to call at any time.
func (w *Worker) Health() Health {
	h := Health{
		ConsumerBound: w.bound.Load(),
		BreakerState:  w.breaker.State(),
		InFlight:      int(w.inflight.Load()),
	}
	h.Unable, h.Reason = w.ab.state()
	return h
}

// Run provisions (or checks) the streams and the consumer, then works on
// jobs until ctx is cancelled. Shutdown then stops pulling, lets in-flight
// jobs finish within Config.ShutdownTimeout, naks at once what could not
// finish, and returns nil. An error means the worker could not start.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.setup(ctx)
	if err != nil {
		return err
	}
	w.bound.Store(true)
	defer w.bound.Store(false)

	// hard outlives ctx: in-flight jobs keep working through shutdown until
	// the grace period ends.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	var jobs sync.WaitGroup
	// The helpers outlive the pull loop: in-flight jobs still need their
	// heartbeats.
	helpersDone := make(chan struct{})
	var helpers sync.WaitGroup
	helpers.Go(func() { w.heartbeat(helpersDone) })
	helpers.Go(func() { w.watchConsumer(cons, helpersDone) })
	sweeper, err := w.startSweeper()
	if err != nil {
		close(helpersDone)
		helpers.Wait()
		return fmt.Errorf("listening for max-deliveries advisories: %w", err)
	}

	w.pull(ctx, hard, cons, &jobs)

	w.log.Info().Int64("in_flight", w.inflight.Load()).Dur("timeout", w.cfg.ShutdownTimeout).Msg("shutting down: pulling stopped, waiting for jobs in flight")
	finished := make(chan struct{})
	go func() { jobs.Wait(); close(finished) }()
	grace := time.NewTimer(w.cfg.ShutdownTimeout)
	defer grace.Stop()
	select {
	case <-finished:
	case <-grace.C:
		w.log.Warn().Int64("in_flight", w.inflight.Load()).Msg("shutdown timeout: cancelling calls in flight and handing their jobs back")
		cancelHard()
		<-finished
	}
	if err := sweeper.Unsubscribe(); err != nil {
		w.log.Warn().Err(err).Msg("stopping the sweeper")
	}
	close(helpersDone)
	helpers.Wait()
	w.log.Info().Msg("worker stopped")
	return nil
}

// pull takes jobs while ctx lives, never more than there are free slots,
// none while pulling is paused or the breaker is open, and one at a time
// (a probe) while the worker cannot call Tallyfy otherwise.
func (w *Worker) pull(ctx, hard context.Context, cons jetstream.Consumer, jobs *sync.WaitGroup) {
	// One long-lived goroutine per slot: a goroutine per job would grow its
	// stack anew for every job (the API call's chain is deep), which the
	// profile showed as runtime.newstack under net/http.
	msgs := make(chan jetstream.Msg)
	defer close(msgs)
	for range w.cfg.Concurrency {
		jobs.Go(func() {
			for msg := range msgs {
				w.handle(ctx, hard, msg)
				w.jobDone()
			}
		})
	}
	var lastErr time.Time
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
			if time.Since(lastErr) > 10*time.Second {
				w.log.Error().Err(err).Msg("pulling jobs failed; retrying")
				lastErr = time.Now()
			}
			w.sleep(ctx, time.Second)
			continue
		}
		for msg := range batch.Messages() {
			// One that arrives after shutdown began is handed straight
			// back by its slot.
			w.inflight.Add(1)
			w.cfg.Metrics.JobStarted()
			msgs <- msg
		}
		close(end)
		if err := batch.Error(); err != nil && !benignFetchError(err) && time.Since(lastErr) > 10*time.Second {
			w.log.Warn().Err(err).Msg("pull request ended with an error")
			lastErr = time.Now()
		}
	}
}

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

func (w *Worker) jobDone() {
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
// before asking again (a wake-up may come sooner).
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
	free := w.cfg.Concurrency - int(w.inflight.Load())
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
		w.ab.setUnreadable(clean(err.Error(), maxErrorHeader))
	case ctx.Err() != nil:
		// Shutdown, or a check that took too long: says nothing.
	default:
		w.ab.setUnreadable("")
	}
}

// handle gives one message its outcome, or hands it back.
func (w *Worker) handle(stopping, hard context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata; handing it back")
		_ = msg.Nak()
		return
	}
	t := &task{hard: hard, msg: msg, meta: meta, seq: meta.Sequence.Stream, start: time.Now()}
	t.adoptIdentity()
	t.lastTouch.Store(t.start.UnixNano())
	w.tracked.Store(t, struct{}{})
	defer w.tracked.Delete(t)

	job, err := DecodeJob(msg.Data(), w.cfg.DefaultOrg)
	if stopping.Err() != nil {
		// Pulled as shutdown began: another worker takes it now.
		w.giveBack(t, job)
		return
	}
	if err == nil && !w.allowAll && !w.allowed[job.OrgID] {
		err = fmt.Errorf("%w: %s is not in TALLYFY_ALLOWED_ORGS", ErrOrgNotAllowed, job.OrgID)
	}
	if err == nil && w.cfg.DryRun {
		err = ErrDryRun
	}
	callable := err == nil
	a := Attempt{Err: err, Delivered: int(meta.NumDelivered)}
	for {
		var resp *tallyfy.Response
		if callable {
			resp, a.Err, a.BreakerTripped = w.call(hard, job)
			t.tried = t.tried || reachedTallyfy(a.Err)
		}
		d := w.policy.Route(a)
		switch d.Action {
		case ActFinish:
			w.finish(t, job, d, resp, a.Err)
			return
		case ActRetry:
			w.retry(t, job, d, a.Err)
			return
		case ActGiveBack:
			w.giveBack(t, job)
			return
		case ActHandBack:
			if d.Delay > 0 {
				// Rejected credentials: the next probe waits this long.
				w.gate.pause(time.Now().Add(d.Delay))
			}
			w.handBack(t, job, a.Err)
			return
		case ActWaitRateLimit:
			if !w.waitRateLimit(stopping, t, job, d) {
				w.giveBack(t, job)
				return
			}
			if cannot, _ := w.ab.state(); cannot != Able {
				// Became unable while waiting: the pool may not be.
				w.handBack(t, job, nil)
				return
			}
		}
	}
}

// attempts counts every delivery of the job, copies included.
func (t *task) attempts() int { return t.priorAttempts + int(t.meta.NumDelivered) }

// adoptIdentity makes a handed-back copy (see giveBack) report as the job
// it copies: the same job_seq, so the same result and dead-letter IDs, and
// its deliveries counted on.
func (t *task) adoptIdentity() {
	t.seq, t.priorAttempts = identity(t.msg.Headers(), t.seq)
}

// identity is the job sequence and earlier deliveries of the message at
// seq: its own, or those of the job it is a handed-back copy of.
func identity(h nats.Header, seq uint64) (uint64, int) {
	orig, err := strconv.ParseUint(h.Get(HeaderJobSeq), 10, 64)
	if err != nil || orig == 0 || orig >= seq {
		return seq, 0
	}
	n, err := strconv.Atoi(h.Get(HeaderAttempts))
	if err != nil || n < 0 || n > 1<<20 {
		return seq, 0
	}
	return orig, n
}

// reachedTallyfy says whether a call's request went to Tallyfy with
// credentials it did not refuse, so Tallyfy may have acted on the job: the
// delivery was a real attempt. One refused before it went (breaker,
// unreadable credentials) or refused without being looked at (401, 429)
// was not.
func reachedTallyfy(err error) bool {
	for _, not := range []error{gobreaker.ErrOpenState, gobreaker.ErrTooManyRequests,
		tallyfy.ErrCredentialsUnreadable, tallyfy.ErrUnauthorized, tallyfy.ErrRateLimited} {
		if errors.Is(err, not) {
			return false
		}
	}
	return true
}

// call makes one API call through the breaker. tripped is true when the
// call failed and the breaker is not closed afterwards.
func (w *Worker) call(ctx context.Context, job Job) (resp *tallyfy.Response, err error, tripped bool) {
	resp, err = w.through(ctx, func(ctx context.Context) (*tallyfy.Response, error) {
		return w.api.DeleteRun(ctx, job.OrgID, job.RunID)
	})
	if w.checker != nil && errors.Is(err, tallyfy.ErrNotFound) {
		deleteErr := err
		_, err = w.through(ctx, func(ctx context.Context) (*tallyfy.Response, error) {
			_, r, err := w.checker.GetRun(ctx, job.OrgID, job.RunID)
			return r, err
		})
		switch {
		case err == nil:
			err = fmt.Errorf("%w (%w)", ErrStillExists, deleteErr)
		case errors.Is(err, tallyfy.ErrNotFound):
			err = deleteErr
		}
	}
	w.noteCredentials(err)
	tripped = err != nil && isBreakerFailure(err) && w.breaker.State() != gobreaker.StateClosed
	return resp, err, tripped
}

// noteCredentials learns from one call's error whether the credentials
// could be read and whether Tallyfy accepted them.
func (w *Worker) noteCredentials(err error) {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) || errors.Is(err, context.Canceled) {
		return // no call was made, or its end was not heard
	}
	if errors.Is(err, tallyfy.ErrCredentialsUnreadable) {
		w.ab.setUnreadable(clean(err.Error(), maxErrorHeader))
		return
	}
	w.ab.setUnreadable("")
	var apiErr *tallyfy.APIError
	switch {
	case errors.Is(err, tallyfy.ErrUnauthorized):
		w.ab.setRejected(true)
	case err == nil, errors.As(err, &apiErr) && apiErr.StatusCode >= 400 && apiErr.StatusCode < 500:
		// The API took the request past authentication. A 5xx from
		// something in front of it says nothing about the credentials.
		w.ab.setRejected(false)
	}
}

// through makes one API request: after the rate limiter, inside the
// breaker, within the API timeout.
func (w *Worker) through(ctx context.Context, req func(context.Context) (*tallyfy.Response, error)) (*tallyfy.Response, error) {
	if err := w.limiter.wait(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.APITimeout)
	defer cancel()
	resp, err := w.breaker.Execute(func() (*tallyfy.Response, error) { return req(ctx) })
	if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
		w.limiter.answered(errors.Is(err, tallyfy.ErrRateLimited))
	}
	return resp, err
}

// waitRateLimit keeps a job in hand for a 429's Retry-After, pulling
// nothing meanwhile; every worker of the pool shares Tallyfy's limit, so
// handing the job on would not help. It ends early when the worker becomes
// unable to call Tallyfy (the caller then hands the job back), and returns
// false when shutdown begins first.
func (w *Worker) waitRateLimit(stopping context.Context, t *task, job Job, d Decision) bool {
	until := time.Now().Add(d.Delay)
	w.gate.pause(until)
	w.jobLog(w.log.Warn(), t, job).Int("status", d.Status).Dur("retry_after", d.Delay).Msg("rate limited by Tallyfy; pausing pulls and retrying this job after Retry-After")
	for {
		changed := w.gate.changes()
		if cannot, _ := w.ab.state(); cannot != Able {
			return true
		}
		left := time.Until(until)
		if left <= 0 {
			return true
		}
		timer := time.NewTimer(left)
		select {
		case <-stopping.Done():
			timer.Stop()
			return false
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// heartbeat resets the ack wait of every job held longer than a third of
// it, so a slow API or a long wait never lets the server hand the job to a
// second worker while the first still has it.
func (w *Worker) heartbeat(done <-chan struct{}) {
	every := max(w.cfg.AckWait/3, 100*time.Millisecond)
	tick := time.NewTicker(every / 2)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-tick.C:
			w.tracked.Range(func(k, _ any) bool {
				t := k.(*task)
				if now.UnixNano()-t.lastTouch.Load() >= int64(every) {
					if err := t.msg.InProgress(); err == nil {
						t.lastTouch.Store(now.UnixNano())
					}
				}
				return true
			})
		}
	}
}

// gate holds the breaker's timing, which gobreaker does not expose, the
// pull pause set by 429 and 401 answers, and a channel closed at every
// change of the worker's ability to call Tallyfy.
type gate struct {
	mu        sync.Mutex
	ch        chan struct{} // closed at the next change
	openTill  time.Time
	pauseTill time.Time
}

func (g *gate) breakerOpened(to gobreaker.State, timeout time.Duration) {
	if to != gobreaker.StateOpen {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.openTill = time.Now().Add(timeout)
}

func (g *gate) changed() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.ch)
	g.ch = make(chan struct{})
}

// changes is closed at the next change.
func (g *gate) changes() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

func (g *gate) openUntil() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.openTill
}

func (g *gate) pause(until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if until.After(g.pauseTill) {
		g.pauseTill = until
	}
}

func (g *gate) paused() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pauseTill
}
