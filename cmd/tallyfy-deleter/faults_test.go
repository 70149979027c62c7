package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Fault-injection tests: the built binary, several processes of it, real
// embedded NATS servers, and the fake Tallyfy, broken in the ways production
// breaks. Each test ends with pool.settled, which checks the promise the
// README makes whatever went wrong: every job has exactly one result event
// and nothing is left in the jobs stream or the consumer.

// TestPoolSIGKILLLosesNothing: three workers share 3,000 jobs and one is
// killed with SIGKILL half-way through. Its unacked jobs come back after the
// ack wait and the other two finish them: every job has one result, none is
// dead-lettered, and only the jobs the dead worker held were done twice.
func TestPoolSIGKILLLosesNothing(t *testing.T) {
	const jobs, concurrency = 3000, 16
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.RecordRequests(false)
	api.SetLatency(5 * time.Millisecond) // jobs are in flight when the kill lands
	p := newPool(t, srv.URL(), api, "DELETER_ACK_WAIT=2s", "DELETER_CONCURRENCY="+strconv.Itoa(concurrency))
	victimAPI := newAPIProxy(t, api) // to see the victim's calls in flight
	w1, w2, w3 := p.start("w1"), p.start("w2", "TALLYFY_API_URL="+victimAPI.url), p.start("w3")
	p.waitPulling(3)

	runs, bodies := p.addJobs("pool", jobs)
	began := time.Now()
	seqs := p.publish(bodies)
	p.waitResults(jobs/2, 60*time.Second)
	p.waitUntil(10*time.Second, "the victim to have API calls in flight", func() bool { return victimAPI.inFlight.Load() >= 2 })
	p.kill(w2)
	killedAt := time.Now()
	atKill := p.msgs(worker.DefaultResultsStream)
	p.waitResults(jobs, 60*time.Second)
	took := time.Since(began)

	o := p.settled(seqs)
	if len(o.deadLetters) != 0 {
		t.Errorf("%d dead letters, want none:\n%s", len(o.deadLetters), describeDeadLetters(o.deadLetters))
	}
	if n := o.byOutcome[worker.OutcomeDeleted] + o.byOutcome[worker.OutcomeNotFound]; n != jobs {
		t.Errorf("outcomes %v: want every job deleted (or not_found, for the ones the killed worker deleted unrecorded)", o.byOutcome)
	}
	// not_found means a DELETE went through without a result: only a job the
	// killed worker held can be one, and it held at most its concurrency
	// in its slots and its prefetch, on their way, waiting for a slot or
	// for their result event's confirmation.
	held := worker.MaxHeld(concurrency)
	if n := o.byOutcome[worker.OutcomeNotFound]; n > held {
		t.Errorf("%d jobs ended not_found; the killed worker held at most %d", n, held)
	}
	if o.redelivered == 0 {
		t.Errorf("no job was delivered twice: the kill did not hit jobs in flight, so this test proved nothing")
	}
	if o.redelivered > held {
		t.Errorf("%d jobs were delivered more than once; the killed worker held at most %d", o.redelivered, held)
	}
	twice := 0
	for _, run := range runs {
		if !api.Deleted(poolOrg, run) {
			t.Errorf("run %s was not deleted", run)
		}
		if api.DeleteCount(poolOrg, run) > 1 {
			twice++
		}
	}
	if twice > held {
		t.Errorf("%d runs got more than one DELETE; the killed worker held at most %d", twice, held)
	}
	byWorker := map[string]int{}
	for _, r := range o.results {
		byWorker[r.Worker]++
		if r.Worker == w2.id && r.At.After(killedAt) {
			t.Errorf("job %d has a result from the killed worker dated after the kill", r.JobSeq)
		}
	}
	if byWorker[w1.id] == 0 || byWorker[w3.id] == 0 {
		t.Errorf("results by worker %v: both survivors should have worked", byWorker)
	}
	t.Logf("%d jobs in %s; SIGKILL at %d results; outcomes %v; %d delivered twice, %d runs got two DELETEs; results by worker %v; jobs stream empty %s after the last result",
		jobs, took.Round(time.Millisecond), atKill, o.byOutcome, o.redelivered, twice, byWorker, o.drained.Round(time.Millisecond))
}

