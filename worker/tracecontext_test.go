package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// headerMsg is a job message as far as its headers go.
type headerMsg struct {
	jetstream.Msg
	h nats.Header
}

func (m headerMsg) Headers() nats.Header { return m.h }

const (
	testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	testTracestate  = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
)

// TestCopyTraceContext is what `dlq replay` relies on: a dead letter's
// valid trace context is copied under the W3C names, whatever the case of
// the names it had; a malformed one, and any other header, is not.
func TestCopyTraceContext(t *testing.T) {
	tests := []struct {
		name           string
		src            nats.Header
		wantTP, wantTS string
	}{
		{"lower case", nats.Header{"traceparent": {testTraceparent}, "tracestate": {testTracestate}}, testTraceparent, testTracestate},
		{"canonical case", nats.Header{"Traceparent": {testTraceparent}, "Tracestate": {testTracestate}}, testTraceparent, testTracestate},
		{"mixed case, spaces", nats.Header{"TraceParent": {" " + testTraceparent + " "}}, testTraceparent, ""},
		{"split tracestate", nats.Header{"traceparent": {testTraceparent}, "tracestate": {"rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"}},
			testTraceparent, testTracestate},
		{"tracestate under two spellings", nats.Header{"traceparent": {testTraceparent}, "tracestate": {"a=1"}, "Tracestate": {"b=2"}},
			testTraceparent, ""},
		{"no trace context", nats.Header{HeaderReason: {"not_archived"}}, "", ""},
		{"malformed", nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"}, "tracestate": {testTracestate}}, "", ""},
		{"future version", nats.Header{"traceparent": {"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"}},
			testTraceparent, ""},
		{"nil", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := nats.Header{}
			CopyTraceContext(dst, tt.src)
			want := nats.Header{}
			if tt.wantTP != "" {
				want[HeaderTraceparent] = []string{tt.wantTP}
			}
			if tt.wantTS != "" {
				want[HeaderTracestate] = []string{tt.wantTS}
			}
			if len(dst) != len(want) || dst.Get(HeaderTraceparent) != tt.wantTP || dst.Get(HeaderTracestate) != tt.wantTS {
				t.Errorf("copied %v, want %v", dst, want)
			}
		})
	}
}

// TestTracerOf: no provider and the no-op one make no spans, so the
// worker skips them.
func TestTracerOf(t *testing.T) {
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSyncer(tracetest.NewInMemoryExporter()))
	defer func() { _ = sdk.Shutdown(context.Background()) }()
	nop := noop.NewTracerProvider()
	for name, tc := range map[string]struct {
		tp   trace.TracerProvider
		want bool
	}{"nil": {nil, false}, "noop": {nop, false}, "noop pointer": {&nop, false}, "sdk": {sdk, true}} {
		if got := tracerOf(tc.tp) != nil; got != tc.want {
			t.Errorf("%s: tracer %v, want %v", name, got, tc.want)
		}
	}
}

// BenchmarkTracePropagation is what carrying a job's trace context costs
// the worker per job, besides the network: the headers read and
// validated, and the trace context written on the result event and a dead
// letter; and, with the SDK, the job's span and its request's span. What
// the client spends writing it on each request is the tallyfy package's
// BenchmarkTraceContext.
func BenchmarkTracePropagation(b *testing.B) {
	withTrace := nats.Header{"Nats-Msg-Id": {"enqueue-1"}, "traceparent": {testTraceparent}, "tracestate": {testTracestate}}
	withoutTrace := nats.Header{"Nats-Msg-Id": {"enqueue-1"}}
	// The messages exist without trace context too: they are reused, so
	// that only the propagation's own allocations count.
	result, dead := nats.Header{}, nats.Header{}
	propagate := func(h nats.Header) {
		clear(result)
		clear(dead)
		ctx := withTraceOf(context.Background(), h)
		var th traceHeaders
		if trace.SpanContextFromContext(ctx).IsValid() {
			th = traceHeadersOf(ctx) // once per job, as beginTrace does
		}
		th.set(result)
		th.set(dead)
		if h.Get("traceparent") != "" && !strings.HasPrefix(result.Get(HeaderTraceparent), "00-") {
			b.Fatal("nothing injected")
		}
	}
	b.Run("no trace headers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			propagate(withoutTrace)
		}
	})
	b.Run("traceparent and tracestate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			propagate(withTrace)
		}
	})
	b.Run("extract only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = withTraceOf(context.Background(), withTrace)
		}
	})
	b.Run("with the SDK: job and request spans", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		defer func() { _ = tp.Shutdown(context.Background()) }()
		w := &Worker{tracer: tracerOf(tp), jobSpanName: "process " + DefaultJobsSubject}
		job := Job{OrgID: "acme", RunID: "3f2a9c8e7d6b5a4f3e2d1c0b9a8f7e6d", RequestID: "gdpr-1142"}
		resp := &tallyfy.Response{StatusCode: 200, RequestID: "ef01be8f-1"}
		b.ReportAllocs()
		for b.Loop() {
			t := benchTask(1_234_567)
			t.hard = context.Background()
			t.msg = headerMsg{h: withTrace}
			w.beginTrace(t, job)
			_, _ = w.traced(t.hard, opDelete, job, func(ctx context.Context) (*tallyfy.Response, error) {
				return resp, nil
			})
			t.traceFinished(Result{Outcome: OutcomeDeleted, Status: 200, TallyfyRequestID: "ef01be8f-1"})
			clear(result)
			t.th.set(result)
			t.endTrace()
		}
	})
}
