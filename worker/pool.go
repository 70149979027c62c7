package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the pool shares beyond the consumer: one sweep of jobs stranded past
// their delivery limit. There is no pool-wide pause: a worker's breaker
// says that its own calls fail, which a typo in its API URL or a node's
// broken egress does as well as an outage, so each worker backs off alone
// (see ability.go) and hands its jobs to the others.

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

// startSweeper listens for jobs stranded past their delivery limit: a worker
// killed on a job's last delivery, an ack wait that ran out. Each is
// dead-lettered max_deliveries and removed from the jobs stream, by one
// worker of the pool (a queue group; a second attempt is de-duplicated by
// its Nats-Msg-Id anyway).
func (w *Worker) startSweeper() (*nats.Subscription, error) {
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", w.cfg.JobsStream, w.cfg.Consumer)
	return w.js.Conn().QueueSubscribe(subject, sweeperQueue, func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			w.log.Warn().Str("advisory", clean(string(m.Data), 512)).Msg("unreadable max-deliveries advisory")
			return
		}
		w.sweepOne(adv.StreamSeq, adv.Deliveries)
	})
}

// sweepOne dead-letters the stranded job seq and removes it.
func (w *Worker) sweepOne(seq uint64, deliveries int) {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.PublishTimeout)
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
	if err := w.record(ctx, res, raw.Data); err != nil {
		w.cfg.Metrics.PublishFailed("dead_letter")
		w.log.Error().Err(err).Uint64("job_seq", seq).Msg("sweeper: could not record the stranded job; it stays in the stream")
		return
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		w.log.Error().Err(err).Uint64("job_seq", seq).Msg("sweeper: dead-lettered, but could not remove the job from the stream")
	}
	w.cfg.Metrics.JobFinished(res.Outcome, res.Reason, time.Since(raw.Time))
	ev := w.log.Warn()
	for k, v := range map[string]string{"org_id": res.OrgID, "run_id": res.RunID, "request_id": res.RequestID} {
		if v != "" {
			ev = ev.Str(k, v)
		}
	}
	ev.Uint64("job_seq", jobSeq).Int("attempt", prior+deliveries).Str("outcome", string(res.Outcome)).
		Str("reason", string(res.Reason)).Str("error", res.Error).Msg("job finished")
}

// watchConsumer reads the consumer's backlog for the Observer, and looks
// for stranded jobs whose advisory nobody heard (every worker was down when
// it was sent): when nothing is pending or in flight, a job at or below the
// last delivered sequence that is still in the stream can only be one.
func (w *Worker) watchConsumer(cons jetstream.Consumer, done <-chan struct{}) {
	tick := time.NewTicker(w.cfg.BacklogInterval)
	defer tick.Stop()
	// A job is swept only when two checks in a row find it stranded: in a
	// cluster, an ack can reach the consumer before the job's removal
	// reaches the stream replica that answers.
	var suspects map[uint64]bool
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.PublishTimeout)
		info, err := cons.Info(ctx)
		cancel()
		if err != nil {
			continue
		}
		w.cfg.Metrics.ConsumerBacklog(info.NumPending, uint64(info.NumAckPending), uint64(info.NumRedelivered))
		if info.NumPending == 0 && info.NumAckPending == 0 {
			suspects = w.sweepStranded(info.Delivered.Stream, suspects, done)
		} else {
			suspects = nil
		}
	}
}

// sweepStranded sweeps the jobs found stranded now that were suspects
// already, and returns those found stranded for the first time.
func (w *Worker) sweepStranded(lastDelivered uint64, suspects map[uint64]bool, done <-chan struct{}) map[uint64]bool {
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.PublishTimeout)
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

// record publishes the dead letter, then the result event, both confirmed.
func (w *Worker) record(ctx context.Context, res Result, data []byte) error {
	if res.Outcome == OutcomeDeadLettered {
		if err := w.publish(ctx, w.deadLetter(data, res)); err != nil {
			return fmt.Errorf("dead letter: %w", err)
		}
	}
	body, err := json.Marshal(res)
	if err != nil {
		return err
	}
	m := nats.NewMsg(w.cfg.ResultsSubject + "." + string(res.Outcome))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(res.JobSeq, 10))
	if err := w.publish(ctx, m); err != nil {
		return fmt.Errorf("result event: %w", err)
	}
	return nil
}
