package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestPrefetchHoldsAtMostItsStatedShare: a worker holds its slots' jobs
// and as many again waiting (at least 8, at most 64), never more, whatever
// the backlog.
func TestPrefetchHoldsAtMostItsStatedShare(t *testing.T) {
	const jobs, concurrency = 60, 10
	e := newEnv(t)
	e.api.SetLatency(100 * time.Millisecond)
	cfg := testConfig()
	cfg.Concurrency = concurrency
	r := e.start(cfg)
	for i := range jobs {
		run := fmt.Sprintf("rpre%d", i)
		e.api.AddRun(testOrg, run, true)
		e.publish(job(testOrg, run))
	}
	most := 0
	e.waitFor(30*time.Second, "every result", func() bool {
		most = max(most, r.w.Health().InFlight, e.consumerInfo().NumAckPending)
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.results) == jobs
	})
	if limit := concurrency + min(max(concurrency, 8), 64); most > limit {
		t.Errorf("the worker held %d jobs at once, more than %d (concurrency %d and as many prefetched, at least 8, at most 64)", most, limit, concurrency)
	}
}

// TestPrefetchedJobsKeepTheirAckWait: a job waiting for a slot longer
// than the ack wait is not handed to another worker meanwhile.
func TestPrefetchedJobsKeepTheirAckWait(t *testing.T) {
	const jobs = 3
	e := newEnv(t)
	// The job waiting behind the one in the slot waits longer than the ack
	// wait.
	e.api.SetLatency(1500 * time.Millisecond)
	cfg := testConfig()
	cfg.Concurrency = 1
	cfg.AckWait = time.Second
	cfg.APITimeout = 5 * time.Second
	slow, err := tallyfy.New(e.api.URL(), tallyfy.WithToken(e.api.Token()), tallyfy.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e.startWith(cfg, slow)
	var runs []string
	for i := range jobs {
		run := fmt.Sprintf("rwait%d", i)
		runs = append(runs, run)
		e.api.AddRun(testOrg, run, true)
		e.publish(job(testOrg, run))
	}
	e.waitFor(5*time.Second, "the first DELETE", func() bool { return e.api.RequestCount() > 0 })
	e.startWith(cfg, slow) // would take a job whose ack wait ran out
	for _, r := range e.waitResults(jobs, 30*time.Second) {
		if r.Outcome != worker.OutcomeDeleted || r.Attempts != 1 {
			t.Errorf("job %d: %s/%s, attempts %d; want deleted on its first delivery", r.JobSeq, r.Outcome, r.Reason, r.Attempts)
		}
	}
	for _, run := range runs {
		if n := e.api.DeleteCount(testOrg, run); n != 1 {
			t.Errorf("run %s got %d DELETEs, want 1: a prefetched job's ack wait ran out", run, n)
		}
	}
}

// TestPrefetchedJobsHandedBackOnShutdown: at shutdown the jobs waiting for
// a slot go back to the pool at once, not after their ack wait.
func TestPrefetchedJobsHandedBackOnShutdown(t *testing.T) {
	e := newEnv(t)
	e.api.SetLatency(800 * time.Millisecond)
	cfg := testConfig()
	cfg.Concurrency = 1
	cfg.AckWait = 30 * time.Second
	cfg.APITimeout = 5 * time.Second
	cfg.ShutdownTimeout = 3 * time.Second
	leaving := e.start(cfg)
	for i := range 2 {
		run := fmt.Sprintf("rleave%d", i)
		e.api.AddRun(testOrg, run, true)
		e.publish(job(testOrg, run))
	}
	e.waitFor(5*time.Second, "a job in the slot and one waiting", func() bool { return leaving.w.Health().InFlight == 2 })
	cfg.WorkerID = "staying"
	e.start(cfg)
	began := time.Now()
	if err := leaving.Stop(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	e.waitResults(2, 10*time.Second)
	if took := time.Since(began); took > cfg.AckWait/3 {
		t.Errorf("both jobs finished %s after the shutdown began: the prefetched one waited for its ack wait", took)
	}
	if !strings.Contains(leaving.logs.String(), "shutting down: job handed back") {
		t.Errorf("the leaving worker handed no job back:\n%s", tail(leaving.logs.String(), 20))
	}
}
