package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// poolOrg is the organization of every job the pool tests publish.
const poolOrg = "org1"

// pool is a set of `tallyfy-deleter run` processes sharing one NATS server
// (or cluster) and one fake Tallyfy, as the replicas of a deployment do. It
// publishes jobs and reads back what the results, dead-letter and jobs
// streams hold. Every process it starts is killed when the test ends, and
// its log is shown only if the test failed.
type pool struct {
	t         *testing.T
	natsURL   string
	api       *testutil.FakeTallyfy
	tokenFile string
	// settings go to every worker after the defaults, before a worker's own.
	settings []string
	js       jetstream.JetStream

	mu      sync.Mutex
	workers []*workerProc
}

// workerProc is one running `tallyfy-deleter run`.
type workerProc struct {
	id     string
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan struct{} // closed when the process has exited
	err    error         // Wait's error; read it after exited is closed
	// ending is set before the test stops it on purpose, so that its exit
	// is not reported as a crash.
	ending atomic.Bool
}

// newPool prepares a pool against natsURL (one URL or a comma list) and api.
// settings are KEY=value pairs every worker gets.
func newPool(t *testing.T, natsURL string, api *testutil.FakeTallyfy, settings ...string) *pool {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(api.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, js := testutil.Connect(t, natsURL)
	return &pool{t: t, natsURL: natsURL, api: api, tokenFile: tokenFile, settings: settings, js: js}
}

// hermeticEnviron is the test's environment without anything the worker
// reads, so that a developer's NATS_URL or LOG_LEVEL cannot leak in.
func hermeticEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "TALLYFY_") || strings.HasPrefix(k, "DELETER_") || strings.HasPrefix(k, "LOG_") || strings.HasPrefix(k, "OTEL_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// start runs a worker named id; extra settings (KEY=value) override the
// pool's. os/exec keeps the last value of a duplicated key.
func (p *pool) start(id string, extra ...string) *workerProc {
	p.t.Helper()
	cmd := exec.Command(binary, "run")
	cmd.Env = append(hermeticEnviron(),
		"NATS_URL="+p.natsURL,
		"TALLYFY_API_URL="+p.api.URL(),
		"TALLYFY_ACCESS_TOKEN_FILE="+p.tokenFile,
		"TALLYFY_ORG_ID="+poolOrg,
		"DELETER_WORKER_ID="+id,
		"DELETER_CONCURRENCY=16",
		"DELETER_ACK_WAIT=2s",
		"DELETER_API_TIMEOUT=5s",
		"DELETER_SHUTDOWN_TIMEOUT=2s",
		"LOG_LEVEL=debug",
		// Several workers share the host: each takes a port of its own for
		// /metrics and the probes.
		"DELETER_HTTP_ADDR=127.0.0.1:0",
	)
	cmd.Env = append(cmd.Env, p.settings...)
	cmd.Env = append(cmd.Env, extra...)
	w := &workerProc{id: id, cmd: cmd, logs: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = w.logs
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting worker %s: %v", id, err)
	}
	go func() {
		w.err = cmd.Wait()
		close(w.exited)
	}()
	p.mu.Lock()
	p.workers = append(p.workers, w)
	p.mu.Unlock()
	p.t.Cleanup(func() {
		w.ending.Store(true)
		_ = cmd.Process.Kill()
		select {
		case <-w.exited:
		case <-time.After(10 * time.Second):
			p.t.Errorf("worker %s (pid %d) did not exit after SIGKILL", id, cmd.Process.Pid)
		}
		if p.t.Failed() {
			p.t.Logf("worker %s log (stderr), excerpt:\n%s", id, logExcerpt(w.logs.String(), 40, 40))
		}
	})
	return w
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *pool) kill(w *workerProc) {
	p.t.Helper()
	w.ending.Store(true)
	if err := w.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("killing worker %s: %v", w.id, err)
	}
	select {
	case <-w.exited:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("worker %s still running 10s after SIGKILL", w.id)
	}
}

// terminate sends SIGTERM, as an orchestrator does; wait with exitWithin.
func (p *pool) terminate(w *workerProc) {
	p.t.Helper()
	w.ending.Store(true)
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM to worker %s: %v", w.id, err)
	}
}

