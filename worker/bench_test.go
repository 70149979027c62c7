package worker

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// The per-job hot path outside the network, measured on the worker's own
// code: decode the job, route the API's answer, build the result event
// (and the dead letter). `tallyfy-deleter bench` measures the whole
// worker; these show what each step costs alone.

var benchBody = []byte(`{"org_id":"acme","run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d","request_id":"gdpr-1142"}`)

// benchWorker is a worker as New builds it, without a connection: enough
// for the steps that build messages.
func benchWorker() *Worker {
	cfg := Config{DefaultOrg: "acme", WorkerID: "deleter-7d9f-abc"}.withDefaults()
	return &Worker{cfg: cfg, policy: cfg.policy()}
}

// benchTask is a job's first delivery, as handle makes it.
func benchTask(seq uint64) *task {
	return &task{meta: &jetstream.MsgMetadata{NumDelivered: 1}, seq: seq, start: time.Now()}
}

func BenchmarkDecodeJob(b *testing.B) {
	bodies := []struct {
		name string
		body []byte
	}{
		{"typical", benchBody},
		{"default org", []byte(`{"run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d"}`)},
		{"unknown fields", []byte(`{"org_id":"acme","run_id":"3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d","source":{"system":"crm","ids":[1,2,3]},"note":"x"}`)},
		{"invalid", []byte(`{"org_id":"acme","run_id":"../runs/other"}`)},
	}
	for _, bb := range bodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				_, _ = DecodeJob(bb.body, "acme")
			}
		})
	}
}

func BenchmarkRoute(b *testing.B) {
	p := benchWorker().policy
	attempts := []struct {
		name string
		a    Attempt
	}{
		{"deleted", Attempt{Delivered: 1}},
		{"404", Attempt{Err: &tallyfy.APIError{StatusCode: 404, Message: "not found"}, Delivered: 1}},
		{"503", Attempt{Err: &tallyfy.APIError{StatusCode: 503, Message: "unavailable"}, Delivered: 2}},
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

// BenchmarkJobHotPath is the steps together, for one deleted job: what the
// worker spends on a job besides the network.
func BenchmarkJobHotPath(b *testing.B) {
	w := benchWorker()
	resp := &tallyfy.Response{StatusCode: 200, RequestID: "ef01be8f-1"}
	b.ReportAllocs()
	var seq uint64 = 1_234_567
	for b.Loop() {
		job, err := DecodeJob(benchBody, w.cfg.DefaultOrg)
		d := w.policy.Route(Attempt{Err: err, Delivered: 1})
		if _, err := w.resultMsg(traceHeaders{}, w.result(benchTask(seq), job, d, resp, nil)); err != nil {
			b.Fatal(err)
		}
		seq++
	}
}

// BenchmarkResultEvent builds the result event of a deleted run as the
// worker's finish does: the Result, then its message.
func BenchmarkResultEvent(b *testing.B) {
	w := benchWorker()
	job, err := DecodeJob(benchBody, w.cfg.DefaultOrg)
	if err != nil {
		b.Fatal(err)
	}
	d := w.policy.Route(Attempt{Delivered: 1})
	resp := &tallyfy.Response{StatusCode: 200, RequestID: "ef01be8f-1"}
	b.ReportAllocs()
	var seq uint64 = 1_234_567
	for b.Loop() {
		if _, err := w.resultMsg(traceHeaders{}, w.result(benchTask(seq), job, d, resp, nil)); err != nil {
			b.Fatal(err)
		}
		seq++
	}
}

// BenchmarkDeadLetter builds the record of a job dead-lettered
// not_archived: the Result, the dead letter and the result event.
func BenchmarkDeadLetter(b *testing.B) {
	w := benchWorker()
	job, err := DecodeJob(benchBody, w.cfg.DefaultOrg)
	if err != nil {
		b.Fatal(err)
	}
	cause := &tallyfy.APIError{StatusCode: 422, Message: "Process isn't archived yet, so it cannot be deleted permanently", RequestID: "ef01be8f-2"}
	d := w.policy.Route(Attempt{Err: cause, Delivered: 1})
	if d.Outcome != OutcomeDeadLettered {
		b.Fatalf("a 422 routes to %+v", d)
	}
	b.ReportAllocs()
	var seq uint64 = 1_234_567
	for b.Loop() {
		res := w.result(benchTask(seq), job, d, nil, cause)
		_ = w.deadLetter(traceHeaders{}, benchBody, res)
		if _, err := w.resultMsg(traceHeaders{}, res); err != nil {
			b.Fatal(err)
		}
		seq++
	}
}
