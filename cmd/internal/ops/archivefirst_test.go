package ops

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestReplayArchiveFirst: a live run's job is dead-lettered not_archived
// by a worker whose DELETER_ARCHIVE_FIRST is job; replayed with
// ArchiveFirst, the same worker archives the run and deletes it, and the
// result says it archived it.
func TestReplayArchiveFirst(t *testing.T) {
	js := newJetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.AddRun("org1", "rlive", false)
	client, err := tallyfy.New(api.URL(), tallyfy.WithToken(api.Token()))
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.Nop()
	w, err := worker.New(js, client, worker.Config{DefaultOrg: "org1", ArchiveFirst: worker.ArchiveJob, Logger: &log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	awaitCond(t, "the worker to bind", func() bool { return w.Health().ConsumerBound })

	if _, err := js.Publish(context.Background(), worker.DefaultJobsSubject, []byte(`{"run_id":"rlive"}`)); err != nil {
		t.Fatal(err)
	}
	awaitCond(t, "the dead letter", func() bool { return msgs(t, js, worker.DefaultDLQStream) == 1 })
	if api.Archived("org1", "rlive") {
		t.Fatal("the worker archived a run whose job did not ask")
	}

	r, err := NewReplayer(context.Background(), js, names)
	if err != nil {
		t.Fatal(err)
	}
	scan, err := ScanDeadLetters(context.Background(), js, names, Filter{Reason: string(worker.ReasonNotArchived)})
	if err != nil {
		t.Fatal(err)
	}
	if res := r.Replay(context.Background(), scan.Letters, ReplayOptions{ArchiveFirst: true}); res.Replayed != 1 {
		t.Fatalf("replay: %+v", res)
	}
	awaitCond(t, "the run to be deleted", func() bool { return api.Deleted("org1", "rlive") })
	awaitCond(t, "the second result", func() bool { return msgs(t, js, worker.DefaultResultsStream) == 2 })
	results, err := js.Stream(context.Background(), worker.DefaultResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	last, err := results.GetMsg(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var res worker.Result
	if err := json.Unmarshal(last.Data, &res); err != nil {
		t.Fatal(err)
	}
	if res.Outcome != worker.OutcomeDeleted || !res.Archived {
		t.Errorf("replayed job's result %s archived %v, want deleted, archived", res.Outcome, res.Archived)
	}
}

func awaitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
