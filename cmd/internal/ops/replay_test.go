package ops

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// scanAll is every dead letter stored.
func scanAll(t *testing.T, js jetstream.JetStream) []DeadLetter {
	t.Helper()
	scan, err := ScanDeadLetters(context.Background(), js, names, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return scan.Letters
}

func TestReplayPublishesAndRemoves(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	for i := range 6 {
		storeDeadLetter(t, js, worker.ReasonNotArchived, "org1", fmt.Sprint("r", i), fmt.Sprintf(`{"run_id":"r%d"}`, i))
	}
	binary := storeDeadLetter(t, js, worker.ReasonInvalidJob, "", "", "\xff not UTF-8")
	// As if an earlier replay of the first had published it and then failed
	// to remove it.
	m := nats.NewMsg(worker.DefaultJobsSubject)
	m.Data = []byte(`{"run_id":"r0"}`)
	m.Header.Set(jetstream.MsgIDHeader, "replay-1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}

	r, err := NewReplayer(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	reports := map[uint64]ReplayReport{}
	res := r.Replay(ctx, scanAll(t, js), ReplayOptions{OnLetter: func(rep ReplayReport) {
		mu.Lock()
		defer mu.Unlock()
		reports[rep.Letter.Seq] = rep
	}})
	if res != (ReplayResult{Replayed: 6, Duplicates: 1}) {
		t.Errorf("result %+v, want 6 replayed, 1 duplicate", res)
	}
	if len(reports) != 7 || !reports[1].Duplicate || reports[2].Duplicate || reports[2].JobSeq == 0 || reports[2].Err != nil {
		t.Errorf("reports %+v", reports)
	}
	if n := msgs(t, js, worker.DefaultDLQStream); n != 0 {
		t.Errorf("%d dead letters left, want 0", n)
	}
	if n := msgs(t, js, worker.DefaultJobsStream); n != 7 {
		t.Errorf("jobs stream holds %d, want 7 (one replay was a duplicate)", n)
	}
	jobs, err := js.Stream(ctx, worker.DefaultJobsStream)
	if err != nil {
		t.Fatal(err)
	}
	got, err := jobs.GetMsg(ctx, reports[binary].JobSeq)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != "\xff not UTF-8" || got.Header.Get(jetstream.MsgIDHeader) != fmt.Sprintf("replay-%d", binary) {
		t.Errorf("replayed job %q %v: want the body byte for byte", got.Data, got.Header)
	}
}

func TestReplayFailureKeepsTheDeadLetter(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	storeDeadLetter(t, js, worker.ReasonNotArchived, "org1", "r1", `{"run_id":"r1"}`)
	// A jobs subject no stream listens on: every publish fails.
	n := names
	n.JobsSubject = "nowhere.jobs"
	r, err := NewReplayer(ctx, js, n)
	if err != nil {
		t.Fatal(err)
	}
	var failed []error
	res := r.Replay(ctx, scanAll(t, js), ReplayOptions{OnLetter: func(rep ReplayReport) { failed = append(failed, rep.Err) }})
	if res != (ReplayResult{Failed: 1}) || len(failed) != 1 || failed[0] == nil {
		t.Errorf("result %+v, reported errors %v", res, failed)
	}
	if n := msgs(t, js, worker.DefaultDLQStream); n != 1 {
		t.Errorf("%d dead letters left, want the 1 kept", n)
	}
}

func TestReplayRateLimited(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	for i := range 5 {
		storeDeadLetter(t, js, worker.ReasonNotArchived, "org1", fmt.Sprint("r", i), "{}")
	}
	r, err := NewReplayer(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	res := r.Replay(ctx, scanAll(t, js), ReplayOptions{PerSecond: 10})
	// A burst of 1, then one every 100ms: at least 400ms for 5.
	if took := time.Since(began); took < 350*time.Millisecond {
		t.Errorf("5 replays at 10/s took %s", took)
	}
	if res.Replayed != 5 {
		t.Errorf("%+v", res)
	}
}

func TestReplayCancelledStartsNoMore(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	for i := range 5 {
		storeDeadLetter(t, js, worker.ReasonNotArchived, "org1", fmt.Sprint("r", i), "{}")
	}
	r, err := NewReplayer(context.Background(), js, names)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// One a second: the first goes at once, then the cancel stops the rest.
	res := r.Replay(ctx, scanAll(t, js), ReplayOptions{PerSecond: 1, OnLetter: func(ReplayReport) { cancel() }})
	if res.Replayed != 1 || res.NotStarted != 4 {
		t.Errorf("%+v, want 1 replayed, 4 not started", res)
	}
	if n := msgs(t, js, worker.DefaultDLQStream); n != 4 {
		t.Errorf("%d dead letters left, want 4", n)
	}
}

func TestNewReplayerWithoutJobsStream(t *testing.T) {
	js := newJetStream(t)
	_, err := NewReplayer(context.Background(), js, names)
	if !errors.Is(err, ErrNoJobsStream) {
		t.Errorf("got %v, want ErrNoJobsStream", err)
	}
}
