package worker_test

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// The per-job hot path outside the network: decode the job, route the API's
// answer, build the result event. `tallyfy-deleter bench` measures the
// whole worker; these show what each step costs alone.

func BenchmarkDecodeJob(b *testing.B) {
	bodies := []struct {
		name string
		body []byte
	}{
		{"typical", []byte(`{"org_id":"acme","run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d","request_id":"gdpr-1142"}`)},
		{"default org", []byte(`{"run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d"}`)},
		{"unknown fields", []byte(`{"org_id":"acme","run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d","source":{"system":"crm","ids":[1,2,3]},"note":"x"}`)},
		{"invalid", []byte(`{"org_id":"acme","run_id":"../runs/other"}`)},
	}
	for _, bb := range bodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				_, _ = worker.DecodeJob(bb.body, "acme")
			}
		})
	}
}

func BenchmarkRoute(b *testing.B) {
	p := worker.Policy{
		MaxDeliver:        5,
		Backoff:           worker.DefaultBackoff,
		CredentialsPause:  worker.DefaultBreakerTimeout,
		DefaultRetryAfter: time.Second,
		MaxRetryAfter:     5 * time.Minute,
	}
	attempts := []struct {
		name string
		a    worker.Attempt
	}{
		{"deleted", worker.Attempt{Delivered: 1}},
		{"404", worker.Attempt{Err: &tallyfy.APIError{StatusCode: 404, Message: "not found"}, Delivered: 1}},
		{"503", worker.Attempt{Err: &tallyfy.APIError{StatusCode: 503, Message: "unavailable"}, Delivered: 2}},
	}
	for _, at := range attempts {
		b.Run(at.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = p.Route(at.a)
			}
		})
	}
}

// BenchmarkJobHotPath is the three together, for one deleted job: what the
// worker spends on a job besides the network.
func BenchmarkJobHotPath(b *testing.B) {
	body := []byte(`{"org_id":"acme","run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d","request_id":"gdpr-1142"}`)
	p := worker.Policy{MaxDeliver: 5, Backoff: worker.DefaultBackoff}
	b.ReportAllocs()
	var seq uint64 = 1_234_567
	for b.Loop() {
		job, err := worker.DecodeJob(body, "acme")
		d := p.Route(worker.Attempt{Err: err, Delivered: 1})
		res := worker.Result{OrgID: job.OrgID, RunID: job.RunID, RequestID: job.RequestID, Outcome: d.Outcome,
			Status: 200, Attempts: 1, JobSeq: seq, Worker: "deleter-7d9f-abc", At: time.Now().UTC()}
		data, err := json.Marshal(res)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg(worker.DefaultResultsSubject + "." + string(res.Outcome))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(seq, 10))
		seq++
	}
}

// BenchmarkResultEvent builds the result event of a deleted run as the
// worker's finish does: marshal the Result, then the message with its
// Nats-Msg-Id header.
func BenchmarkResultEvent(b *testing.B) {
	b.ReportAllocs()
	var seq uint64 = 1_234_567
	for b.Loop() {
		res := worker.Result{
			OrgID:     "acme",
			RunID:     "3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d",
			RequestID: "gdpr-1142",
			Outcome:   worker.OutcomeDeleted,
			Status:    200,
			Attempts:  1,
			JobSeq:    seq,
			Worker:    "deleter-7d9f-abc",
			At:        time.Now().UTC(),
		}
		body, err := json.Marshal(res)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg(worker.DefaultResultsSubject + "." + string(res.Outcome))
		m.Data = body
		m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(seq, 10))
		seq++
	}
}
