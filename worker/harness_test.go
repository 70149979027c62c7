package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const testOrg = "org1"

// env is one embedded JetStream server and one fake Tallyfy, with readers
// of the results and dead-letter streams.
type env struct {
	t    testing.TB
	nats *testutil.NATS
	js   jetstream.JetStream
	api  *testutil.FakeTallyfy

	mu      sync.Mutex
	changed chan struct{}
	results []worker.Result
	// resultMsgs are the result events as messages, headers and all, in
	// the order of results.
	resultMsgs []jetstream.Msg
	dlq        []jetstream.Msg
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, nats: testutil.JetStream(t), api: testutil.NewFakeTallyfy(t), changed: make(chan struct{})}
	_, e.js = testutil.Connect(t, e.nats.URL())
	return e
}

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// running is a worker started by env.start.
type running struct {
	w    *worker.Worker
	logs *syncBuffer
	stop context.CancelFunc
	done chan struct{} // closed when Run returns
	err  error
}

// Stop cancels the worker's context and waits for Run to return.
func (r *running) Stop(t testing.TB, within time.Duration) error {
	t.Helper()
	r.stop()
	select {
	case <-r.done:
		return r.err
	case <-time.After(within):
		t.Fatalf("worker did not stop within %s", within)
		return nil
	}
}

// testConfig is fast enough for tests and keeps every mechanism on.
func testConfig() worker.Config {
	return worker.Config{
		DefaultOrg:      testOrg,
		Concurrency:     4,
		MaxDeliver:      3,
		Backoff:         []time.Duration{50 * time.Millisecond},
		AckWait:         2 * time.Second,
		APITimeout:      time.Second,
		BreakerFailures: 3,
		BreakerTimeout:  300 * time.Millisecond,
		ShutdownTimeout: 2 * time.Second,
		PullWait:        200 * time.Millisecond,
		WorkerID:        "test-worker",
	}
}

// client builds the API client every worker in these tests uses.
func (e *env) client() *tallyfy.Client {
	e.t.Helper()
	c, err := tallyfy.New(e.api.URL(), tallyfy.WithToken(e.api.Token()), tallyfy.WithTimeout(time.Second))
	if err != nil {
		e.t.Fatalf("tallyfy.New: %v", err)
	}
	return c
}

// start runs a worker on its own connection until the test ends.
func (e *env) start(cfg worker.Config, wrap ...func(jetstream.JetStream) jetstream.JetStream) *running {
	e.t.Helper()
	return e.startWith(cfg, e.client(), wrap...)
}

func (e *env) startWith(cfg worker.Config, api worker.Deleter, wrap ...func(jetstream.JetStream) jetstream.JetStream) *running {
	e.t.Helper()
	_, js := testutil.Connect(e.t, e.nats.URL())
	for _, f := range wrap {
		js = f(js)
	}
	logs := &syncBuffer{}
	l := zerolog.New(logs).Level(zerolog.DebugLevel)
	cfg.Logger = &l
	w, err := worker.New(js, api, cfg)
	if err != nil {
		e.t.Fatalf("worker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, logs: logs, stop: cancel, done: make(chan struct{})}
	go func() { r.err = w.Run(ctx); close(r.done) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			e.t.Errorf("worker did not stop at cleanup")
		}
		if e.t.Failed() {
			e.t.Logf("worker log:\n%s", tail(logs.String(), 40))
		}
	})
	e.waitFor(5*time.Second, "consumer bound", func() bool { return w.Health().ConsumerBound })
	e.follow()
	return r
}

