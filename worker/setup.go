package worker

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfigs returns the jobs, results and dead-letter stream
// configurations the worker provisions.
//
// provisioned copies onto an existing stream exactly the fields set here:
// a field added here must be added there too.
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
	results = c.recordStream(c.ResultsStream, "Tallyfy run deletion results, one per job", c.ResultsSubject, c.ResultsMaxAge)
	dlq = c.recordStream(c.DLQStream, "Tallyfy run deletion dead letters", c.DLQSubject, 0)
	return jobs, results, dlq
}

// recordStream is a stream of the jobs' records: messages on subject.<token>,
// kept for maxAge (0 for ever), de-duplicated over the duplicate window.
func (c Config) recordStream(name, description, subject string, maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    []string{subject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      maxAge,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
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

// setupPatience is how long setup keeps retrying errors that may pass: a
// JetStream cluster that is still electing leaders, or that times out
// while several workers of a new pool create the same streams at once.
const setupPatience = 2 * time.Minute

// setup provisions or checks the streams and binds the consumer, retrying
// what may pass and failing at once on what will not (a configuration the
// server refuses, a stream that does not exist).
func (w *Worker) setup(ctx context.Context) (jetstream.Consumer, error) {
	deadline := time.Now().Add(setupPatience)
	wait := 500 * time.Millisecond
	for {
		cons, err := w.setupOnce(ctx)
		if err == nil || !mayPass(err) || time.Now().Add(wait).After(deadline) {
			return cons, err
		}
		w.log.Warn().Err(err).Dur("retry_in_ms", wait).Msg("setting up streams and consumer failed; retrying")
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// mayPass tells a timeout or an unavailable JetStream from an answer.
func mayPass(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.Code == 408 || apiErr.Code >= 500
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}

func (w *Worker) setupOnce(ctx context.Context) (jetstream.Consumer, error) {
	jobs, results, dlq := w.cfg.StreamConfigs()
	if !w.cfg.SkipProvision {
		for _, sc := range []jetstream.StreamConfig{jobs, results, dlq} {
			if err := w.ensureStream(ctx, sc); err != nil {
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
			return nil, fieldErrorf("stream %s ({SkipProvision}): %w", want.Name, err)
		}
		if got := s.CachedInfo().Config.Duplicates; got < w.cfg.RetryPath() {
			return nil, fieldErrorf("stream %s has a duplicate window of %s, shorter than the longest retry path %s ({MaxDeliver} × {AckWait} + the {Backoff} steps): a redelivered job could publish its outcome twice", want.Name, got, w.cfg.RetryPath())
		}
	}
	cons, err := w.js.Consumer(ctx, jobs.Name, w.cfg.Consumer)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fieldErrorf("stream %s ({SkipProvision}): %w", jobs.Name, err)
		}
		return nil, fieldErrorf("consumer %s on stream %s ({SkipProvision}): %w", w.cfg.Consumer, jobs.Name, err)
	}
	info := cons.CachedInfo().Config
	if info.MaxDeliver != w.cfg.MaxDeliver {
		return nil, fieldErrorf("consumer %s has MaxDeliver %d but {MaxDeliver} is %d: the worker could not tell a job's last delivery", w.cfg.Consumer, info.MaxDeliver, w.cfg.MaxDeliver)
	}
	if info.AckPolicy != jetstream.AckExplicitPolicy {
		return nil, fmt.Errorf("consumer %s must use explicit acks, not %s", w.cfg.Consumer, info.AckPolicy)
	}
	if info.AckWait != w.cfg.AckWait {
		w.log.Warn().Dur("consumer_ack_wait_ms", info.AckWait).Dur("configured_ms", w.cfg.AckWait).Msg("the consumer's ack wait differs from the configured one; using the consumer's")
		w.cfg.AckWait = info.AckWait
	}
	return cons, nil
}

// ensureStream creates the stream sc, or brings the settings of an
// existing one that the worker provisions (see provisioned) to sc's,
// keeping the others (limits an operator set) as they are. A stream that
// already has them is left alone: a pool's workers start together, and
// each update, even one that changes nothing, rewrites the stream's
// configuration on the server while the others bind their consumer.
func (w *Worker) ensureStream(ctx context.Context, sc jetstream.StreamConfig) error {
	for range 2 {
		s, err := w.js.Stream(ctx, sc.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			_, err = w.js.CreateStream(ctx, sc)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// Another worker created it meanwhile, otherwise.
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		got := s.CachedInfo().Config
		want := provisioned(got, sc)
		if reflect.DeepEqual(got, want) {
			return nil
		}
		_, err = w.js.UpdateStream(ctx, want)
		return err
	}
	return fmt.Errorf("stream %s appeared and vanished twice while this worker created it", sc.Name)
}

// provisioned is the stream configuration cur with the settings the worker
// provisions taken from sc: its name, description, subjects, retention,
// storage, maximum age, duplicate window and replicas.
func provisioned(cur, sc jetstream.StreamConfig) jetstream.StreamConfig {
	cur.Name = sc.Name
	cur.Description = sc.Description
	cur.Subjects = sc.Subjects
	cur.Retention = sc.Retention
	cur.Storage = sc.Storage
	cur.MaxAge = sc.MaxAge
	cur.Duplicates = sc.Duplicates
	cur.Replicas = sc.Replicas
	return cur
}