// exitWithin waits for w to exit and returns its exit status.
func (p *pool) exitWithin(w *workerProc, within time.Duration) int {
	p.t.Helper()
	select {
	case <-w.exited:
	case <-time.After(within):
		p.t.Fatalf("worker %s still running %s after being told to stop", w.id, within)
	}
	var exitErr *exec.ExitError
	switch {
	case w.err == nil:
		return 0
	case errors.As(w.err, &exitErr):
		return exitErr.ExitCode()
	}
	p.t.Fatalf("worker %s: %v", w.id, w.err)
	return -1
}

// peakRSS is the process's peak resident set (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmHWM %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmHWM line in /proc/<pid>/status")
}

// alive fails the test at once if a worker that nobody stopped has exited:
// waiting out a deadline for jobs a crashed pool will never finish only
// hides the crash.
func (p *pool) alive() {
	p.t.Helper()
	p.mu.Lock()
	ws := append([]*workerProc(nil), p.workers...)
	p.mu.Unlock()
	for _, w := range ws {
		select {
		case <-w.exited:
			if !w.ending.Load() {
				p.t.Fatalf("worker %s exited on its own (%v); log excerpt:\n%s", w.id, w.err, logExcerpt(w.logs.String(), 40, 40))
			}
		default:
		}
	}
}

