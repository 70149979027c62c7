package bench

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// bareLoop is the bare loop: the fastest honest loop nats.go and net/http
// allow, so that the worker's throughput reads as a share of the ceiling.
// It makes the confirmations the worker makes and nothing more:
//
//   - pull: a prefetching Consume whose buffer holds as many jobs beyond
//     the slots as there are slots, at least 8 (more than the worker keeps
//     asked for, half its prefetch), so that a slot never waits a round
//     trip for its next job;
//     the callback hands each job to one of c goroutines that live as long
//     as the loop (a goroutine per job costs more CPU at high concurrency:
//     its stack grows anew for every job);
//   - DELETE with plain net/http (a transport keeping c idle connections),
//     the job decoded with encoding/json and not validated;
//   - publish the result event (worker.Result, encoding/json) with
//     js.PublishMsgAsync and Nats-Msg-Id result-<seq>: the slot goes on to
//     its next job, and a goroutine of the job's own waits for the
//     event's ack, then msg.DoubleAck: the same two round trips as the
//     worker's, made as nats.go offers them (the worker makes them its own
//     way: one confirmer, and acks through a subscription of its own, see
//     worker/acker.go).
//
// No breaker, no logs, no metrics, no heartbeat, no retry, no hand-back:
// an answer other than 2xx or 404 naks the job.
func bareLoop(ctx context.Context, natsURL, apiURL, token string, c int) (int64, error) {
	nc, err := nats.Connect(natsURL, nats.Name("tallyfy-deleter bench bare"))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	held := c + max(c, 8)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(held, 4000)), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return 0, err
	}
	cons, err := js.Consumer(ctx, worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c}}
	defer hc.CloseIdleConnections()
	resultsSubject := worker.DefaultResultsSubject

	var done atomic.Int64
	msgs := make(chan jetstream.Msg)
	var jobs sync.WaitGroup
	for range c {
		jobs.Go(func() {
			for msg := range msgs {
				ack := bareJob(js, hc, apiURL, token, resultsSubject, msg)
				if ack == nil {
					continue
				}
				jobs.Go(func() {
					if bareConfirm(msg, ack) {
						done.Add(1)
					}
				})
			}
		})
	}
	// Pull requests expire after 2 s, the worker's pull wait: nats.go can
	// leave a Consume with no pull request open until two heartbeats are
	// missed (see worker/pull.go's consume), which with the default 30 s
	// expiry stalled the loop for 30 s.
	cc, err := cons.Consume(func(msg jetstream.Msg) { msgs <- msg }, jetstream.PullMaxMessages(held), jetstream.PullExpiry(2*time.Second))
	if err != nil {
		close(msgs)
		jobs.Wait()
		return 0, err
	}
	// Until told to stop, or until the consume ends by itself (the
	// connection or the consumer gone).
	select {
	case <-ctx.Done():
	case <-cc.Closed():
	}
	cc.Drain()
	<-cc.Closed()
	close(msgs)
	jobs.Wait()
	// Every ack was confirmed (DoubleAck): there is nothing left to drain.
	return done.Load(), nil
}

// bareConfirm waits for the result event's ack, then acks the job; true
// when it was acked.
func bareConfirm(msg jetstream.Msg, ack jetstream.PubAckFuture) bool {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-ack.Ok():
	case <-ack.Err():
		_ = msg.Nak()
		return false
	case <-t.C:
		_ = msg.Nak()
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return msg.DoubleAck(ctx) == nil
}

// bareJob is one job of the bare loop, up to the result event's publish:
// its ack to come, or nil when the job was naked.
func bareJob(js jetstream.JetStream, hc *http.Client, apiURL, token, resultsSubject string, msg jetstream.Msg) jetstream.PubAckFuture {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return nil
	}
	var job worker.Job
	if err := json.Unmarshal(msg.Data(), &job); err != nil {
		_ = msg.Nak()
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), worker.DefaultAPITimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, apiURL+"/organizations/"+job.OrgID+"/runs/"+job.RunID+"/delete", nil)
	if err != nil {
		_ = msg.Nak()
		return nil
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Tallyfy-Client", "APIClient")
	resp, err := hc.Do(req)
	if err != nil {
		_ = msg.Nak()
		return nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	res := worker.Result{OrgID: job.OrgID, RunID: job.RunID, RequestID: job.RequestID, Status: resp.StatusCode,
		Attempts: int(meta.NumDelivered), JobSeq: meta.Sequence.Stream, Worker: "bench-bare", At: time.Now().UTC()}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		res.Outcome = worker.OutcomeDeleted
	case resp.StatusCode == http.StatusNotFound:
		res.Outcome = worker.OutcomeNotFound
	default:
		_ = msg.Nak()
		return nil
	}
	body, err := json.Marshal(res)
	if err != nil {
		_ = msg.Nak()
		return nil
	}
	m := nats.NewMsg(resultsSubject + "." + string(res.Outcome))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(res.JobSeq, 10))
	ack, err := js.PublishMsgAsync(m)
	if err != nil {
		_ = msg.Nak()
		return nil
	}
	return ack
}
