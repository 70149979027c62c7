package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil/servers"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// publishWith sends one job with headers and returns its stream sequence.
func (e *env) publishWith(body string, h nats.Header) uint64 {
	e.t.Helper()
	m := nats.NewMsg(worker.DefaultJobsSubject)
	m.Data = []byte(body)
	m.Header = h
	ack, err := e.js.PublishMsg(context.Background(), m)
	if err != nil {
		e.t.Fatalf("publishing job: %v", err)
	}
	return ack.Sequence
}

// request is the fake's record of the request method path for run; the
// test fails when there is none.
func (e *env) request(method, run, suffix string) servers.Request {
	e.t.Helper()
	want := "/runs/" + run + suffix
	for _, r := range e.api.Requests() {
		if r.Method == method && strings.HasSuffix(r.Path, want) {
			return r
		}
	}
	e.t.Fatalf("no %s …%s request", method, want)
	return servers.Request{}
}

// finishedLine is the "job finished" log line of run, decoded.
func finishedLine(t *testing.T, logs, run string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "job finished" && m["run_id"] == run {
			return m
		}
	}
	t.Fatalf("no job finished line for %s in:\n%s", run, tail(logs, 20))
	return nil
}

// traceparent is a valid W3C traceparent of trace n: its trace-id, and
// the header naming the publisher's span.
func traceparent(n int) (traceID, header string) {
	traceID = fmt.Sprintf("4bf92f3577b34da6a3ce929d%08x", n)
	return traceID, "00-" + traceID + "-00f067aa0ba902b7-01"
}

// TestTraceContextCarriedOn: without a TracerProvider, a job's
// traceparent and tracestate, under any spelling of their names, go as
// they came to Tallyfy, onto its result event and its dead letter, and its
// trace-id into its log line and its result event.
func TestTraceContextCarriedOn(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name         string
		parent, span string // the header names
		archived     bool   // false: Tallyfy answers 422, the job is dead-lettered
	}{
		{"lower case", "traceparent", "tracestate", true},
		{"canonical case", "Traceparent", "Tracestate", true},
		{"upper case", "TRACEPARENT", "TRACESTATE", true},
		{"dead letter, lower case", "traceparent", "tracestate", false},
		{"dead letter, canonical case", "Traceparent", "Tracestate", false},
	}
	r := e.start(testConfig())
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := fmt.Sprintf("rtrace%d", i)
			e.api.AddRun(testOrg, run, tt.archived)
			traceID, tp := traceparent(i)
			ts := "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
			seq := e.publishWith(job(testOrg, run), nats.Header{tt.parent: {tp}, tt.span: {ts}})
			res := e.result(seq, 10*time.Second)
			want := worker.OutcomeDeleted
			if !tt.archived {
				want = worker.OutcomeDeadLettered
			}
			if res.Outcome != want {
				t.Fatalf("outcome %s/%s, want %s", res.Outcome, res.Reason, want)
			}
			del := e.request(http.MethodDelete, run, "/delete")
			if got := del.Header.Get("traceparent"); got != tp {
				t.Errorf("the DELETE's traceparent %q, want the job's %q", got, tp)
			}
			if got := del.Header.Get("tracestate"); got != ts {
				t.Errorf("the DELETE's tracestate %q, want the job's %q", got, ts)
			}
			if res.TraceID != traceID {
				t.Errorf("result trace_id %q, want %q", res.TraceID, traceID)
			}
			rm := e.resultMsg(seq)
			if got, gotTS := rm.Headers().Get(worker.HeaderTraceparent), rm.Headers().Get(worker.HeaderTracestate); got != tp || gotTS != ts {
				t.Errorf("result event headers traceparent %q, tracestate %q; want %q, %q", got, gotTS, tp, ts)
			}
			if !tt.archived {
				dl := e.deadLetter(seq)
				if dl == nil {
					t.Fatal("no dead letter")
				}
				if got, gotTS := dl.Headers().Get(worker.HeaderTraceparent), dl.Headers().Get(worker.HeaderTracestate); got != tp || gotTS != ts {
					t.Errorf("dead letter headers traceparent %q, tracestate %q; want %q, %q", got, gotTS, tp, ts)
				}
			}
			e.waitFor(5*time.Second, "the job finished log line", func() bool {
				return strings.Contains(r.logs.String(), `"run_id":"`+run+`"`) && strings.Contains(r.logs.String(), "job finished")
			})
			if line := finishedLine(t, r.logs.String(), run); line["trace_id"] != traceID {
				t.Errorf("log line trace_id %v, want %s: %v", line["trace_id"], traceID, line)
			}
		})
	}
}