// waitUntil polls cond until it holds, failing after within or as soon as a
// worker crashes.
func (p *pool) waitUntil(within time.Duration, what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		p.alive()
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// streamInfo reads a stream's info; errors are returned, not fatal, since
// it is polled through restarts and leader changes.
func (p *pool) streamInfo(name string) (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := p.js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

// consumerInfo reads the pool's durable consumer; errors are returned.
func (p *pool) consumerInfo() (*jetstream.ConsumerInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := p.js.Consumer(ctx, worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// msgs is how many messages a stream holds now; -1 if it cannot be read.
func (p *pool) msgs(name string) int {
	info, err := p.streamInfo(name)
	if err != nil {
		return -1
	}
	return int(info.State.Msgs)
}

// waitPulling waits until n workers have a pull request waiting on the
// consumer: they are provisioned, bound and asking for jobs.
func (p *pool) waitPulling(n int) {
	p.t.Helper()
	p.waitUntil(30*time.Second, fmt.Sprintf("%d workers pulling", n), func() bool {
		info, err := p.consumerInfo()
		return err == nil && info.NumWaiting >= n
	})
}

// addJobs adds n archived runs to the fake and returns their IDs and job
// bodies.
func (p *pool) addJobs(prefix string, n int) (runs, bodies []string) {
	runs = make([]string, n)
	bodies = make([]string, n)
	for i := range n {
		runs[i] = fmt.Sprintf("%s-%d", prefix, i)
		bodies[i] = fmt.Sprintf(`{"org_id":%q,"run_id":%q,"request_id":"req-%s"}`, poolOrg, runs[i], runs[i])
	}
	p.api.AddRuns(poolOrg, runs, true)
	return runs, bodies
}

// publish sends the bodies as jobs, confirmed, and returns their stream
// sequences in order.
func (p *pool) publish(bodies []string) []uint64 {
	p.t.Helper()
	const window = 500
	seqs := make([]uint64, 0, len(bodies))
	for start := 0; start < len(bodies); start += window {
		end := min(start+window, len(bodies))
		futures := make([]jetstream.PubAckFuture, 0, end-start)
		for _, b := range bodies[start:end] {
			f, err := p.js.PublishAsync(worker.DefaultJobsSubject, []byte(b))
			if err != nil {
				p.t.Fatalf("publishing job %d: %v", len(seqs)+len(futures), err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case ack := <-f.Ok():
				seqs = append(seqs, ack.Sequence)
			case err := <-f.Err():
				p.t.Fatalf("publishing job %d: %v", len(seqs), err)
			case <-time.After(30 * time.Second):
				p.t.Fatalf("publishing job %d: no ack within 30s", len(seqs))
			}
		}
	}
	return seqs
}

// publishOne sends one job and returns its stream sequence.
func (p *pool) publishOne(body string) uint64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := p.js.Publish(ctx, worker.DefaultJobsSubject, []byte(body))
	if err != nil {
		p.t.Fatalf("publishing job: %v", err)
	}
	return ack.Sequence
}

// waitResults waits until the results stream holds at least n events.
func (p *pool) waitResults(n int, within time.Duration) {
	p.t.Helper()
	p.waitUntil(within, fmt.Sprintf("%d result events", n), func() bool { return p.msgs(worker.DefaultResultsStream) >= n })
}

// readStream returns every message a stream holds, in order. It reads
// through an ordered consumer and starts a new one where the last left off
// if a leader change or a reconnect interrupts it.
func (p *pool) readStream(name string) []jetstream.Msg {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var info *jetstream.StreamInfo
	var err error
	for info, err = p.streamInfo(name); err != nil; info, err = p.streamInfo(name) {
		if ctx.Err() != nil {
			p.t.Fatalf("stream %s info: %v", name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	var out []jetstream.Msg
	next, last := info.State.FirstSeq, info.State.LastSeq
	for next <= last {
		if ctx.Err() != nil {
			p.t.Fatalf("reading stream %s: %d of %d messages, then: %v", name, len(out), info.State.Msgs, err)
		}
		var cons jetstream.Consumer
		cons, err = p.js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next,
		})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for next <= last {
			var m jetstream.Msg
			m, err = cons.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				break
			}
			meta, merr := m.Metadata()
			if merr != nil {
				p.t.Fatalf("reading stream %s: %v", name, merr)
			}
			if meta.Sequence.Stream >= next {
				out = append(out, m)
				next = meta.Sequence.Stream + 1
			}
		}
	}
	return out
}

// outcome is what the streams say about a finished batch of jobs.
type outcome struct {
	results     map[uint64]worker.Result // by job sequence
	byOutcome   map[worker.Outcome]int
	deadLetters []jetstream.Msg
	redelivered int // jobs whose result says attempts > 1
	// drained is how long after every result was read the jobs stream and
	// the consumer were found empty: a job whose ack was lost is finished
	// again (and de-duplicated) only after its ack wait.
	drained time.Duration
}

// everyJobDeleted is how a pool test that loses nothing ends: no dead
// letters; every job deleted, or not_found for at most maxNotFound jobs
// whose DELETE went through without a recorded result (those in flight
// when something failed, as when says); every run gone.
// pastDelete is how many jobs one worker at concurrency c can hold whose
// DELETE may already have been sent: its slots and its spare room, where
// finished jobs wait for their result event's confirmation (README,
// "Scaling the pool"). A fault that cuts those confirmations off sends each
// of them back, and its redelivery finds the run gone: not_found.
func pastDelete(c int) int { return c + min(c, 64) + 64 }

func (p *pool) everyJobDeleted(o outcome, runs []string, maxNotFound int, when string) {
	p.t.Helper()
	if len(o.deadLetters) != 0 {
		p.t.Errorf("%d dead letters, want none:\n%s", len(o.deadLetters), describeDeadLetters(o.deadLetters))
	}
	if n := o.byOutcome[worker.OutcomeDeleted] + o.byOutcome[worker.OutcomeNotFound]; n != len(runs) {
		p.t.Errorf("outcomes %v: want every job deleted", o.byOutcome)
	}
	if n := o.byOutcome[worker.OutcomeNotFound]; n > maxNotFound {
		p.t.Errorf("%d jobs ended not_found; at most the %d %s may", n, maxNotFound, when)
	}
	p.runsDeleted(runs)
}

// runsDeleted checks that the fake API deleted every run.
func (p *pool) runsDeleted(runs []string) {
	p.t.Helper()
	for _, run := range runs {
		if !p.api.Deleted(poolOrg, run) {
			p.t.Errorf("run %s was not deleted", run)
		}
	}
}

// settled checks what every finished run must leave behind, whatever went
// wrong on the way: each job in seqs has exactly one result event (and no
// event names a job that was not published), the jobs stream is empty and
// the consumer holds nothing. It returns the results and dead letters for
// the test's own assertions.
func (p *pool) settled(seqs []uint64) outcome {
	p.t.Helper()
	want := make(map[uint64]bool, len(seqs))
	for _, s := range seqs {
		want[s] = true
	}
	o := outcome{results: map[uint64]worker.Result{}, byOutcome: map[worker.Outcome]int{}}
	perRun := map[string]int{}
	for _, m := range p.readStream(worker.DefaultResultsStream) {
		var r worker.Result
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			p.t.Errorf("result event is not JSON: %q", m.Data())
			continue
		}
		if !want[r.JobSeq] {
			p.t.Errorf("result event for job %d, which was not published here: %s", r.JobSeq, m.Data())
			continue
		}
		if prev, dup := o.results[r.JobSeq]; dup {
			p.t.Errorf("job %d has two result events: %s/%s by %s, then %s/%s by %s",
				r.JobSeq, prev.Outcome, prev.Reason, prev.Worker, r.Outcome, r.Reason, r.Worker)
			continue
		}
		if got, want := m.Subject(), worker.DefaultResultsSubject+"."+string(r.Outcome); got != want {
			p.t.Errorf("job %d: result on %s, want %s", r.JobSeq, got, want)
		}
		o.results[r.JobSeq] = r
		o.byOutcome[r.Outcome]++
		perRun[r.RunID]++
		if r.Attempts > 1 {
			o.redelivered++
		}
	}
	missing := 0
	for _, s := range seqs {
		if _, ok := o.results[s]; !ok {
			if missing < 10 {
				p.t.Errorf("job %d has no result event", s)
			}
			missing++
		}
	}
	if missing > 0 {
		p.t.Errorf("%d of %d jobs have no result event", missing, len(seqs))
	}
	for run, n := range perRun {
		if n > 1 && run != "" {
			p.t.Errorf("run %s has %d result events", run, n)
		}
	}
	o.deadLetters = p.readStream(worker.DefaultDLQStream)
	// A job can have its result and still be in the jobs stream: its ack was
	// lost (a NATS restart, a leader change, a killed worker), so JetStream
	// delivers it again after the ack wait and the redelivery's event is
	// de-duplicated. Give that time, and say how long it took.
	var last string
	began := time.Now()
	deadline := began.Add(30 * time.Second)
	for {
		info, ierr := p.streamInfo(worker.DefaultJobsStream)
		ci, cerr := p.consumerInfo()
		switch {
		case ierr != nil:
			last = fmt.Sprintf("jobs stream: %v", ierr)
		case cerr != nil:
			last = fmt.Sprintf("consumer: %v", cerr)
		case info.State.Msgs != 0:
			last = fmt.Sprintf("jobs stream still holds %d jobs (first seq %d)", info.State.Msgs, info.State.FirstSeq)
		case ci.NumAckPending != 0 || ci.NumPending != 0:
			last = fmt.Sprintf("consumer still has %d pending and %d unacked", ci.NumPending, ci.NumAckPending)
		default:
			o.drained = time.Since(began)
			return o
		}
		if time.Now().After(deadline) {
			p.t.Errorf("after every job has its result: %s", last)
			return o
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// describeDeadLetters lists dead letters for a failure message.
func describeDeadLetters(dls []jetstream.Msg) string {
	var b strings.Builder
	for i, m := range dls {
		if i == 10 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(dls)-10)
			break
		}
		h := m.Headers()
		fmt.Fprintf(&b, "  job %s on %s: status %q attempts %s worker %s error %q\n", h.Get(worker.HeaderJobSeq), m.Subject(),
			h.Get(worker.HeaderStatus), h.Get(worker.HeaderAttempts), h.Get(worker.HeaderWorker), h.Get(worker.HeaderError))
	}
	return b.String()
}

// logExcerpt keeps a long worker log readable: up to first warn and error
// lines, then the last lines.
func logExcerpt(s string, firstProblems, lastLines int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var b strings.Builder
	n := 0
	for _, l := range lines {
		if n == firstProblems {
			break
		}
		if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"fatal"`) {
			if n == 0 {
				b.WriteString("--- first warnings and errors ---\n")
			}
			b.WriteString(l + "\n")
			n++
		}
	}
	if len(lines) > lastLines {
		fmt.Fprintf(&b, "--- last %d of %d lines ---\n", lastLines, len(lines))
		lines = lines[len(lines)-lastLines:]
	} else {
		b.WriteString("--- whole log ---\n")
	}
	b.WriteString(strings.Join(lines, "\n"))
	return b.String()
}

// logLines returns the worker's JSON log lines whose message is msg.
func logLines(w *workerProc, msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(w.logs.String(), "\n") {
		if !strings.Contains(l, msg) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}
