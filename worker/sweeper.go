package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// sweeperQueue makes each advisory reach one worker of the pool.
const sweeperQueue = "tallyfy-deleter-sweeper"

// maxDeliveriesAdvisory is the server's message when a job passed the
// consumer's MaxDeliver.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// advisorySweeper listens for jobs stranded past their delivery limit: a
// worker killed on a job's last delivery, an ack wait that ran out. Each is
// dead-lettered max_deliveries and removed from the jobs stream, by one
// worker of the pool (a queue group; a second attempt is de-duplicated by
// its Nats-Msg-Id anyway).
type advisorySweeper struct {
	p   sweeperParams
	sub subscription

	mu      sync.Mutex
	stopped bool
	running sync.WaitGroup // callbacks in progress
}

// subscription is the part of *nats.Subscription the sweeper uses.
type subscription interface {
	Unsubscribe() error
}

type sweeperParams struct {
	conn             *nats.Conn
	stream, consumer string
	log              *zerolog.Logger
	sweep            func(seq uint64, deliveries int)
}

func newAdvisorySweeper(p sweeperParams) *advisorySweeper {
	return &advisorySweeper{p: p}
}

// start subscribes to the advisories.
func (s *advisorySweeper) start() error {
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", s.p.stream, s.p.consumer)
	sub, err := s.p.conn.QueueSubscribe(subject, sweeperQueue, s.handle)
	if err != nil {
		return err
	}
	s.sub = sub
	return nil
}

// shutdown unsubscribes, marks the sweeper stopped, and waits for the
// callbacks admitted before that; one that comes later does nothing.
// Unsubscribe alone does not wait: a sweep could still be running after
// Run returned, on a connection its caller is closing.
func (s *advisorySweeper) shutdown() {
	if err := s.sub.Unsubscribe(); err != nil {
		s.p.log.Warn().Err(err).Msg("stopping the sweeper")
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.running.Wait()
}

// enter admits a callback, unless shutdown has begun; an admitted callback
// calls running.Done when it ends.
func (s *advisorySweeper) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.running.Add(1)
	return true
}

// handle sweeps the job one advisory names.
func (s *advisorySweeper) handle(m *nats.Msg) {
	if !s.enter() {
		return
	}
	defer s.running.Done()
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
		s.p.log.Warn().Str("advisory", tallyfy.OneLine(string(m.Data), 512)).Msg("unreadable max-deliveries advisory")
		return
	}
	s.p.sweep(adv.StreamSeq, adv.Deliveries)
}

// sweepOne dead-letters the stranded job seq and removes it.
func (w *Worker) sweepOne(seq uint64, deliveries int) {
	ctx, cancel := w.jsContext()
	defer cancel()
	stream, err := w.js.Stream(ctx, w.cfg.JobsStream)
	if err != nil {
		w.log.Error().Err(err).Uint64("job_seq", seq).Msg("sweeper: cannot read the jobs stream")
		return
	}
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return // acked or swept already
	}
	if err != nil {
		w.log.Error().Err(err).Uint64("job_seq", seq).Msg("sweeper: cannot read the stranded job; it stays in the stream")
		return
	}
	job, _ := DecodeJob(raw.Data, w.cfg.DefaultOrg)
	jobSeq, prior := identity(raw.Header, seq)
	// The dead letter and result event carry the job's trace context on.
	ctx = withTraceOf(ctx, raw.Header)
	var span trace.Span
	if w.tracer != nil {
		attrs := appendJobAttrs([]attribute.KeyValue{attrJobSeq.Int64(int64(jobSeq))}, job)
		ctx, span = w.tracer.Start(ctx, "sweep "+w.cfg.JobsSubject, trace.WithAttributes(attrs...))
		defer span.End()
	}
	tc := trace.SpanContextFromContext(ctx)
	res := Result{
		OrgID:     job.OrgID,
		RunID:     job.RunID,
		RequestID: job.RequestID,
		Outcome:   OutcomeDeadLettered,
		Reason:    ReasonMaxDeliveries,
		Error:     fmt.Sprintf("delivered %d times without an outcome: the worker holding its last delivery stopped or lost it", prior+deliveries),
		Attempts:  prior + deliveries,
		JobSeq:    jobSeq,
		Worker:    w.cfg.WorkerID,
		At:        time.Now().UTC(),
	}
	if tc.HasTraceID() {
		res.TraceID = tc.TraceID().String()
	}
	if span != nil {
		span.SetAttributes(attrOutcome.String(string(res.Outcome)), attrReason.String(string(res.Reason)),
			attrAttempt.Int(res.Attempts))
		span.SetStatus(codes.Error, string(res.Reason))
	}
	if err := w.record(ctx, res, raw.Data); err != nil {
		w.cfg.Metrics.PublishFailed(kindDeadLetter)
		w.log.Error().Err(err).Uint64("job_seq", seq).Msg("sweeper: could not record the stranded job; it stays in the stream")
		return
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		w.log.Error().Err(err).Uint64("job_seq", seq).Msg("sweeper: dead-lettered, but could not remove the job from the stream")
	}
	w.cfg.Metrics.JobFinished(res.Outcome, res.Reason, time.Since(raw.Time))
	ev := w.log.Warn()
	for k, v := range map[string]string{"org_id": res.OrgID, "run_id": res.RunID, "request_id": res.RequestID, "trace_id": res.TraceID} {
		if v != "" {
			ev = ev.Str(k, v)
		}
	}
	ev.Uint64("job_seq", jobSeq).Int("attempt", prior+deliveries).Str("outcome", string(res.Outcome)).
		Str("reason", string(res.Reason)).Str("error", res.Error).Msg("job finished")
}
