package main

import (
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// TestPoolSharesTheBacklog: prefetching must not let one worker hoard the
// backlog. Three workers on a 50 ms API each finish at least a quarter of
// 600 jobs.
func TestPoolSharesTheBacklog(t *testing.T) {
	const jobs, workers = 600, 3
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.SetLatency(50 * time.Millisecond)
	api.RecordRequests(false)
	p := newPool(t, srv.URL(), api)
	for _, id := range []string{"w1", "w2", "w3"} {
		p.start(id)
	}
	p.waitPulling(workers)
	runs, bodies := p.addJobs("share", jobs)
	seqs := p.publish(bodies)
	p.waitResults(jobs, time.Minute)
	o := p.settled(seqs)
	p.everyJobDeleted(o, runs, 0, "")
	by := map[string]int{}
	for _, r := range o.results {
		by[r.Worker]++
	}
	for _, id := range []string{"w1", "w2", "w3"} {
		if by[id] < jobs/4 {
			t.Errorf("worker %s finished %d of %d jobs, fewer than a quarter: %v", id, by[id], jobs, by)
		}
	}
	t.Logf("jobs by worker: %v", by)
}
