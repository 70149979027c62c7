package ops

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// names are the default stream, subject and consumer names, as the tools
// get them when nothing is set.
var names = func() worker.Streams {
	var c worker.Streams
	c.JobsStream, c.JobsSubject, c.Consumer = worker.DefaultJobsStream, worker.DefaultJobsSubject, worker.DefaultConsumer
	c.ResultsStream, c.ResultsSubject = worker.DefaultResultsStream, worker.DefaultResultsSubject
	c.DLQStream, c.DLQSubject = worker.DefaultDLQStream, worker.DefaultDLQSubject
	return c
}()

// newJetStream starts an embedded JetStream server for the test and
// connects to it.
func newJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv := testutil.JetStream(t)
	_, js := testutil.Connect(t, srv.URL())
	return js
}

// provision creates the streams and the consumer as a worker would, with
// no worker to take the jobs.
func provision(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
	var cfg worker.Config
	jobs, results, dlq := cfg.StreamConfigs()
	for _, sc := range []jetstream.StreamConfig{jobs, results, dlq} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatalf("creating stream %s: %v", sc.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, jobs.Name, cfg.ConsumerConfig()); err != nil {
		t.Fatalf("creating consumer: %v", err)
	}
}

// storeDeadLetter stores a dead letter as the worker writes one and
// returns its sequence.
func storeDeadLetter(t *testing.T, js jetstream.JetStream, reason worker.Reason, org, run, body string) uint64 {
	t.Helper()
	m := nats.NewMsg(worker.DefaultDLQSubject + "." + string(reason))
	m.Data = []byte(body)
	m.Header.Set(worker.HeaderReason, string(reason))
	m.Header.Set(worker.HeaderStatus, "422")
	m.Header.Set(worker.HeaderError, "tallyfy: 422 Unprocessable Entity: Process isn't archived yet")
	m.Header.Set(worker.HeaderAttempts, "1")
	if org != "" {
		m.Header.Set(worker.HeaderOrgID, org)
	}
	if run != "" {
		m.Header.Set(worker.HeaderRunID, run)
	}
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("storing a dead letter: %v", err)
	}
	return ack.Sequence
}

// msgs is how many messages stream holds.
func msgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	return s.CachedInfo().State.Msgs
}
