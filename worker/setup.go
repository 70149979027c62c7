package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfigs returns the jobs, results and dead-letter stream
// configurations the worker provisions.
func (c Config) StreamConfigs() (jobs, results, dlq jetstream.StreamConfig) {
	c = c.withDefaults()
	jobs = jetstream.StreamConfig{
		Name:        c.JobsStream,
		Description: "Tallyfy run deletion jobs",
		Subjects:    []string{c.JobsSubject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
	results = jetstream.StreamConfig{
		Name:        c.ResultsStream,
		Description: "Tallyfy run deletion results, one per job",
		Subjects:    []string{c.ResultsSubject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      c.ResultsMaxAge,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
	dlq = jetstream.StreamConfig{
		Name:        c.DLQStream,
		Description: "Tallyfy run deletion dead letters",
		Subjects:    []string{c.DLQSubject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
	return jobs, results, dlq
}

// ConsumerConfig returns the durable consumer the worker provisions.
func (c Config) ConsumerConfig() jetstream.ConsumerConfig {
	c = c.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "tallyfy-deleter worker pool",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		FilterSubject: c.JobsSubject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// setup provisions or checks the streams and binds the consumer.
func (w *Worker) setup(ctx context.Context) (jetstream.Consumer, error) {
	jobs, results, dlq := w.cfg.StreamConfigs()
	if !w.cfg.SkipProvision {
		for _, sc := range []jetstream.StreamConfig{jobs, results, dlq} {
			if _, err := w.js.CreateOrUpdateStream(ctx, sc); err != nil {
				return nil, fmt.Errorf("creating or updating stream %s: %w", sc.Name, err)
			}
		}
		cons, err := w.js.CreateOrUpdateConsumer(ctx, jobs.Name, w.cfg.ConsumerConfig())
		if err != nil {
			return nil, fmt.Errorf("creating or updating consumer %s on stream %s: %w", w.cfg.Consumer, jobs.Name, err)
		}
		return cons, nil
	}

	// Someone else manages them: check that they exist and that they fit
	// what the worker relies on.
	for _, want := range []jetstream.StreamConfig{results, dlq} {
		s, err := w.js.Stream(ctx, want.Name)
		if err != nil {
			return nil, fmt.Errorf("stream %s (DELETER_PROVISION=false): %w", want.Name, err)
		}
		if got := s.CachedInfo().Config.Duplicates; got < w.cfg.RetryPath() {
			return nil, fmt.Errorf("stream %s has a duplicate window of %s, shorter than the longest retry path %s (DELETER_MAX_DELIVER × DELETER_ACK_WAIT + the DELETER_BACKOFF steps): a redelivered job could publish its outcome twice", want.Name, got, w.cfg.RetryPath())
		}
	}
	cons, err := w.js.Consumer(ctx, jobs.Name, w.cfg.Consumer)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("stream %s (DELETER_PROVISION=false): %w", jobs.Name, err)
		}
		return nil, fmt.Errorf("consumer %s on stream %s (DELETER_PROVISION=false): %w", w.cfg.Consumer, jobs.Name, err)
	}
	info := cons.CachedInfo().Config
	if info.MaxDeliver != w.cfg.MaxDeliver {
		return nil, fmt.Errorf("consumer %s has MaxDeliver %d but DELETER_MAX_DELIVER is %d: the worker could not tell a job's last delivery", w.cfg.Consumer, info.MaxDeliver, w.cfg.MaxDeliver)
	}
	if info.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("consumer %s must use explicit acks, not %s", w.cfg.Consumer, info.AckPolicy)
	}
	if info.AckWait != w.cfg.AckWait {
		w.log.Warn().Dur("consumer_ack_wait", info.AckWait).Dur("configured", w.cfg.AckWait).Msg("the consumer's ack wait differs from DELETER_ACK_WAIT; using the consumer's")
		w.cfg.AckWait = info.AckWait
	}
	return cons, nil
}
