package worker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

// replyOnly is a message whose only part the acker reads is its reply
// subject.
type replyOnly struct {
	jetstream.Msg
	reply string
}

func (m replyOnly) Reply() string { return m.reply }

// ackResult records the one call of an ack's callback.
type ackResult struct {
	calls chan error
}

func newAckResult() *ackResult { return &ackResult{calls: make(chan error, 2)} }

func (r *ackResult) done(err error) { r.calls <- err }

func (r *ackResult) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.calls:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the ack's callback never ran")
		return nil
	}
}

func (r *ackResult) none(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-r.calls:
		t.Fatalf("%s: the callback ran (%v)", what, err)
	default:
	}
}

func startAcker(t testing.TB, nc *nats.Conn) *acker {
	t.Helper()
	a := newAcker(nc)
	// No clock: the tests call expire themselves.
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	return a
}

// TestAckerAcksJobs: a job double-acked through the acker is confirmed,
// and JetStream holds it acked: nothing pending, nothing redelivered.
func TestAckerAcksJobs(t *testing.T) {
	srv := testutil.JetStream(t)
	nc, js := testutil.Connect(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ACKS", Subjects: []string{"acks.>"}}); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "ACKS", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for range n {
		if _, err := js.Publish(ctx, "acks.job", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	a := startAcker(t, nc)
	results := make([]*ackResult, 0, n)
	for m := range batch.Messages() {
		r := newAckResult()
		results = append(results, r)
		a.ack(m, r.done)
	}
	if len(results) != n {
		t.Fatalf("fetched %d jobs, want %d", len(results), n)
	}
	for i, r := range results {
		if err := r.wait(t); err != nil {
			t.Errorf("ack %d: %v", i, err)
		}
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream != n {
		t.Errorf("consumer after the acks: %d pending, ack floor %d; want 0 and %d", info.NumAckPending, info.AckFloor.Stream, n)
	}
	for _, r := range results {
		r.none(t, "after its confirmation")
	}
}

// TestAckerFailures: an ack with nowhere to go, or whose confirmation never
// comes, fails once with a reason, and never holds its job forever.
func TestAckerFailures(t *testing.T) {
	srv := testutil.JetStream(t)
	nc, _ := testutil.Connect(t, srv.URL())

	t.Run("no reply subject", func(t *testing.T) {
		a := startAcker(t, nc)
		r := newAckResult()
		a.ack(replyOnly{}, r.done)
		if err := r.wait(t); !errors.Is(err, jetstream.ErrMsgNoReply) {
			t.Errorf("got %v, want ErrMsgNoReply", err)
		}
	})
	t.Run("no one listens", func(t *testing.T) {
		// The consumer is gone: the server answers no responders.
		a := startAcker(t, nc)
		r := newAckResult()
		a.ack(replyOnly{reply: "$JS.ACK.GONE.c.1.1.1.0.0"}, r.done)
		if err := r.wait(t); !errors.Is(err, nats.ErrNoResponders) {
			t.Errorf("got %v, want ErrNoResponders", err)
		}
	})
	// silent listens on subject and never answers.
	silent := func(t *testing.T, subject string) *nats.Subscription {
		t.Helper()
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		return sub
	}
	t.Run("no answer", func(t *testing.T) {
		silent := silent(t, "silent.ack")
		a := startAcker(t, nc)
		r := newAckResult()
		a.ack(replyOnly{reply: "silent.ack"}, r.done)
		if _, err := silent.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("the ack never reached its subject: %v", err)
		}
		a.expire()
		r.none(t, "after one tick")
		a.expire()
		if err := r.wait(t); !errors.Is(err, errNotConfirmed) {
			t.Errorf("after two ticks: got %v, want errNotConfirmed", err)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		silent(t, "silent.stop")
		a := startAcker(t, nc)
		r := newAckResult()
		a.ack(replyOnly{reply: "silent.stop"}, r.done)
		a.stop()
		if err := r.wait(t); !errors.Is(err, errAckerStopped) {
			t.Errorf("got %v, want errAckerStopped", err)
		}
	})
	t.Run("connection closed", func(t *testing.T) {
		nc2, _ := testutil.Connect(t, srv.URL())
		a := startAcker(t, nc2)
		nc2.Close()
		r := newAckResult()
		a.ack(replyOnly{reply: "anything"}, r.done)
		if err := r.wait(t); !errors.Is(err, nats.ErrConnectionClosed) {
			t.Errorf("got %v, want ErrConnectionClosed", err)
		}
	})
}

// BenchmarkAck: a job's double ack, confirmed, with 64 in flight at once:
// as jetstream.Msg.DoubleAck makes it (a request) and as the worker's acker
// does (a reply subject of its own, one subscription for every
// confirmation). Per op: one job acked and its ack confirmed; the server
// runs in the same process and is counted too.
func BenchmarkAck(b *testing.B) {
	srv := testutil.JetStream(b)
	nc, js := testutil.Connect(b, srv.URL())
	// fetched is n jobs delivered and not acked, on a stream of their own.
	fetched := func(b *testing.B, n int) []jetstream.Msg {
		b.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = js.DeleteStream(ctx, "ACKS")
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ACKS", Subjects: []string{"acks.>"}}); err != nil {
			b.Fatal(err)
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, "ACKS", jetstream.ConsumerConfig{Durable: "c",
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour, MaxAckPending: -1})
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			if _, err := js.PublishAsync("acks.job", []byte("{}")); err != nil {
				b.Fatal(err)
			}
		}
		<-js.PublishAsyncComplete()
		msgs := make([]jetstream.Msg, 0, n)
		for len(msgs) < n {
			batch, err := cons.Fetch(min(n-len(msgs), 1000), jetstream.FetchMaxWait(10*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			for m := range batch.Messages() {
				msgs = append(msgs, m)
			}
		}
		return msgs
	}
	const inFlight = 64

	b.Run("DoubleAck", func(b *testing.B) {
		msgs := fetched(b, b.N)
		sem := make(chan struct{}, inFlight)
		var wg sync.WaitGroup
		b.ReportAllocs()
		b.ResetTimer()
		for _, m := range msgs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := m.DoubleAck(ctx); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	})
	b.Run("acker", func(b *testing.B) {
		msgs := fetched(b, b.N)
		a := startAcker(b, nc)
		sem := make(chan struct{}, inFlight)
		var wg sync.WaitGroup
		b.ReportAllocs()
		b.ResetTimer()
		for _, m := range msgs {
			sem <- struct{}{}
			wg.Add(1)
			a.ack(m, func(err error) {
				if err != nil {
					b.Error(err)
				}
				<-sem
				wg.Done()
			})
		}
		wg.Wait()
	})
}
