package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

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

// Archiver archives a run (Tallyfy's soft delete), which a permanent delete
// requires first. Same rules as Deleter; archiving an archived run
// succeeds. Needed only with Config.ArchiveFirst other than ArchiveNever.
// *tallyfy.Client satisfies it.
type Archiver interface {
	ArchiveRun(ctx context.Context, orgID, runID string) (*tallyfy.Response, error)
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
	cfg      Config
	policy   Policy
	js       jetstream.JetStream
	api      Deleter
	log      *zerolog.Logger
	checker  RunChecker
	archiver Archiver           // nil with ArchiveNever
	creds    CredentialsChecker // nil when the Deleter cannot tell
	breaker  *gobreaker.CircuitBreaker[*tallyfy.Response]
	gate     gate
	limiter  *limiter
	ab       ability
	// tracer makes the spans; nil without Config.TracerProvider.
	tracer      trace.Tracer
	jobSpanName string

	allowAll bool
	allowed  map[string]bool

	inflight atomic.Int64
	// wake tells the pull loop that something it waits for may have
	// changed: a slot freed, or the worker's ability to call Tallyfy.
	wake chan struct{}
	// roomFreed tells consume, waiting for room, that a job
	// has left the worker's hands.
	roomFreed chan struct{}
	// stopping is set when shutdown begins.
	stopping atomic.Bool
	// consumeErrLog logs the pull's errors once per interval.
	consumeErrLog rate.Sometimes
	// confirmClock bounds the waits for result events' confirmations
	// (see awaitAck); it ticks from Run until the jobs are done.
	confirmClock *periodClock
	// acker double-acks the jobs whose record is confirmed.
	acker *acker

	tracked sync.Map // *task → struct{}, for ack-wait heartbeats

	// fetchEnd is closed when the pull request in progress ends; see
	// awaitFetchEnd.
	fetchMu  sync.Mutex
	fetchEnd chan struct{}

	bound atomic.Bool
}

// JetStreamOptions are the options of the JetStream a worker with cfg
// should be given (see New): its asynchronous publishes time out after
// cfg's PublishTimeout, so that a confirmation that never comes does not
// stay pending in it, and as many may be pending as the worker holds jobs.
func JetStreamOptions(cfg Config) []jetstream.JetStreamOpt {
	cfg = cfg.withDefaults()
	held := MaxHeld(cfg.Concurrency) + pullBufferFor(cfg.Concurrency)
	return []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		jetstream.WithPublishAsyncMaxPending(max(held, 4000)),
	}
}

// New checks cfg and builds a worker. js must be connected; api is called
// through the worker's circuit breaker. The worker publishes result events
// with js.PublishMsgAsync and waits at most Config.PublishTimeout for each
// confirmation when js is built with JetStreamOptions (twice that at most
// otherwise).
func New(js jetstream.JetStream, api Deleter, cfg Config) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || api == nil {
		return nil, errors.New("worker: JetStream and Deleter are required")
	}
	cfg = cfg.withDefaults()
	w := &Worker{
		cfg:           cfg,
		policy:        cfg.policy(),
		js:            js,
		api:           api,
		log:           cfg.Logger,
		allowed:       map[string]bool{},
		wake:          make(chan struct{}, 1),
		roomFreed:     make(chan struct{}, 1),
		consumeErrLog: rate.Sometimes{Interval: 10 * time.Second},
		confirmClock:  newPeriodClock(),
		acker:         newAcker(js.Conn()),
		limiter:       newLimiter(cfg.RateLimit, cfg.RateBurst),
		tracer:        tracerOf(cfg.TracerProvider),
		// OpenTelemetry's name for a consumer's span: what it does, and where from.
		jobSpanName: "process " + cfg.JobsSubject,
	}
	w.creds, _ = api.(CredentialsChecker)
	w.ab = ability{log: cfg.Logger, metrics: cfg.Metrics, changed: func() { w.gate.changed(); w.signal() }}
	if cfg.VerifyNotFound {
		rc, ok := api.(RunChecker)
		if !ok {
			return nil, fieldErrorf("worker: {VerifyNotFound} needs an API client that can read runs")
		}
		w.checker = rc
	}
	if cfg.ArchiveFirst != ArchiveNever {
		ar, ok := api.(Archiver)
		if !ok {
			return nil, fieldErrorf("worker: {ArchiveFirst} %s needs an API client that can archive runs", string(cfg.ArchiveFirst))
		}
		w.archiver = ar
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
// jobs finish within Config.ShutdownTimeout, hands back at once what could
// not finish (a copy published again, see returnJob; a nak if that fails),
// and returns nil. An error means the worker could not start. Once Run has
// returned nothing of the worker runs on: its background duties have
// stopped, and a sweep of a stranded job that was in progress has ended (a
// sweep is bounded by Config.PublishTimeout).
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
	// The duties outlive the pull loop: in-flight jobs still need their
	// heartbeats.
	var duties sync.WaitGroup
	hb := newHeartbeater(heartbeaterParams{ackWait: w.cfg.AckWait, tasks: &w.tracked})
	cw := newConsumerWatcher(watcherParams{consumer: cons, interval: w.cfg.BacklogInterval,
		metrics: w.cfg.Metrics, jsContext: w.jsContext, sweepStranded: w.sweepStranded})
	sw := newAdvisorySweeper(sweeperParams{conn: w.js.Conn(), stream: w.cfg.JobsStream,
		consumer: w.cfg.Consumer, log: w.log, sweep: w.sweepOne})
	// The acker listens first: a failure then has nothing else to stop.
	if err := w.acker.start(); err != nil {
		return fmt.Errorf("listening for ack confirmations: %w", err)
	}
	clockDone := make(chan struct{})
	hb.start(&duties)
	cw.start(&duties)
	// The same clock times out the acks whose confirmation has not come.
	w.confirmClock.start(&duties, w.cfg.PublishTimeout, clockDone, w.acker.expire)
	if err := sw.start(); err != nil {
		cw.shutdown()
		hb.shutdown()
		close(clockDone)
		duties.Wait()
		w.acker.stop()
		return fmt.Errorf("listening for max-deliveries advisories: %w", err)
	}

	var jobs sync.WaitGroup
	w.pull(ctx, hard, cons, &jobs)
	w.awaitJobs(&jobs, cancelHard)
	w.acker.stop()
	sw.shutdown()
	cw.shutdown()
	hb.shutdown()
	close(clockDone)
	duties.Wait()
	w.log.Info().Msg("worker stopped")
	return nil
}

// awaitJobs waits for the jobs in flight to finish. When the grace period
// ends first it cancels hard, which cuts their calls short and hands their
// jobs back, and waits for that.
func (w *Worker) awaitJobs(jobs *sync.WaitGroup, cancelHard context.CancelFunc) {
	w.log.Info().Int64("in_flight", w.inflight.Load()).Dur("timeout_ms", w.cfg.ShutdownTimeout).Msg("shutting down: pulling stopped, waiting for jobs in flight")
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
}
