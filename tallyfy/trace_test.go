package tallyfy

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// TestTraceContextSent: a ctx carrying a span context sends it as W3C
// traceparent and tracestate on every call; a ctx without one, or with an
// invalid one, sends neither.
func TestTraceContextSent(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, err := trace.ParseTraceState("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
	if err != nil {
		t.Fatal(err)
	}
	sampled := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	tests := []struct {
		name           string
		ctx            context.Context
		wantTP, wantTS string
	}{
		{"none", context.Background(), "", ""},
		{"remote span context", trace.ContextWithRemoteSpanContext(context.Background(), sampled),
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
		{"not sampled, no tracestate", trace.ContextWithSpanContext(context.Background(),
			trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid})),
			"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", ""},
		{"invalid span context", trace.ContextWithSpanContext(context.Background(),
			trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid})), "", ""},
	}
	var mu sync.Mutex
	var got http.Header
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"data":{"id":"r1","status":"archived"}}`))
	})
	c := newClient(t, srv.URL, WithToken(testToken))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := map[string]func() error{
				"DeleteRun":  func() error { _, err := c.DeleteRun(tt.ctx, "o1", "r1"); return err },
				"ArchiveRun": func() error { _, err := c.ArchiveRun(tt.ctx, "o1", "r1"); return err },
				"GetRun":     func() error { _, _, err := c.GetRun(tt.ctx, "o1", "r1"); return err },
			}
			for name, call := range calls {
				if err := call(); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				mu.Lock()
				tp, tstate := got.Get("traceparent"), got.Get("tracestate")
				mu.Unlock()
				if tp != tt.wantTP || tstate != tt.wantTS {
					t.Errorf("%s sent traceparent %q, tracestate %q; want %q, %q", name, tp, tstate, tt.wantTP, tt.wantTS)
				}
			}
		})
	}
}

// BenchmarkTraceContext is what a request spends writing the caller's
// trace context: nothing to write, or a traceparent and tracestate.
func BenchmarkTraceContext(b *testing.B) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ts, _ := trace.ParseTraceState("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true})
	// As the worker's call makes it: the job's context, with a deadline.
	traced, cancel := context.WithTimeout(trace.ContextWithRemoteSpanContext(context.Background(), sc), time.Minute)
	defer cancel()
	untraced, cancel2 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel2()
	h := http.Header{}
	for name, ctx := range map[string]context.Context{"no trace context": untraced, "traceparent and tracestate": traced} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				clear(h)
				injectTrace(ctx, h)
			}
		})
	}
}