// TestFaultNATSRestart: the NATS server is stopped and started again on the
// same store in the middle of a run. The workers reconnect by themselves
// and every job ends, once.
func TestFaultNATSRestart(t *testing.T) {
	const jobs, workers, concurrency = 1000, 2, 16
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.RecordRequests(false)
	api.SetLatency(3 * time.Millisecond)
	p := newPool(t, srv.URL(), api, "DELETER_ACK_WAIT=2s", "DELETER_CONCURRENCY="+strconv.Itoa(concurrency))
	ws := []*workerProc{p.start("w1"), p.start("w2")}
	p.waitPulling(workers)

	runs, bodies := p.addJobs("restart", jobs)
	seqs := p.publish(bodies)
	p.waitResults(jobs/3, 60*time.Second)
	before := p.msgs(worker.DefaultResultsStream)
	downAt := time.Now()
	srv.Shutdown()
	// Down until every worker has noticed, so that the restart is one they
	// must recover from rather than one they sleep through.
	p.waitUntil(30*time.Second, "every worker to notice NATS is gone", func() bool {
		for _, w := range ws {
			if len(logLines(w, "disconnected from NATS; reconnecting")) == 0 {
				return false
			}
		}
		return true
	})
	if err := srv.Restart(); err != nil {
		t.Fatalf("restarting NATS: %v", err)
	}
	down := time.Since(downAt)
	upAt := time.Now()
	p.waitResults(jobs, 90*time.Second)
	rest := time.Since(upAt)

	o := p.settled(seqs)
	p.everyJobDeleted(o, runs, workers*pastDelete(concurrency), "in flight at the restart")
	for _, w := range ws {
		if len(logLines(w, "reconnected to NATS")) == 0 {
			t.Errorf("worker %s never logged that it reconnected", w.id)
		}
	}
	p.alive()
	t.Logf("%d jobs; NATS down for %s at %d results; every result %s after it came back, jobs stream empty %s later; outcomes %v; %d delivered more than once; %d DELETEs for %d runs",
		jobs, down.Round(time.Millisecond), before, rest.Round(time.Millisecond), o.drained.Round(time.Millisecond),
		o.byOutcome, o.redelivered, api.DeleteRequestCount(), jobs)
}

