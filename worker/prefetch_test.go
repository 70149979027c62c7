package worker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// TestPrefetchHoldsAtMostItsStatedShare: a worker holds its slots' jobs
// and its prefetch (twice the concurrency, at least 16 and at most 256,
// plus the concurrency, at most 64, and 64 more), never more, whatever the
// backlog.
func TestPrefetchHoldsAtMostItsStatedShare(t *testing.T) {
	const jobs, concurrency = 200, 10
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
	if limit := concurrency + min(max(2*concurrency, 16), 256) + min(concurrency, 64) + 64; most > limit {
		t.Errorf("the worker held %d jobs at once, more than %d (concurrency %d and its prefetch)", most, limit, concurrency)
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

// TestPrefetchLeavesEachWorkerItsShare: three workers at the default
// concurrency share a backlog of 600 jobs on a 50 ms API; what each
// prefetches does not starve the others, each finishes at least a quarter.
func TestPrefetchLeavesEachWorkerItsShare(t *testing.T) {
	const jobs, workers = 600, 3
	e := newEnv(t)
	e.api.SetLatency(50 * time.Millisecond)
	cfg := testConfig()
	cfg.Concurrency = worker.DefaultConcurrency
	cfg.AckWait = 30 * time.Second
	for i := range workers {
		cfg.WorkerID = fmt.Sprintf("share-%d", i)
		e.start(cfg)
	}
	for i := range jobs {
		run := fmt.Sprintf("rshare%d", i)
		e.api.AddRun(testOrg, run, true)
		e.publish(job(testOrg, run))
	}
	byWorker := map[string]int{}
	for _, r := range e.waitResults(jobs, 60*time.Second) {
		if r.Outcome != worker.OutcomeDeleted {
			t.Errorf("job %d: %s/%s, want deleted", r.JobSeq, r.Outcome, r.Reason)
		}
		byWorker[r.Worker]++
	}
	for i := range workers {
		id := fmt.Sprintf("share-%d", i)
		if n := byWorker[id]; n < jobs/4 {
			t.Errorf("worker %s finished %d of %d jobs, fewer than a quarter: %v", id, n, jobs, byWorker)
		}
	}
	t.Logf("jobs per worker: %v", byWorker)
}

// TestPrefetchedJobsSpendNoDelivery: jobs waiting for a slot while a 429
// pause runs, while the credentials are rejected, or while the breaker is
// open, keep their deliveries as the job in the slot does: with a max
// deliver of 1, every job is still deleted, and its attempts count only
// the requests that reached Tallyfy with credentials it took.
func TestPrefetchedJobsSpendNoDelivery(t *testing.T) {
	const jobs = 6
	cases := []struct {
		name  string
		setup func(e *env, cfg *worker.Config)
		// during runs once the jobs are published; it ends the fault.
		during func(e *env, r *running, good string)
		// attempts is what run's result must say.
		attempts func(e *env, run string) int
	}{
		{
			name: "429 pause longer than the ack wait",
			setup: func(e *env, cfg *worker.Config) {
				e.api.ScriptAll(testutil.Response{Status: 429, RetryAfter: "2"})
			},
			during:   func(*env, *running, string) {},
			attempts: func(*env, string) int { return 1 },
		},
		{
			name: "credentials rejected",
			setup: func(e *env, cfg *worker.Config) {
				e.api.SetToken("rotated-elsewhere")
			},
			during: func(e *env, r *running, good string) {
				e.waitFor(10*time.Second, "credentials rejected", func() bool { return r.w.Health().Unable == worker.CredentialsRejected })
				e.api.SetToken(good)
			},
			attempts: func(*env, string) int { return 1 },
		},
		{
			name: "breaker open",
			setup: func(e *env, cfg *worker.Config) {
				cfg.BreakerFailures = 1
				cfg.MaxDeliver = 2 // the job whose 503 opened the breaker tries again
				e.api.SetOutage(testutil.Response{Status: 503})
			},
			during: func(e *env, r *running, good string) {
				e.waitFor(10*time.Second, "the breaker to open", func() bool { return r.w.Health().BreakerState.String() == "open" })
				e.api.EndOutage()
			},
			attempts: func(e *env, run string) int { return e.api.DeleteCount(testOrg, run) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			good := e.api.Token()
			// Slow answers: the jobs after the first wait in the prefetch.
			e.api.SetLatency(200 * time.Millisecond)
			cfg := testConfig()
			cfg.Concurrency = 1
			cfg.MaxDeliver = 1
			cfg.AckWait = time.Second
			cfg.APITimeout = 5 * time.Second
			client, err := tallyfy.New(e.api.URL(), tallyfy.WithToken(good), tallyfy.WithTimeout(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			tc.setup(e, &cfg)
			r := e.startWith(cfg, client)
			runs := make([]string, jobs)
			for i := range jobs {
				runs[i] = fmt.Sprintf("rkeep%d", i)
				e.api.AddRun(testOrg, runs[i], true)
				e.publish(job(testOrg, runs[i]))
			}
			tc.during(e, r, good)
			byRun := map[string]worker.Result{}
			for _, res := range e.waitResults(jobs, 30*time.Second) {
				byRun[res.RunID] = res
			}
			for _, run := range runs {
				res := byRun[run]
				if want := tc.attempts(e, run); res.Outcome != worker.OutcomeDeleted || res.Attempts != want {
					t.Errorf("run %s: %s/%s, attempts %d; want deleted, attempts %d", run, res.Outcome, res.Reason, res.Attempts, want)
				}
			}
			if n := len(e.deadLetters()); n != 0 {
				t.Errorf("%d dead letters", n)
			}
		})
	}
}

// TestJobsOnTheirWayKeepTheirAckWait: with the room full for longer than
// the ack wait (a slow API, a backlog), the jobs the pull has brought but
// the worker has not yet taken in are not handed to another worker.
func TestJobsOnTheirWayKeepTheirAckWait(t *testing.T) {
	const concurrency = 4
	jobs := worker.MaxHeld(concurrency) + 20
	e := newEnv(t)
	e.api.SetLatency(200 * time.Millisecond)
	cfg := testConfig()
	cfg.Concurrency = concurrency
	cfg.AckWait = time.Second
	cfg.APITimeout = 5 * time.Second
	var runs []string
	for i := range jobs {
		run := fmt.Sprintf("rway%d", i)
		runs = append(runs, run)
		e.api.AddRun(testOrg, run, true)
	}
	e.start(cfg)
	for _, run := range runs {
		e.publish(job(testOrg, run))
	}
	cfg.WorkerID = "second"
	e.start(cfg) // would take a job whose ack wait ran out
	for _, r := range e.waitResults(jobs, 60*time.Second) {
		if r.Outcome != worker.OutcomeDeleted || r.Attempts != 1 {
			t.Errorf("job %d: %s/%s, attempts %d; want deleted on its first delivery", r.JobSeq, r.Outcome, r.Reason, r.Attempts)
		}
	}
	for _, run := range runs {
		if n := e.api.DeleteCount(testOrg, run); n != 1 {
			t.Errorf("run %s got %d DELETEs, want 1: a job's ack wait ran out in a worker's hands", run, n)
		}
	}
}

// TestJobsArrivingAsAPullIsWithdrawnKeepTheirAckWait: jobs that reach the
// worker just after a 429 pause begins, while it withdraws its pull (they
// wait in the pull's buffer, not yet in its hands), are not left there
// past their ack wait: with a max deliver of 1, the server would give up
// on them and the sweeper dead-letter them max_deliveries while the worker
// went on to delete them.
func TestJobsArrivingAsAPullIsWithdrawnKeepTheirAckWait(t *testing.T) {
	const jobs = 6
	e := newEnv(t)
	cfg := testConfig()
	cfg.MaxDeliver = 1
	cfg.AckWait = time.Second
	e.start(cfg)
	e.api.AddRun(testOrg, "rpause", true)
	e.api.Script(testOrg, "rpause", testutil.Response{Status: 429, RetryAfter: "2"})
	runs := make([]string, jobs)
	for i := range jobs {
		runs[i] = fmt.Sprintf("rlate%d", i)
		e.api.AddRun(testOrg, runs[i], true)
	}
	e.publish(job(testOrg, "rpause"))
	e.waitFor(5*time.Second, "the 429", func() bool { return e.api.DeleteCount(testOrg, "rpause") >= 1 })
	for _, run := range runs {
		e.publish(job(testOrg, run))
	}
	for _, r := range e.waitResults(jobs+1, 30*time.Second) {
		if r.Outcome != worker.OutcomeDeleted || r.Attempts != 1 {
			t.Errorf("run %s: %s/%s, attempts %d; want deleted on its first delivery", r.RunID, r.Outcome, r.Reason, r.Attempts)
		}
	}
	if n := len(e.deadLetters()); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}
