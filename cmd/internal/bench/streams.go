package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// resetStreams deletes and recreates the three streams, so that a run finds
// no job, event or consumer state of the one before.
func (b *bencher) resetStreams(ctx context.Context) error {
	jobs, results, dlq := b.cfg.StreamConfigs()
	for _, sc := range []jetstream.StreamConfig{jobs, results, dlq} {
		if err := b.js.DeleteStream(ctx, sc.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("deleting stream %s: %w", sc.Name, err)
		}
		if _, err := b.js.CreateStream(ctx, sc); err != nil {
			return fmt.Errorf("creating stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// publishJobs publishes n jobs naming runs of their own, and adds those runs
// to the fake, archived. With the sink (Options.Trace) each job carries a
// traceparent of its own and a tracestate, as a traced publisher's would.
func (b *bencher) publishJobs(ctx context.Context, n int) error {
	subject := b.cfg.ConsumerConfig().FilterSubject
	runs := make([]string, n)
	for i := range n {
		runs[i] = fmt.Sprintf("b%d-%d", b.runs, i)
		m := nats.NewMsg(subject)
		m.Data = fmt.Appendf(nil, `{"org_id":%q,"run_id":%q,"request_id":"bench-%d"}`, org, runs[i], i)
		if b.sink != nil {
			m.Header.Set(worker.HeaderTraceparent, fmt.Sprintf("00-%016x%016x-%016x-01", b.runs, i+1, i+1))
			m.Header.Set(worker.HeaderTracestate, "bench=run"+strconv.Itoa(b.runs))
		}
		if _, err := b.js.PublishMsgAsync(m); err != nil {
			return fmt.Errorf("publishing job %d: %w", i, err)
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%d job publishes still unconfirmed after 2 minutes", b.js.PublishAsyncPending())
	}
	s, err := b.js.Stream(ctx, worker.DefaultJobsStream)
	if err != nil {
		return err
	}
	if got := s.CachedInfo().State.Msgs; got != uint64(n) {
		return fmt.Errorf("the jobs stream holds %d jobs, not %d: some publishes failed", got, n)
	}
	b.api.AddRuns(org, runs, true)
	return nil
}

// publishTimes reads the jobs' publish times as the stream stored them.
// A work-queue stream takes no ack-less reader, so a temporary consumer
// pulls every job without acking it and is then deleted: the jobs stay.
func (b *bencher) publishTimes(ctx context.Context, n int) (uint64, []time.Time, error) {
	stream := worker.DefaultJobsStream
	cons, err := b.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           time.Hour,
		MaxAckPending:     -1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("creating the reader of publish times: %w", err)
	}
	defer func() {
		if err := b.js.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name); err != nil {
			fmt.Fprintf(b.stderr, "bench: deleting the reader of publish times: %v\n", err)
		}
	}()
	times := make([]time.Time, n)
	var firstSeq uint64
	for got := 0; got < n; {
		batch, err := cons.Fetch(min(n-got, 5000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return 0, nil, err
		}
		before := got
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return 0, nil, err
			}
			if firstSeq == 0 {
				firstSeq = meta.Sequence.Stream
			}
			i := int(meta.Sequence.Stream - firstSeq)
			if i < 0 || i >= n {
				return 0, nil, fmt.Errorf("job sequence %d out of range", meta.Sequence.Stream)
			}
			times[i] = meta.Timestamp
			got++
		}
		if got == before {
			return 0, nil, fmt.Errorf("reading publish times: %d of %d: %v", got, n, batch.Error())
		}
	}
	return firstSeq, times, nil
}

// resultEvent is the part of a result event the bench reads.
type resultEvent struct {
	Outcome worker.Outcome `json:"outcome"`
	JobSeq  uint64         `json:"job_seq"`
	At      time.Time      `json:"at"`
}

// readResults reads the run's n events with an ordered consumer, after the
// run, so that reading costs the measured loop nothing.
func (b *bencher) readResults(ctx context.Context, n int) ([]resultEvent, error) {
	_, results, _ := b.cfg.StreamConfigs()
	cons, err := b.js.OrderedConsumer(ctx, results.Name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]resultEvent, 0, n)
	for len(out) < n {
		batch, err := cons.Fetch(min(n-len(out), 5000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, err
		}
		before := len(out)
		for m := range batch.Messages() {
			var e resultEvent
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				return nil, fmt.Errorf("result event %q: %w", m.Data(), err)
			}
			out = append(out, e)
		}
		if len(out) == before {
			return nil, fmt.Errorf("reading results: %d of %d: %v", len(out), n, batch.Error())
		}
	}
	return out, nil
}
