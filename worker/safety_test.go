package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestDryRunDeletesNothing: the fake API sees no DELETE, every valid job
// ends dry_run, invalid ones still dead-letter.
func TestDryRunDeletesNothing(t *testing.T) {
	e := newEnv(t)
	for i := range 5 {
		e.api.AddRun(testOrg, fmt.Sprintf("rdry%d", i), true)
	}
	cfg := testConfig()
	cfg.DryRun = true
	e.start(cfg)
	for i := range 5 {
		if r := e.result(e.publish(job(testOrg, fmt.Sprintf("rdry%d", i))), 10*time.Second); r.Outcome != worker.OutcomeDryRun {
			t.Errorf("dry run outcome %s/%s", r.Outcome, r.Reason)
		}
	}
	if r := e.result(e.publish(`{"run_id":"a/b"}`), 10*time.Second); r.Reason != worker.ReasonInvalidJob {
		t.Errorf("invalid job in dry run: %s/%s", r.Outcome, r.Reason)
	}
	for _, r := range e.api.Requests() {
		if r.Method == http.MethodDelete {
			t.Errorf("dry run sent %s %s", r.Method, r.Path)
		}
	}
	for i := range 5 {
		if !e.api.RunExists(testOrg, fmt.Sprintf("rdry%d", i)) {
			t.Errorf("rdry%d was deleted in a dry run", i)
		}
	}
	// The result is published before the ack: wait for the acks.
	e.waitFor(5*time.Second, "dry-run jobs to be acked", func() bool { return e.streamMsgs(worker.DefaultJobsStream) == 0 })
}

// TestVerifyNotFound: a 404 for a run that still exists is dead-lettered
// not_archived; a 404 for a run that is gone is acked not_found.
func TestVerifyNotFound(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "rhidden", false)
	// Tallyfy documents 404 also for "not archived".
	e.api.Script(testOrg, "rhidden", testutil.Response{Status: 404, Body: `{"message":"Process not found"}`})
	cfg := testConfig()
	cfg.VerifyNotFound = true
	e.start(cfg)
	hidden := e.result(e.publish(job(testOrg, "rhidden")), 10*time.Second)
	if hidden.Outcome != worker.OutcomeDeadLettered || hidden.Reason != worker.ReasonNotArchived || hidden.Status != 404 {
		t.Errorf("404 for an existing run: %s/%s status %d, want dead_lettered/not_archived 404", hidden.Outcome, hidden.Reason, hidden.Status)
	}
	gone := e.result(e.publish(job(testOrg, "rgone")), 10*time.Second)
	if gone.Outcome != worker.OutcomeNotFound {
		t.Errorf("404 for a missing run: %s/%s", gone.Outcome, gone.Reason)
	}
	var gets int
	for _, r := range e.api.Requests() {
		if r.Method == http.MethodGet {
			gets++
		}
	}
	if gets != 2 {
		t.Errorf("%d GETs, want one per 404", gets)
	}
}

// TestRateLimit: with DELETER_RATE_LIMIT the worker spaces its requests.
func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	const jobs = 12
	for i := range jobs {
		e.api.AddRun(testOrg, fmt.Sprintf("rrate%d", i), true)
	}
	cfg := testConfig()
	cfg.RateLimit = 20
	cfg.RateBurst = 1
	e.start(cfg)
	for i := range jobs {
		e.publish(job(testOrg, fmt.Sprintf("rrate%d", i)))
	}
	e.waitResults(jobs, 20*time.Second)
	reqs := e.api.Requests()
	span := reqs[len(reqs)-1].At.Sub(reqs[0].At)
	// 12 requests at 20/s with a burst of 1 need 11 gaps of 50ms.
	if min := 500 * time.Millisecond; span < min {
		t.Errorf("%d requests in %s: faster than 20/s", len(reqs), span)
	}
}

// TestOutageEachWorkerBacksOff: when Tallyfy is down, every worker's
// breaker opens on its own; jobs go back and forth between them without
// spending attempts, none is dead-lettered, and all are deleted when
// Tallyfy is back. No worker pauses the shared consumer.
func TestOutageEachWorkerBacksOff(t *testing.T) {
	const jobs = 30
	e := newEnv(t)
	for i := range jobs {
		e.api.AddRun(testOrg, fmt.Sprintf("rpool%d", i), true)
	}
	e.api.SetOutage(testutil.Response{Status: 503})
	cfg := testConfig()
	cfg.BreakerTimeout = 500 * time.Millisecond
	a := e.start(cfg)
	b := e.start(cfg)
	for i := range jobs {
		e.publish(job(testOrg, fmt.Sprintf("rpool%d", i)))
	}
	for _, r := range []*running{a, b} {
		e.waitFor(10*time.Second, "each breaker to open", func() bool { return r.w.Health().Unable == worker.BreakerNotClosed })
	}
	if e.consumerInfo().Paused {
		t.Errorf("the consumer was paused for the pool: one worker's breaker must not stop the others")
	}
	e.api.EndOutage()
	res := e.waitResults(jobs, 20*time.Second)
	if n := len(e.deadLetters()); n != 0 {
		t.Errorf("%d dead letters", n)
	}
	for _, r := range res {
		if r.Outcome != worker.OutcomeDeleted {
			t.Errorf("job %d: %s/%s, want deleted", r.JobSeq, r.Outcome, r.Reason)
		}
		// Failures while a breaker was still closed count; hand-backs do not.
		if r.Attempts > cfg.MaxDeliver {
			t.Errorf("job %d: %d attempts, more than the %d deliveries allowed", r.JobSeq, r.Attempts, cfg.MaxDeliver)
		}
	}
}

// TestSweeperDeadLettersStrandedJobs: a job whose last delivery went to a
// worker that never answered is dead-lettered max_deliveries by a running
// worker and removed from the jobs stream.
func TestSweeperDeadLettersStrandedJobs(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.MaxDeliver = 1
	cfg.AckWait = time.Second
	first := e.start(cfg) // provisions the streams and the consumer
	if err := first.Stop(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Play a worker that dies holding the job's last delivery: take it from
	// the shared consumer and never answer.
	e.api.AddRun(testOrg, "rstrand", true)
	seq := e.publish(job(testOrg, "rstrand"))
	_, js := testutil.Connect(t, e.nats.URL())
	cons, err := js.Consumer(context.Background(), worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	e.start(cfg)
	r := e.result(seq, 15*time.Second)
	if r.Outcome != worker.OutcomeDeadLettered || r.Reason != worker.ReasonMaxDeliveries {
		t.Errorf("stranded job: %s/%s, want dead_lettered/max_deliveries", r.Outcome, r.Reason)
	}
	if dl := e.deadLetter(seq); dl == nil || dl.Subject() != worker.DefaultDLQSubject+".max_deliveries" {
		t.Errorf("no dead letter on %s.max_deliveries", worker.DefaultDLQSubject)
	}
	e.waitFor(10*time.Second, "the job to leave the stream", func() bool {
		s, _ := e.js.Stream(context.Background(), worker.DefaultJobsStream)
		_, err := s.GetMsg(context.Background(), seq)
		return err != nil
	})
}

func (e *env) consumerInfo() *jetstream.ConsumerInfo {
	e.t.Helper()
	c, err := e.js.Consumer(context.Background(), worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		e.t.Fatalf("consumer: %v", err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		e.t.Fatalf("consumer info: %v", err)
	}
	return info
}