// follow reads the results and dead-letter streams into e, once.
func (e *env) follow() {
	e.mu.Lock()
	if e.results != nil {
		e.mu.Unlock()
		return
	}
	e.results = []worker.Result{}
	e.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	for _, stream := range []string{worker.DefaultResultsStream, worker.DefaultDLQStream} {
		cons, err := e.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			e.t.Fatalf("following %s: %v", stream, err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if stream == worker.DefaultDLQStream {
				e.dlq = append(e.dlq, m)
			} else {
				var r worker.Result
				if err := json.Unmarshal(m.Data(), &r); err != nil {
					e.t.Errorf("result is not JSON: %q", m.Data())
				}
				e.results = append(e.results, r)
				e.resultMsgs = append(e.resultMsgs, m)
			}
			close(e.changed)
			e.changed = make(chan struct{})
		})
		if err != nil {
			e.t.Fatalf("following %s: %v", stream, err)
		}
		e.t.Cleanup(cc.Stop)
	}
}

// publish sends one job and returns its stream sequence.
func (e *env) publish(body string) uint64 {
	e.t.Helper()
	ack, err := e.js.Publish(context.Background(), worker.DefaultJobsSubject, []byte(body))
	if err != nil {
		e.t.Fatalf("publishing job: %v", err)
	}
	return ack.Sequence
}

func job(org, run string) string {
	return fmt.Sprintf(`{"org_id":%q,"run_id":%q,"request_id":"req-%s"}`, org, run, run)
}

// waitFor polls cond until it holds or the deadline passes.
func (e *env) waitFor(within time.Duration, what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// result waits for the result event of job seq.
func (e *env) result(seq uint64, within time.Duration) worker.Result {
	e.t.Helper()
	deadline := time.After(within)
	for {
		e.mu.Lock()
		for _, r := range e.results {
			if r.JobSeq == seq {
				e.mu.Unlock()
				return r
			}
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			e.t.Fatalf("no result event for job %d within %s", seq, within)
		}
	}
}

// resultMsg is the message of job seq's result event, which must have
// been read already (see result).
func (e *env) resultMsg(seq uint64) jetstream.Msg {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, r := range e.results {
		if r.JobSeq == seq {
			return e.resultMsgs[i]
		}
	}
	e.t.Fatalf("no result event for job %d", seq)
	return nil
}

// waitResults waits until n result events have been read.
func (e *env) waitResults(n int, within time.Duration) []worker.Result {
	e.t.Helper()
	deadline := time.After(within)
	for {
		e.mu.Lock()
		if len(e.results) >= n {
			out := append([]worker.Result(nil), e.results...)
			e.mu.Unlock()
			return out
		}
		ch, got := e.changed, len(e.results)
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			e.t.Fatalf("%d of %d result events within %s", got, n, within)
		}
	}
}

// deadLetter waits briefly for the dead letter of job seq; nil if none
// comes. Call it after the job's result arrived: the dead letter was
// confirmed before the result was published.
func (e *env) deadLetter(seq uint64) jetstream.Msg {
	deadline := time.After(time.Second)
	for {
		e.mu.Lock()
		for _, m := range e.dlq {
			if m.Headers().Get(worker.HeaderJobSeq) == fmt.Sprint(seq) {
				e.mu.Unlock()
				return m
			}
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return nil
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) deadLetters() []jetstream.Msg {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]jetstream.Msg(nil), e.dlq...)
}

// streamMsgs counts the messages stored in a stream.
func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(context.Background(), name)
	if err != nil {
		e.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		e.t.Fatalf("stream %s info: %v", name, err)
	}
	return info.State.Msgs
}

// hookJS wraps JetStream to act after a confirmed publish.
type hookJS struct {
	jetstream.JetStream
	after func(m *nats.Msg)
}

// PublishMsgAsync publishes m as PublishMsg does, hook included, and
// returns its confirmation already settled.
func (h hookJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f := settled{msg: m, ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	ack, err := h.PublishMsg(context.Background(), m, opts...)
	if err != nil {
		f.err <- err
	} else {
		f.ok <- ack
	}
	return f, nil
}

type settled struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
	err chan error
}

func (f settled) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f settled) Err() <-chan error            { return f.err }
func (f settled) Msg() *nats.Msg               { return f.msg }

func (h hookJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := h.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && h.after != nil {
		h.after(m)
	}
	return ack, err
}