// TestMalformedTraceContext: a malformed traceparent is ignored: the job
// is deleted, and nothing of it goes to Tallyfy, the result event or the
// log. A malformed or oversized tracestate is dropped, and a valid
// traceparent beside it still goes on.
func TestMalformedTraceContext(t *testing.T) {
	e := newEnv(t)
	_, valid := traceparent(99)
	tests := []struct {
		name       string
		h          nats.Header
		wantParent string // "" for none
	}{
		{name: "version ff", h: nats.Header{"traceparent": {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}},
		{name: "upper-case hex", h: nats.Header{"traceparent": {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"}}},
		{name: "zero trace-id", h: nats.Header{"traceparent": {"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}}},
		{name: "zero parent-id", h: nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}}},
		{name: "short trace-id", h: nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"}}},
		{name: "version 00 with more", h: nats.Header{"traceparent": {valid + "-extra"}}},
		{name: "flags not hex", h: nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"}}},
		{name: "not a traceparent", h: nats.Header{"traceparent": {"hello"}, "tracestate": {"a=b"}}},
		{name: "two values", h: nats.Header{"traceparent": {valid, valid}}},
		{name: "two spellings", h: nats.Header{"traceparent": {valid}, "Traceparent": {valid}}},
		{name: "bad tracestate dropped", h: nats.Header{"traceparent": {valid}, "tracestate": {"Not A Member"}}, wantParent: valid},
		{name: "long tracestate dropped", h: nats.Header{"traceparent": {valid}, "tracestate": {"k=" + strings.Repeat("v", 600)}}, wantParent: valid},
	}
	r := e.start(testConfig())
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := fmt.Sprintf("rbad%d", i)
			e.api.AddRun(testOrg, run, true)
			seq := e.publishWith(job(testOrg, run), tt.h)
			res := e.result(seq, 10*time.Second)
			if res.Outcome != worker.OutcomeDeleted {
				t.Fatalf("outcome %s/%s, want deleted", res.Outcome, res.Reason)
			}
			del := e.request(http.MethodDelete, run, "/delete")
			if got := del.Header.Get("traceparent"); got != tt.wantParent {
				t.Errorf("the DELETE's traceparent %q, want %q", got, tt.wantParent)
			}
			if got := del.Header.Get("tracestate"); got != "" {
				t.Errorf("the DELETE carries tracestate %q", got)
			}
			rm := e.resultMsg(seq)
			if got := rm.Headers().Get(worker.HeaderTraceparent); got != tt.wantParent {
				t.Errorf("result event traceparent %q, want %q", got, tt.wantParent)
			}
			if got := rm.Headers().Get(worker.HeaderTracestate); got != "" {
				t.Errorf("result event carries tracestate %q", got)
			}
			if (res.TraceID != "") != (tt.wantParent != "") {
				t.Errorf("result trace_id %q", res.TraceID)
			}
			e.waitFor(5*time.Second, "the job finished log line", func() bool {
				return strings.Contains(r.logs.String(), `"run_id":"`+run+`"`)
			})
			if line := finishedLine(t, r.logs.String(), run); (line["trace_id"] != nil) != (tt.wantParent != "") {
				t.Errorf("log line trace_id %v", line["trace_id"])
			}
		})
	}
}

// TestSpans: with an SDK TracerProvider, each job has a span (a child of
// its traceparent, or a root), each request to Tallyfy a span that is the
// job span's child and whose id Tallyfy gets in its traceparent, with the
// README's attributes; the result event and dead letter name the job's
// span. No attribute, status or event holds the token.
func TestSpans(t *testing.T) {
	e := newEnv(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := testConfig()
	cfg.TracerProvider = tp
	cfg.VerifyNotFound = true
	r := e.start(cfg)
	token := e.api.Token()

	traceID, parentHeader := traceparent(7)
	e.api.AddRun(testOrg, "rspan", true)
	deleted := e.publishWith(job(testOrg, "rspan"), nats.Header{"traceparent": {parentHeader}, "tracestate": {"rojo=1"}})
	// Gone already: the DELETE answers 404, and so does the GET.
	notFound := e.publish(job(testOrg, "rgone"))
	// Tallyfy echoes the token: it must not reach a span.
	e.api.AddRun(testOrg, "rlive", false)
	e.api.Script(testOrg, "rlive", testutil.Response{Status: 422, Body: `{"message":"not archived, token ` + token + `"}`})
	_, deadHeader := traceparent(8)
	dead := e.publishWith(job(testOrg, "rlive"), nats.Header{"Traceparent": {deadHeader}})
	for _, seq := range []uint64{deleted, notFound, dead} {
		e.result(seq, 10*time.Second)
	}
	// A job span ends when the job leaves the worker's hands, after its
	// result event: wait for all three.
	jobSpans := func() map[string]tracetest.SpanStub {
		out := map[string]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			if s.Name == "process "+worker.DefaultJobsSubject {
				out[attr(s, "run_id")] = s
			}
		}
		return out
	}
	e.waitFor(5*time.Second, "three job spans", func() bool { return len(jobSpans()) == 3 })
	spans := exp.GetSpans()
	jobs := jobSpans()
	children := func(parent tracetest.SpanStub) []string {
		var names []string
		for _, s := range spans {
			if s.Parent.SpanID() == parent.SpanContext.SpanID() && s.Parent.TraceID() == parent.SpanContext.TraceID() {
				names = append(names, s.Name)
			}
		}
		return names
	}

	t.Run("deleted, with a traceparent", func(t *testing.T) {
		s := jobs["rspan"]
		if s.SpanKind != trace.SpanKindConsumer || s.SpanContext.TraceID().String() != traceID ||
			!s.Parent.IsRemote() || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
			t.Errorf("job span kind %s, trace %s, parent %s (remote %v): want a consumer span, child of the job's traceparent",
				s.SpanKind, s.SpanContext.TraceID(), s.Parent.SpanID(), s.Parent.IsRemote())
		}
		for k, want := range map[string]string{"org_id": testOrg, "run_id": "rspan", "request_id": "req-rspan",
			"outcome": "deleted", "status": "200", "attempt": "1", "job_seq": fmt.Sprint(deleted)} {
			if got := attr(s, k); got != want {
				t.Errorf("job span attribute %s = %q, want %q", k, got, want)
			}
		}
		if got := children(s); len(got) != 1 || got[0] != "DELETE /organizations/{org_id}/runs/{run_id}/delete" {
			t.Fatalf("the job span's children %q, want the DELETE's", got)
		}
		var del tracetest.SpanStub
		for _, c := range spans {
			if c.Parent.SpanID() == s.SpanContext.SpanID() {
				del = c
			}
		}
		if del.SpanKind != trace.SpanKindClient || attr(del, "http.response.status_code") != "200" || attr(del, "http.request.method") != "DELETE" {
			t.Errorf("request span kind %s, attributes %v", del.SpanKind, del.Attributes)
		}
		wantTP := "00-" + traceID + "-" + del.SpanContext.SpanID().String() + "-01"
		if got := e.request(http.MethodDelete, "rspan", "/delete").Header.Get("traceparent"); got != wantTP {
			t.Errorf("the DELETE's traceparent %q, want the request span's %q", got, wantTP)
		}
		if got := e.request(http.MethodDelete, "rspan", "/delete").Header.Get("tracestate"); got != "rojo=1" {
			t.Errorf("the DELETE's tracestate %q, want the job's", got)
		}
		jobTP := "00-" + traceID + "-" + s.SpanContext.SpanID().String() + "-01"
		if got := e.resultMsg(deleted).Headers().Get(worker.HeaderTraceparent); got != jobTP {
			t.Errorf("result event traceparent %q, want the job span's %q", got, jobTP)
		}
		line := finishedLine(t, r.logs.String(), "rspan")
		if line["trace_id"] != traceID || line["span_id"] != s.SpanContext.SpanID().String() {
			t.Errorf("log line trace_id %v, span_id %v; want %s, %s", line["trace_id"], line["span_id"], traceID, s.SpanContext.SpanID())
		}
	})
	t.Run("not found, no traceparent", func(t *testing.T) {
		s := jobs["rgone"]
		if s.Parent.IsValid() {
			t.Errorf("job span without a traceparent has parent %s", s.Parent.SpanID())
		}
		if got := children(s); len(got) != 2 || got[0] != "DELETE /organizations/{org_id}/runs/{run_id}/delete" ||
			got[1] != "GET /organizations/{org_id}/runs/{run_id}" {
			t.Errorf("the job span's children %q, want the DELETE's and the GET's", got)
		}
		if attr(s, "outcome") != "not_found" || attr(s, "status") != "404" {
			t.Errorf("job span attributes %v", s.Attributes)
		}
		if res := e.result(notFound, time.Second); res.TraceID != s.SpanContext.TraceID().String() {
			t.Errorf("result trace_id %q, want the job span's trace %s", res.TraceID, s.SpanContext.TraceID())
		}
	})
	t.Run("dead-lettered", func(t *testing.T) {
		s := jobs["rlive"]
		if attr(s, "outcome") != "dead_lettered" || attr(s, "reason") != "not_archived" || attr(s, "status") != "422" ||
			s.Status.Description != "not_archived" {
			t.Errorf("job span attributes %v, status %v", s.Attributes, s.Status)
		}
		dl := e.deadLetter(dead)
		if dl == nil {
			t.Fatal("no dead letter")
		}
		want := "00-" + s.SpanContext.TraceID().String() + "-" + s.SpanContext.SpanID().String() + "-01"
		if got := dl.Headers().Get(worker.HeaderTraceparent); got != want {
			t.Errorf("dead letter traceparent %q, want the job span's %q", got, want)
		}
	})
	t.Run("no secret", func(t *testing.T) {
		for _, s := range spans {
			check := func(where, v string) {
				if strings.Contains(v, token) {
					t.Errorf("span %q: %s holds the token: %q", s.Name, where, v)
				}
			}
			for _, a := range s.Attributes {
				check(string(a.Key), a.Value.String())
			}
			check("status", s.Status.Description)
			for _, ev := range s.Events {
				check("event "+ev.Name, ev.Name)
				for _, a := range ev.Attributes {
					check(string(a.Key), a.Value.String())
				}
			}
		}
	})
}

// attr is s's attribute k as a string, "" when it has none.
func attr(s tracetest.SpanStub, k string) string {
	for _, a := range s.Attributes {
		if a.Key == attribute.Key(k) {
			return a.Value.String()
		}
	}
	return ""
}