// TestFaultClusterLeaderLoss: a three-node JetStream cluster with the
// streams at three replicas; the jobs stream's leader is shut down mid-run.
// The workers carry on through the other two nodes and nothing is lost.
func TestFaultClusterLeaderLoss(t *testing.T) {
	const jobs, workers, concurrency = 600, 3, 16
	nodes := testutil.JetStreamCluster(t, 3)
	api := testutil.NewFakeTallyfy(t)
	api.RecordRequests(false)
	api.SetLatency(3 * time.Millisecond)
	p := newPool(t, testutil.ClusterURL(nodes), api,
		"DELETER_STREAM_REPLICAS=3", "DELETER_ACK_WAIT=2s", "DELETER_CONCURRENCY="+strconv.Itoa(concurrency))
	// One worker provisions the replicated streams, then the others join:
	// starting them together is TestFaultClusterConcurrentStart's subject.
	p.start("w1")
	p.waitPulling(1)
	for i := 1; i < workers; i++ {
		p.start(fmt.Sprintf("w%d", i+1))
	}
	p.waitPulling(workers)
	info, err := p.streamInfo(worker.DefaultJobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("jobs stream has %d replicas, want 3 (DELETER_STREAM_REPLICAS)", info.Config.Replicas)
	}

	runs, bodies := p.addJobs("cluster", jobs)
	began := time.Now()
	seqs := p.publish(bodies)
	p.waitResults(jobs/3, 60*time.Second)

	p.waitUntil(30*time.Second, "the jobs stream's leader", func() bool {
		info, err = p.streamInfo(worker.DefaultJobsStream)
		return err == nil && info.Cluster != nil && info.Cluster.Leader != ""
	})
	oldLeader := info.Cluster.Leader
	consumerLeader := "?"
	if ci, err := p.consumerInfo(); err == nil && ci.Cluster != nil {
		consumerLeader = ci.Cluster.Leader
	}
	var victim *testutil.NATS
	for _, n := range nodes {
		if n.Server().Name() == oldLeader {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("no node is named %q", oldLeader)
	}
	before := p.msgs(worker.DefaultResultsStream)
	victim.Shutdown()
	downAt := time.Now()

	p.waitResults(jobs, 90*time.Second)
	rest := time.Since(downAt)
	// The test's own client may still be reconnecting, or asking a server
	// that has not heard of the new leader yet: a 2 s read can time out on
	// a loaded machine, so wait for an answer rather than fail on the first.
	p.waitUntil(30*time.Second, "the jobs stream's info after the shutdown", func() bool {
		info, err = p.streamInfo(worker.DefaultJobsStream)
		return err == nil
	})
	if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == oldLeader {
		t.Errorf("jobs stream leader after the shutdown: %+v, want a node other than %s", info.Cluster, oldLeader)
	}
	o := p.settled(seqs)
	p.everyJobDeleted(o, runs, workers*pastDelete(concurrency), "in flight at the shutdown")
	p.alive()
	t.Logf("%d jobs; stream leader %s (consumer leader %s) shut down at %d results after %s, new leader %s; every result %s after the shutdown, jobs stream empty %s later; outcomes %v; %d delivered more than once",
		jobs, oldLeader, consumerLeader, before, downAt.Sub(began).Round(time.Millisecond), info.Cluster.Leader,
		rest.Round(time.Millisecond), o.drained.Round(time.Millisecond), o.byOutcome, o.redelivered)
}

// TestFaultClusterConcurrentStart: a fresh pool of three workers starts at
// once against a three-node cluster, as a first deployment does; each
// provisions the replicated streams. All three must come up and work: a
// worker that gives up on start leaves the pool short (or crash-looping)
// for no reason but its siblings.
func TestFaultClusterConcurrentStart(t *testing.T) {
	const workers, jobs = 3, 30
	nodes := testutil.JetStreamCluster(t, 3)
	api := testutil.NewFakeTallyfy(t)
	p := newPool(t, testutil.ClusterURL(nodes), api, "DELETER_STREAM_REPLICAS=3")
	for i := range workers {
		p.start(fmt.Sprintf("w%d", i+1))
	}
	p.waitPulling(workers)
	runs, bodies := p.addJobs("together", jobs)
	seqs := p.publish(bodies)
	p.waitResults(jobs, 30*time.Second)
	o := p.settled(seqs)
	if o.byOutcome[worker.OutcomeDeleted] != jobs || len(o.deadLetters) != 0 {
		t.Errorf("outcomes %v, %d dead letters: want all %d deleted", o.byOutcome, len(o.deadLetters), jobs)
	}
	p.runsDeleted(runs)
}

// apiProxy is a reverse proxy in front of the fake for one worker, so that
// requests can be counted per worker.
type apiProxy struct {
	url      string // the worker's TALLYFY_API_URL
	total    atomic.Int64
	inFlight atomic.Int64
}

func newAPIProxy(t *testing.T, api *testutil.FakeTallyfy) *apiProxy {
	t.Helper()
	u, err := url.Parse(api.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	// A worker killed mid-call cancels its request; that is the test, not
	// an error worth a line.
	rp.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
	px := &apiProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		px.total.Add(1)
		px.inFlight.Add(1)
		defer px.inFlight.Add(-1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	px.url = srv.URL + u.Path
	return px
}

// TestFaultOutage: Tallyfy answers 503 for longer than a job's whole retry
// path (max deliveries × ack wait, plus the backoff), with three workers.
// Nothing is dead-lettered, everything is deleted after the recovery, and
// the breakers keep the load on the failing API bounded: before a breaker
// opens, a worker sends at most its breaker failures plus its concurrency;
// after, one probe per breaker timeout.
func TestFaultOutage(t *testing.T) {
	const (
		jobs            = 30
		workers         = 3
		concurrency     = 4
		maxDeliver      = 3
		backoff         = 100 * time.Millisecond
		ackWait         = time.Second
		breakerFailures = 3
		breakerTimeout  = 500 * time.Millisecond
	)
	retryPath := maxDeliver*ackWait + (maxDeliver-1)*backoff
	outage := retryPath + time.Second
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.SetOutage(testutil.Response{Status: 503, Body: `{"message":"Service Unavailable"}`})
	p := newPool(t, srv.URL(), api,
		"DELETER_CONCURRENCY="+strconv.Itoa(concurrency),
		"DELETER_MAX_DELIVER="+strconv.Itoa(maxDeliver),
		"DELETER_BACKOFF="+backoff.String(),
		"DELETER_ACK_WAIT="+ackWait.String(),
		"DELETER_BREAKER_FAILURES="+strconv.Itoa(breakerFailures),
		"DELETER_BREAKER_TIMEOUT="+breakerTimeout.String(),
		"DELETER_API_TIMEOUT=2s")
	ws := make([]*workerProc, workers)
	proxies := make([]*apiProxy, workers)
	for i := range ws {
		proxies[i] = newAPIProxy(t, api)
		ws[i] = p.start(fmt.Sprintf("w%d", i+1), "TALLYFY_API_URL="+proxies[i].url)
	}
	p.waitPulling(workers)

	runs, bodies := p.addJobs("outage", jobs)
	seqs := p.publish(bodies)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := api.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	outageBegan := time.Now()
	p.waitUntil(10*time.Second, "a breaker to open", func() bool {
		for _, w := range ws {
			if len(breakerMoves(w, "open")) > 0 {
				return true
			}
		}
		return false
	})
	// The outage is a length of time, not an event: hold it for longer
	// than a job's whole retry path while watching that no worker dies.
	p.waitUntil(outage+10*time.Second, "the outage to last "+outage.String(), func() bool { return time.Since(outageBegan) >= outage })
	during := make([]int64, workers)
	for i, px := range proxies {
		during[i] = px.total.Load()
	}
	total := api.RequestCount()
	lasted := time.Since(outageBegan)
	api.EndOutage()
	recoveryBegan := time.Now()
	p.waitResults(jobs, 30*time.Second)
	recovered := time.Since(recoveryBegan)

	o := p.settled(seqs)
	if len(o.deadLetters) != 0 {
		t.Errorf("an outage dead-lettered %d jobs, want none:\n%s", len(o.deadLetters), describeDeadLetters(o.deadLetters))
	}
	if o.byOutcome[worker.OutcomeDeleted] != jobs {
		t.Errorf("outcomes %v, want all %d deleted", o.byOutcome, jobs)
	}
	for _, run := range runs {
		if !api.Deleted(poolOrg, run) {
			t.Errorf("run %s was not deleted after the recovery", run)
		}
	}
	probes := int64((lasted+breakerTimeout-1)/breakerTimeout) + 1
	perWorker := breakerFailures + concurrency + probes
	for i, n := range during {
		if n > perWorker {
			t.Errorf("worker %s sent %d requests during the outage, more than %d (%d failures to open + %d in flight + %d probes)",
				ws[i].id, n, perWorker, breakerFailures, concurrency, probes)
		}
	}
	opens, handedBack := 0, 0
	for _, w := range ws {
		opens += len(breakerMoves(w, "open"))
		handedBack += len(logLines(w, "this worker cannot call Tallyfy: job handed back to the pool"))
	}
	t.Logf("outage of %s (retry path %s): Tallyfy received %d requests, by worker %v; bound %d per worker, %d for the pool; "+
		"%d breaker openings, %d jobs handed back; all %d deleted %s after the outage ended",
		lasted.Round(time.Millisecond), retryPath, total, during, perWorker, perWorker*workers,
		opens, handedBack, jobs, recovered.Round(time.Millisecond))
}

// breakerMoves returns the worker's logged breaker transitions to state.
func breakerMoves(w *workerProc, to string) []map[string]any {
	var out []map[string]any
	for _, l := range logLines(w, "circuit breaker changed state") {
		if l["to"] == to {
			out = append(out, l)
		}
	}
	return out
}

// TestFaultSlowAPI: Tallyfy answers slower than the ack wait. The worker
// keeps each job with InProgress, so JetStream never hands it to the other
// worker, and Tallyfy sees exactly one DELETE per job.
func TestFaultSlowAPI(t *testing.T) {
	const jobs = 12
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.SetLatency(2500 * time.Millisecond)
	p := newPool(t, srv.URL(), api, "DELETER_ACK_WAIT=1s", "DELETER_API_TIMEOUT=10s")
	p.start("w1")
	p.start("w2")
	p.waitPulling(2)

	runs, bodies := p.addJobs("slow", jobs)
	began := time.Now()
	seqs := p.publish(bodies)
	p.waitResults(jobs, 30*time.Second)
	took := time.Since(began)

	o := p.settled(seqs)
	if len(o.deadLetters) != 0 {
		t.Errorf("%d dead letters, want none:\n%s", len(o.deadLetters), describeDeadLetters(o.deadLetters))
	}
	for _, r := range o.results {
		if r.Outcome != worker.OutcomeDeleted || r.Attempts != 1 {
			t.Errorf("job %d: %s/%s attempts %d, want deleted on the first delivery", r.JobSeq, r.Outcome, r.Reason, r.Attempts)
		}
	}
	for _, run := range runs {
		if n := api.DeleteCount(poolOrg, run); n != 1 {
			t.Errorf("run %s got %d DELETE requests, want exactly 1", run, n)
		}
	}
	ci, err := p.consumerInfo()
	if err != nil {
		t.Fatal(err)
	}
	if ci.Delivered.Consumer != jobs {
		t.Errorf("the consumer made %d deliveries of %d jobs: the ack wait ran out on a job in hand", ci.Delivered.Consumer, jobs)
	}
	if took < 2500*time.Millisecond {
		t.Errorf("finished in %s, faster than the API's latency: the test did not hold jobs past the ack wait", took)
	}
	t.Logf("%d jobs at 2.5s latency with a 1s ack wait: done in %s, %d deliveries, %d DELETEs",
		jobs, took.Round(time.Millisecond), ci.Delivered.Consumer, api.DeleteRequestCount())
}

// TestFaultShutdownUnderLoad: SIGTERM with jobs in flight. The worker exits
// 0 within its shutdown timeout, and hands back what it could not finish so
// that the worker still running takes those jobs at once, not after the ack
// wait (30s here).
func TestFaultShutdownUnderLoad(t *testing.T) {
	const (
		jobs            = 24
		ackWait         = 30 * time.Second
		shutdownTimeout = 300 * time.Millisecond
		// Longer than the pull in progress (up to 2s) and the grace period
		// together: the jobs in the slots at SIGTERM cannot finish in time.
		latency = 4 * time.Second
	)
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.SetLatency(latency)
	p := newPool(t, srv.URL(), api, "DELETER_ACK_WAIT="+ackWait.String(), "DELETER_SHUTDOWN_TIMEOUT="+shutdownTimeout.String(),
		"DELETER_API_TIMEOUT=10s")
	leaving := p.start("leaving", "DELETER_CONCURRENCY=8")
	p.waitPulling(1)
	runs, bodies := p.addJobs("shutdown", jobs)
	seqs := p.publish(bodies)
	waitFor(t, 10*time.Second, "the first worker to fill its 8 slots", func() bool { return api.RequestCount() >= 8 })
	// The second has slots to spare, so it can take handed-back jobs at once.
	staying := p.start("staying", "DELETER_CONCURRENCY=32")
	p.waitUntil(10*time.Second, "every job to be in flight", func() bool { return api.RequestCount() >= jobs })

	p.terminate(leaving)
	termAt := time.Now()
	code := p.exitWithin(leaving, 10*time.Second)
	exited := time.Since(termAt)
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	// The README: the pull in progress ends within 2s, then in-flight jobs
	// get the shutdown timeout.
	if limit := shutdownTimeout + 2*time.Second + time.Second; exited > limit {
		t.Errorf("exited %s after SIGTERM, more than %s", exited.Round(time.Millisecond), limit)
	}
	handedBack := map[uint64]bool{}
	for _, l := range logLines(leaving, "shutting down: job handed back") {
		if seq, ok := l["job_seq"].(float64); ok {
			handedBack[uint64(seq)] = true
		}
	}
	if len(handedBack) == 0 {
		t.Fatalf("the leaving worker handed back no job: it had none in flight, so this test proved nothing")
	}

	p.waitResults(jobs, ackWait)
	allDone := time.Since(termAt)
	o := p.settled(seqs)
	if len(o.deadLetters) != 0 {
		t.Errorf("%d dead letters, want none:\n%s", len(o.deadLetters), describeDeadLetters(o.deadLetters))
	}
	var slowest time.Duration
	for seq := range handedBack {
		r, ok := o.results[seq]
		if !ok {
			continue // settled reported it
		}
		if r.Worker != staying.id || r.Attempts != 2 || r.Outcome != worker.OutcomeDeleted {
			t.Errorf("handed-back job %d: %s/%s by %s on attempt %d, want deleted by %s on attempt 2", seq, r.Outcome, r.Reason, r.Worker, r.Attempts, staying.id)
		}
		slowest = max(slowest, r.At.Sub(termAt))
	}
	// Taken at once: one API latency after the hand-back, far from the
	// ack wait a lost job would have waited for.
	if limit := ackWait / 3; slowest > limit {
		t.Errorf("a handed-back job finished %s after SIGTERM, more than %s: it waited for the ack wait instead of being taken at once", slowest.Round(time.Millisecond), limit)
	}
	p.runsDeleted(runs)
	t.Logf("exit 0 %s after SIGTERM; %d jobs handed back, the last finished by %s %s after SIGTERM (ack wait %s); all %d done in %s",
		exited.Round(time.Millisecond), len(handedBack), staying.id, slowest.Round(time.Millisecond), ackWait, jobs, allDone.Round(time.Millisecond))
}

// gzipBomb is a gzip stream of n MiB of zeros, about 1 KiB per MiB:
// concatenated gzip members, which Go's gzip reader reads as one stream.
func gzipBomb(t *testing.T, mib int) string {
	t.Helper()
	var member bytes.Buffer
	zw, err := gzip.NewWriterLevel(&member, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return strings.Repeat(member.String(), mib)
}

// TestFaultHostileAPI: Tallyfy (or something in front of it) answers with
// 100 MB bodies, bodies that never end, gzip bombs, HTML error pages,
// invalid JSON and redirects to another host. Each job gets the outcome the
// README's table gives, the worker's memory stays bounded, and the bearer
// token goes nowhere but the API.
func TestFaultHostileAPI(t *testing.T) {
	const (
		maxDeliver = 2
		rssLimit   = 150 << 20
		hundredMB  = 100 << 20
	)
	var thiefCalls atomic.Int64
	var thiefSaw sync.Map // Authorization headers the thief received
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		thiefCalls.Add(1)
		thiefSaw.Store(r.Header.Get("Authorization"), true)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(thief.Close)
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	tok := api.Token()

	html := func(status int) string {
		return fmt.Sprintf("<!DOCTYPE html><html><head><title>%d</title></head><body><h1>%d %s</h1><p>nginx</p></body></html>",
			status, status, http.StatusText(status))
	}
	htmlHeader := http.Header{"Content-Type": {"text/html; charset=utf-8"}}
	gzHeader := http.Header{"Content-Encoding": {"gzip"}}
	bomb := gzipBomb(t, 100)
	redirect := func(status int) testutil.Response {
		return testutil.Response{Status: status, RedirectTo: thief.URL + "/api/organizations/org1/runs/stolen/delete"}
	}
	twice := func(r testutil.Response) []testutil.Response { return []testutil.Response{r, r} }
	one := func(r testutil.Response) []testutil.Response { return []testutil.Response{r} }

	type row struct {
		run      string
		answers  []testutil.Response // one per delivery
		outcome  worker.Outcome
		reason   worker.Reason
		status   int
		attempts int
	}
	rows := []row{
		{"html-500", twice(testutil.Response{Status: 500, Body: html(500), Header: htmlHeader}), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 500, maxDeliver},
		{"html-502", twice(testutil.Response{Status: 502, Body: html(502), Header: htmlHeader}), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 502, maxDeliver},
		{"endless-503", twice(testutil.Response{Status: 503, Endless: true}), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 503, maxDeliver},
		{"bomb-500", twice(testutil.Response{Status: 500, Body: bomb, Header: gzHeader}), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 500, maxDeliver},
		{"badjson-404", one(testutil.Response{Status: 404, Body: `{"message": "Process not fou`}), worker.OutcomeNotFound, "", 404, 1},
		{"html-404", one(testutil.Response{Status: 404, Body: html(404), Header: htmlHeader}), worker.OutcomeNotFound, "", 404, 1},
		{"html-422", one(testutil.Response{Status: 422, Body: html(422), Header: htmlHeader}), worker.OutcomeDeadLettered, worker.ReasonNotArchived, 422, 1},
		{"big-422", one(testutil.Response{Status: 422, BodySize: hundredMB}), worker.OutcomeDeadLettered, worker.ReasonNotArchived, 422, 1},
		{"endless-403", one(testutil.Response{Status: 403, Endless: true}), worker.OutcomeDeadLettered, worker.ReasonForbidden, 403, 1},
		{"echo-400", one(testutil.Response{Status: 400, Body: `{"message":"bad request for Bearer ` + tok + `","token":"` + tok + `"}`}), worker.OutcomeDeadLettered, worker.ReasonRejected, 400, 1},
		{"redirect-301", twice(redirect(301)), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 301, maxDeliver},
		{"redirect-302", twice(redirect(302)), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 302, maxDeliver},
		{"redirect-307", twice(redirect(307)), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 307, maxDeliver},
		{"redirect-308", twice(redirect(308)), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 308, maxDeliver},
		{"bomb-200", one(testutil.Response{Status: 200, Body: bomb, Header: gzHeader}), worker.OutcomeDeleted, "", 200, 1},
		{"badjson-200", one(testutil.Response{Status: 200, Body: `{"data":{"id":`}), worker.OutcomeDeleted, "", 200, 1},
	}
	// Several at once of the ones that would cost memory if read whole.
	for i := range 4 {
		rows = append(rows,
			row{fmt.Sprintf("big-200-%d", i), one(testutil.Response{Status: 200, BodySize: hundredMB}), worker.OutcomeDeleted, "", 200, 1},
			row{fmt.Sprintf("endless-200-%d", i), one(testutil.Response{Status: 200, Endless: true}), worker.OutcomeDeleted, "", 200, 1},
			row{fmt.Sprintf("big-500-%d", i), twice(testutil.Response{Status: 500, BodySize: hundredMB}), worker.OutcomeDeadLettered, worker.ReasonRetriesExhausted, 500, maxDeliver},
		)
	}
	for _, r := range rows {
		api.Script(poolOrg, r.run, r.answers...)
	}

	p := newPool(t, srv.URL(), api,
		"DELETER_MAX_DELIVER="+strconv.Itoa(maxDeliver),
		"DELETER_BACKOFF=100ms",
		"DELETER_ACK_WAIT=5s",
		"DELETER_API_TIMEOUT=3s",
		"DELETER_CONCURRENCY=32",
		// Every failure here is one job's; the breaker must not turn them
		// into waits that use up the scripted answers out of order.
		"DELETER_BREAKER_FAILURES=1000")
	w := p.start("hostile")
	p.waitPulling(1)
	bySeq := map[uint64]row{}
	seqs := make([]uint64, 0, len(rows))
	began := time.Now()
	for _, r := range rows {
		seq := p.publishOne(fmt.Sprintf(`{"run_id":%q}`, r.run))
		bySeq[seq] = r
		seqs = append(seqs, seq)
	}
	p.waitResults(len(rows), 60*time.Second)
	took := time.Since(began)
	rss, err := peakRSS(w.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("reading the worker's peak RSS: %v", err)
	}

	o := p.settled(seqs)
	dlq := map[string]int{}
	for _, m := range o.deadLetters {
		dlq[m.Headers().Get(worker.HeaderJobSeq)]++
		for k, vs := range m.Headers() {
			for _, v := range vs {
				if strings.Contains(v, tok) {
					t.Errorf("dead letter header %s holds the token: %q", k, v)
				}
			}
		}
	}
	for _, seq := range seqs {
		want := bySeq[seq]
		got, ok := o.results[seq]
		if !ok {
			continue // settled reported it
		}
		if got.Outcome != want.outcome || got.Reason != want.reason || got.Status != want.status || got.Attempts != want.attempts {
			t.Errorf("%s: %s/%s status %d attempts %d, want %s/%s status %d attempts %d (error %q)", want.run,
				got.Outcome, got.Reason, got.Status, got.Attempts, want.outcome, want.reason, want.status, want.attempts, got.Error)
		}
		if strings.Contains(got.Error, tok) {
			t.Errorf("%s: result error holds the token: %q", want.run, got.Error)
		}
		if len(got.Error) > 1024 {
			t.Errorf("%s: result error is %d bytes, more than 1 KiB", want.run, len(got.Error))
		}
		wantDL := 0
		if want.outcome == worker.OutcomeDeadLettered {
			wantDL = 1
		}
		if n := dlq[strconv.FormatUint(seq, 10)]; n != wantDL {
			t.Errorf("%s: %d dead letters, want %d", want.run, n, wantDL)
		}
		if n := api.DeleteCount(poolOrg, want.run); n != want.attempts {
			t.Errorf("%s: %d DELETE requests, want %d (one per delivery)", want.run, n, want.attempts)
		}
	}
	if n := thiefCalls.Load(); n != 0 {
		var auth []string
		thiefSaw.Range(func(k, _ any) bool { auth = append(auth, fmt.Sprint(k)); return true })
		t.Errorf("the redirect target was called %d times (Authorization headers %q): the worker followed a redirect", n, auth)
	}
	if strings.Contains(w.logs.String(), tok) {
		t.Errorf("the token appears in the worker's log")
	}
	if rss > rssLimit {
		t.Errorf("peak RSS %d MiB, more than %d MiB: a hostile body was read whole", rss>>20, rssLimit>>20)
	}
	var offered int64
	endless, bombs := 0, 0
	for _, r := range rows {
		for _, a := range r.answers {
			offered += a.BodySize
			if a.Endless {
				endless++
			}
			if a.Body == bomb {
				bombs++
			}
		}
	}
	t.Logf("%d jobs, %d hostile answers: %d MiB of plain bodies, %d gzip bombs of 100 MiB, %d endless bodies, in %s; worker peak RSS (VmHWM) %.1f MiB; %d dead letters",
		len(rows), len(api.Requests()), offered>>20, bombs, endless, took.Round(time.Millisecond), float64(rss)/(1<<20), len(o.deadLetters))
}

// TestFaultMaxDeliveriesSweeper: a worker is killed while it holds a job's
// last delivery. JetStream will not deliver it again, and in a work-queue
// stream it would stay forever without an outcome; the pool's sweeper hears
// the server's max-deliveries advisory, dead-letters it max_deliveries and
// removes it from the jobs stream.
//
// Needs the stranded-job sweeper (worker/pool.go).
func TestFaultMaxDeliveriesSweeper(t *testing.T) {
	const maxDeliver = 2
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	// The first delivery fails and is retried; the last one hangs in the
	// API until the worker holding it is killed.
	api.Script(poolOrg, "stranded",
		testutil.Response{Status: 503},
		testutil.Response{Status: 200, Delay: time.Minute})
	p := newPool(t, srv.URL(), api,
		"DELETER_MAX_DELIVER="+strconv.Itoa(maxDeliver),
		"DELETER_BACKOFF=100ms",
		"DELETER_ACK_WAIT=1s",
		"DELETER_API_TIMEOUT=2m",
		"DELETER_BREAKER_FAILURES=100")
	// One slot, so that it holds the job and pulls nothing else.
	doomed := p.start("doomed", "DELETER_CONCURRENCY=1")
	p.waitPulling(1)
	body := `{"org_id":"org1","run_id":"stranded","request_id":"gdpr-stranded"}`
	seq := p.publishOne(body)
	waitFor(t, 10*time.Second, "the job's last delivery to reach Tallyfy", func() bool { return api.DeleteCount(poolOrg, "stranded") >= maxDeliver })

	// A survivor, listening for the advisory. It cannot take the job: the
	// doomed worker holds it, keeping its ack wait alive.
	p.start("survivor")
	p.waitPulling(1)
	p.kill(doomed)
	killedAt := time.Now()

	p.waitUntil(15*time.Second, "the stranded job's dead letter", func() bool { return p.msgs(worker.DefaultDLQStream) >= 1 })
	swept := time.Since(killedAt)
	p.waitResults(1, 10*time.Second)
	o := p.settled([]uint64{seq})
	if len(o.deadLetters) != 1 {
		t.Fatalf("%d dead letters, want 1:\n%s", len(o.deadLetters), describeDeadLetters(o.deadLetters))
	}
	dl := o.deadLetters[0]
	if want := worker.DefaultDLQSubject + ".max_deliveries"; dl.Subject() != want {
		t.Errorf("dead letter on %s, want %s", dl.Subject(), want)
	}
	if string(dl.Data()) != body {
		t.Errorf("dead letter body %q, want the job's bytes %q", dl.Data(), body)
	}
	h := dl.Headers()
	for k, v := range map[string]string{
		worker.HeaderReason:   "max_deliveries",
		worker.HeaderJobSeq:   strconv.FormatUint(seq, 10),
		worker.HeaderAttempts: strconv.Itoa(maxDeliver),
		worker.HeaderRunID:    "stranded",
		"Nats-Msg-Id":         "dlq-" + strconv.FormatUint(seq, 10),
	} {
		if got := h.Get(k); got != v {
			t.Errorf("dead letter header %s = %q, want %q", k, got, v)
		}
	}
	if r, ok := o.results[seq]; ok && (r.Outcome != worker.OutcomeDeadLettered || r.Reason != "max_deliveries" || r.RunID != "stranded") {
		t.Errorf("result %s/%s for run %q, want dead_lettered/max_deliveries for stranded", r.Outcome, r.Reason, r.RunID)
	}
	if n := api.DeleteCount(poolOrg, "stranded"); n != maxDeliver {
		t.Errorf("%d DELETE requests, want %d: a job past its delivery limit must not be tried again", n, maxDeliver)
	}
	t.Logf("stranded job %d dead-lettered max_deliveries %s after its holder was killed (ack wait 1s)", seq, swept.Round(time.Millisecond))
}

// TestFaultShutdownDuringOutage: the README promises that an outage of any
// length dead-letters nothing. Here a job spends its deliveries the
// documented way (failures while the breaker is still closed); its last
// delivery opens the breaker, so the worker hands it back at once as a copy
// (a nak would strand it), and holds nothing when it is stopped with
// SIGTERM, as a deploy would. After the outage the job must still be
// deleted, not dead-lettered.
func TestFaultShutdownDuringOutage(t *testing.T) {
	const maxDeliver = 2
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.AddRun(poolOrg, "held", true)
	api.SetOutage(testutil.Response{Status: 503})
	p := newPool(t, srv.URL(), api,
		"DELETER_MAX_DELIVER="+strconv.Itoa(maxDeliver),
		"DELETER_BACKOFF=100ms",
		"DELETER_BREAKER_FAILURES="+strconv.Itoa(maxDeliver),
		"DELETER_BREAKER_TIMEOUT=3s", // no probe before the SIGTERM
		"DELETER_API_TIMEOUT=1s",
		"DELETER_ACK_WAIT=30s",
		"DELETER_SHUTDOWN_TIMEOUT=300ms")
	leaving := p.start("leaving")
	p.waitPulling(1)
	seq := p.publishOne(`{"run_id":"held"}`)
	// Delivery 1 fails with the breaker closed and is retried; delivery 2,
	// the last, fails and opens the breaker, so the job is handed back.
	p.waitUntil(10*time.Second, "the job to be handed back on its last delivery", func() bool {
		return len(logLines(leaving, "this worker cannot call Tallyfy: job handed back to the pool")) == 1
	})
	if n := api.DeleteCount(poolOrg, "held"); n != maxDeliver {
		t.Fatalf("%d DELETEs before the breaker opened, want %d", n, maxDeliver)
	}
	if n := len(breakerMoves(leaving, "open")); n != 1 {
		t.Fatalf("breaker opened %d times, want once", n)
	}
	p.start("staying") // takes the job over (and hears the advisories)
	p.terminate(leaving)
	if code := p.exitWithin(leaving, 10*time.Second); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	if n := len(logLines(leaving, "shutting down: job handed back")); n != 0 {
		t.Errorf("the leaving worker handed back %d jobs at shutdown: it should have held none", n)
	}
	api.EndOutage()

	p.waitResults(1, 30*time.Second)
	o := p.settled([]uint64{seq})
	r := o.results[seq]
	if r.Outcome != worker.OutcomeDeleted || len(o.deadLetters) != 0 {
		t.Errorf("after an outage and one graceful shutdown the job ended %s/%s (by %s, attempts %d, error %q), with %d dead letters; want deleted: "+
			"handing back a job held on its last delivery spends a delivery it does not have",
			r.Outcome, r.Reason, r.Worker, r.Attempts, r.Error, len(o.deadLetters))
	}
	if !api.Deleted(poolOrg, "held") {
		t.Errorf("the run was never deleted (%d DELETEs, all during the outage)", api.DeleteCount(poolOrg, "held"))
	}
}

// TestPoolSoak is the long version of the pool tests: 30,000 jobs, four
// workers, a SIGKILL and a replacement every 5,000 results and a NATS
// restart half-way. Opt in with TALLYFY_SOAK=1:
//
//	TALLYFY_SOAK=1 go test -count=1 -run TestPoolSoak -timeout 30m -v ./cmd/tallyfy-deleter/
func TestPoolSoak(t *testing.T) {
	if os.Getenv("TALLYFY_SOAK") == "" {
		t.Skip("soak test: set TALLYFY_SOAK=1 to run it")
	}
	const jobs, workers, concurrency = 30000, 4, 16
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	api.RecordRequests(false)
	api.SetLatency(2 * time.Millisecond)
	p := newPool(t, srv.URL(), api, "DELETER_ACK_WAIT=2s", "DELETER_CONCURRENCY="+strconv.Itoa(concurrency))
	var live []*workerProc
	next := 0
	spawn := func() {
		next++
		live = append(live, p.start(fmt.Sprintf("w%d", next)))
	}
	for range workers {
		spawn()
	}
	p.waitPulling(workers)
	runs, bodies := p.addJobs("soak", jobs)
	began := time.Now()
	seqs := p.publish(bodies)
	kills, restarted := 0, false
	for mark := 5000; mark < jobs; mark += 5000 {
		p.waitResults(mark, 5*time.Minute)
		if !restarted && mark >= jobs/2 {
			if err := srv.Restart(); err != nil {
				t.Fatalf("restarting NATS: %v", err)
			}
			restarted = true
			continue
		}
		i := rand.IntN(len(live))
		p.kill(live[i])
		live = slices.Delete(live, i, i+1)
		kills++
		spawn()
	}
	p.waitResults(jobs, 10*time.Minute)
	o := p.settled(seqs)
	p.everyJobDeleted(o, runs, (kills+workers)*pastDelete(concurrency), "in flight at each kill and at the restart")
	t.Logf("%d jobs in %s with %d SIGKILLs and a NATS restart; outcomes %v; %d delivered more than once",
		jobs, time.Since(began).Round(time.Second), kills, o.byOutcome, o.redelivered)
}
