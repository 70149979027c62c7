package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestUnconfirmedResultIsNotAcked: while JetStream does not confirm result
// events (the results stream takes no subject), a job whose run was deleted
// is not acked: it comes back. Once the events are confirmed again it ends
// with exactly one result, and leaves the jobs stream.
func TestUnconfirmedResultIsNotAcked(t *testing.T) {
	e := newEnv(t)
	e.api.AddRun(testOrg, "rconf", true)
	cfg := testConfig()
	cfg.MaxDeliver = 20
	e.start(cfg)
	setResultSubjects := func(subjects ...string) {
		t.Helper()
		s, err := e.js.Stream(context.Background(), worker.DefaultResultsStream)
		if err != nil {
			t.Fatal(err)
		}
		sc := s.CachedInfo().Config
		sc.Subjects = subjects
		if _, err := e.js.UpdateStream(context.Background(), sc); err != nil {
			t.Fatalf("updating the results stream: %v", err)
		}
	}
	setResultSubjects("nowhere.>")

	seq := e.publish(job(testOrg, "rconf"))
	e.waitFor(20*time.Second, "the job to come back unacked", func() bool {
		return e.consumerInfo().Delivered.Consumer >= 2
	})
	if got := e.api.DeleteCount(testOrg, "rconf"); got < 1 {
		t.Fatalf("Tallyfy received %d DELETEs, want at least 1", got)
	}
	if n := e.streamMsgs(worker.DefaultJobsStream); n != 1 {
		t.Fatalf("jobs stream holds %d messages while the result is unconfirmed, want 1", n)
	}

	setResultSubjects(worker.DefaultResultsSubject + ".>")
	res := e.result(seq, 20*time.Second)
	if res.Outcome != worker.OutcomeDeleted && res.Outcome != worker.OutcomeNotFound {
		t.Errorf("outcome %s/%s, want deleted or not_found", res.Outcome, res.Reason)
	}
	e.waitFor(10*time.Second, "the jobs stream to empty", func() bool { return e.streamMsgs(worker.DefaultJobsStream) == 0 })
	if n := e.streamMsgs(worker.DefaultResultsStream); n != 1 {
		t.Errorf("results stream holds %d events, want 1", n)
	}
}
