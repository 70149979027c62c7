package ops

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func TestStatusWithNothingCreated(t *testing.T) {
	js := newJetStream(t)
	rep, err := Status(context.Background(), js, names)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Jobs.Exists || rep.Jobs.Consumer.Exists || rep.DeadLetters.Exists || rep.Results.Exists {
		t.Errorf("something exists: %+v", rep)
	}
	if rep.Jobs.Stream != worker.DefaultJobsStream || rep.Jobs.Consumer.Name != worker.DefaultConsumer ||
		rep.DeadLetters.Stream != worker.DefaultDLQStream || rep.Results.Stream != worker.DefaultResultsStream {
		t.Errorf("names: %+v", rep)
	}
	// Every known reason and outcome is there, at 0.
	if len(rep.DeadLetters.ByReason) != len(worker.Reasons) || len(rep.Results.ByOutcome) != len(worker.Outcomes) {
		t.Errorf("by reason %v, by outcome %v", rep.DeadLetters.ByReason, rep.Results.ByOutcome)
	}
}

func TestStatusWithoutConsumer(t *testing.T) {
	js := newJetStream(t)
	var cfg worker.Config
	jobs, _, _ := cfg.StreamConfigs()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, worker.DefaultJobsSubject, []byte(`{"run_id":"r1"}`)); err != nil {
		t.Fatal(err)
	}
	rep, err := Status(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Jobs.Exists || rep.Jobs.Messages != 1 || rep.Jobs.Consumer.Exists {
		t.Errorf("jobs %+v", rep.Jobs)
	}
}

func TestStatusCounts(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	for i := range 3 {
		if _, err := js.Publish(ctx, worker.DefaultJobsSubject, fmt.Appendf(nil, `{"run_id":"r%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.Consumer(ctx, worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	storeDeadLetter(t, js, worker.ReasonForbidden, "org1", "a", "{}")
	storeDeadLetter(t, js, worker.ReasonForbidden, "org1", "b", "{}")
	storeDeadLetter(t, js, "some_new_reason", "org1", "c", "{}")
	for _, o := range []string{"deleted", "dry_run", "dry_run", "dry_run"} {
		if _, err := js.Publish(ctx, worker.DefaultResultsSubject+"."+o, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}

	rep, err := Status(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Jobs.Consumer
	if rep.Jobs.Messages != 3 || !c.Exists || c.Backlog != 2 || c.AckPending != 1 || c.Redelivered != 0 || c.Paused {
		t.Errorf("jobs %+v", rep.Jobs)
	}
	d := rep.DeadLetters
	if d.Total != 3 || d.ByReason["forbidden"] != 2 || d.ByReason["some_new_reason"] != 1 || d.ByReason["not_archived"] != 0 ||
		len(d.ByReason) != len(worker.Reasons)+1 {
		t.Errorf("dead letters %+v", d)
	}
	r := rep.Results
	if r.Total != 4 || r.ByOutcome["deleted"] != 1 || r.ByOutcome["dry_run"] != 3 || r.MaxAge != worker.DefaultResultsMaxAge.String() {
		t.Errorf("results %+v", r)
	}
}
