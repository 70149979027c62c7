package worker

import (
	"context"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// A job's W3C trace context (https://www.w3.org/TR/trace-context/) goes
// with everything the worker does for it: the requests to Tallyfy (the
// tallyfy client sends the trace context its ctx carries), the job's log
// lines (trace_id), its result event (trace_id, and the headers below) and
// its dead letter (the headers). A malformed traceparent is ignored, as
// if the job had none. With a Config.TracerProvider the worker also makes
// a span of the job and of each request, and what it sends on is the
// span's trace context.

// Trace-context headers, under their W3C names: on the result events and
// dead letters the worker publishes, and read from a job whatever the case
// of their names.
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// maxTracestate bounds the tracestate carried on: W3C asks that at least
// 512 characters be propagated and lets a longer one be dropped.
const maxTracestate = 512

// traceCarrier is a NATS message's headers as an OpenTelemetry carrier.
// nats.Header is case-sensitive: a publisher that follows W3C writes
// "traceparent", one that canonicalises like Go's net/http writes
// "Traceparent", so Get matches names whatever their case. Set writes the
// name as given (the propagator gives the W3C lower-case names).
type traceCarrier nats.Header

// Get is the value of the header key, whatever its case: for traceparent
// the one value, or "" when there are several (W3C: such a traceparent is
// invalid); for anything else the values joined by commas, as W3C joins
// split tracestate headers, or "" when the join is longer than
// maxTracestate or the header is given under two spellings (whose order
// is unknowable).
func (c traceCarrier) Get(key string) string {
	var found []string
	spellings := 0
	for k, vs := range c {
		if len(k) == len(key) && strings.EqualFold(k, key) && len(vs) > 0 {
			found = vs
			spellings++
		}
	}
	switch {
	case spellings == 0:
		return ""
	case key == HeaderTraceparent:
		if spellings > 1 || len(found) > 1 {
			return ""
		}
		return strings.TrimSpace(found[0])
	case spellings > 1:
		return ""
	}
	v := found[0]
	if len(found) > 1 {
		v = strings.Join(found, ",")
	}
	if len(v) > maxTracestate {
		return ""
	}
	return v
}

// Set sets key to value, under key as given.
func (c traceCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header names.
func (c traceCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// withTraceOf is ctx carrying the trace context of h, a job's headers, as
// a remote span context; ctx itself when h holds none or a malformed one.
// OpenTelemetry's W3C propagator validates the traceparent (version, a
// trace-id and a parent-id in lower-case hex and not all zero, flags) and
// drops a tracestate that does not parse. It is used as a value, not as
// OpenTelemetry's global propagator, which the worker leaves alone.
func withTraceOf(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, traceCarrier(h))
}

// traceHeaders is a trace context as the W3C headers write it: worked out
// once per job, and set on each message the worker publishes for it.
type traceHeaders struct{ parent, state string }

// traceHeadersOf is the trace context ctx carries, if any, as headers.
func traceHeadersOf(ctx context.Context) traceHeaders {
	var th traceHeaders
	propagation.TraceContext{}.Inject(ctx, &th)
	return th
}

// set puts the headers on h; nothing when there is no trace context.
func (th traceHeaders) set(h nats.Header) {
	if th.parent == "" {
		return
	}
	h[HeaderTraceparent] = []string{th.parent}
	if th.state != "" {
		h[HeaderTracestate] = []string{th.state}
	}
}

// Get, Set and Keys make traceHeaders the propagator's carrier.
func (th *traceHeaders) Get(key string) string {
	switch key {
	case HeaderTraceparent:
		return th.parent
	case HeaderTracestate:
		return th.state
	}
	return ""
}

func (th *traceHeaders) Set(key, value string) {
	switch key {
	case HeaderTraceparent:
		th.parent = value
	case HeaderTracestate:
		th.state = value
	}
}

func (th *traceHeaders) Keys() []string { return []string{HeaderTraceparent, HeaderTracestate} }

// CopyTraceContext sets on dst, under the names traceparent and
// tracestate, the W3C trace context src holds (its names matched whatever
// their case), if it is valid; a malformed one is not copied. `dlq replay`
// uses it so that a replayed job stays in the trace of the job it replays.
func CopyTraceContext(dst, src nats.Header) {
	traceHeadersOf(withTraceOf(context.Background(), src)).set(dst)
}

// tracerOf is the tracer of tp, or nil when tp makes no spans: nil, or the
// no-op provider.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	switch tp.(type) {
	case nil, noop.TracerProvider, *noop.TracerProvider:
		return nil
	}
	return tp.Tracer("github.com/tallyfy-deleter/tallyfy-deleter/worker")
}

// Span attribute keys: the job's log fields, by the same names.
const (
	attrOrgID            = attribute.Key("org_id")
	attrRunID            = attribute.Key("run_id")
	attrRequestID        = attribute.Key("request_id")
	attrJobSeq           = attribute.Key("job_seq")
	attrAttempt          = attribute.Key("attempt")
	attrOutcome          = attribute.Key("outcome")
	attrReason           = attribute.Key("reason")
	attrStatus           = attribute.Key("status")
	attrTallyfyRequestID = attribute.Key("tallyfy_request_id")
	attrArchived         = attribute.Key("archived")
	// attrAction is what became of a delivery that did not finish the job:
	// retry, hand_back, give_back, nak.
	attrAction = attribute.Key("action")
	// OpenTelemetry's HTTP client names, on a request's span.
	attrHTTPMethod = attribute.Key("http.request.method")
	attrHTTPStatus = attribute.Key("http.response.status_code")
	attrURLPath    = attribute.Key("url.template")
)

// beginTrace gives t the trace context of its job's headers and, with a
// tracer, the job's span, which starts when the job came into the worker's
// hands and ends when it leaves them (release). From here on t.hard
// carries the trace context, so every request and publish made with it
// carries it on.
func (w *Worker) beginTrace(t *task, job Job) {
	ctx := withTraceOf(t.hard, t.msg.Headers())
	if w.tracer != nil {
		attrs := make([]attribute.KeyValue, 0, 4)
		attrs = append(attrs, attrJobSeq.Int64(int64(t.seq)))
		attrs = appendJobAttrs(attrs, job)
		ctx, t.span = w.tracer.Start(ctx, w.jobSpanName, trace.WithTimestamp(t.start),
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
	}
	t.hard = ctx
	t.tc = trace.SpanContextFromContext(ctx)
	if t.tc.IsValid() {
		t.th = traceHeadersOf(ctx)
	}
}

func appendJobAttrs(attrs []attribute.KeyValue, job Job) []attribute.KeyValue {
	for _, a := range []struct {
		k attribute.Key
		v string
	}{{attrOrgID, job.OrgID}, {attrRunID, job.RunID}, {attrRequestID, job.RequestID}} {
		if a.v != "" {
			attrs = append(attrs, a.k.String(a.v))
		}
	}
	return attrs
}

// traceFinished records the job's outcome on its span.
func (t *task) traceFinished(res Result) {
	if t.span == nil || !t.span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{attrOutcome.String(string(res.Outcome))}
	if res.Reason != "" {
		attrs = append(attrs, attrReason.String(string(res.Reason)))
	}
	if res.Status != 0 {
		attrs = append(attrs, attrStatus.Int(res.Status))
	}
	if res.TallyfyRequestID != "" {
		attrs = append(attrs, attrTallyfyRequestID.String(res.TallyfyRequestID))
	}
	if res.Archived {
		attrs = append(attrs, attrArchived.Bool(true))
	}
	t.span.SetAttributes(attrs...)
	if res.Outcome == OutcomeDeadLettered {
		t.span.SetStatus(codes.Error, string(res.Reason))
	}
}

// traceLeft records on the job's span why this delivery left the worker's
// hands unfinished; cause, if any, is what the attempt met.
func (t *task) traceLeft(action string, status int, cause error) {
	if t.span == nil || !t.span.IsRecording() {
		return
	}
	t.span.SetAttributes(attrAction.String(action))
	if status != 0 {
		t.span.SetAttributes(attrStatus.Int(status))
	}
	if cause != nil {
		t.span.SetStatus(codes.Error, tallyfy.OneLine(cause.Error(), maxErrorHeader))
	}
}

// endTrace ends the job's span, if it has one.
func (t *task) endTrace() {
	if t.span == nil {
		return
	}
	t.span.SetAttributes(attrAttempt.Int(t.attempts()))
	t.span.End()
}

// apiOp is one kind of request to Tallyfy, as its span is named.
type apiOp int

const (
	opDelete apiOp = iota
	opGet
	opArchive
)

// spanName is OpenTelemetry's HTTP client span name: the method and the
// path template, which has no IDs in it.
func (o apiOp) spanName() string {
	switch o {
	case opGet:
		return "GET /organizations/{org_id}/runs/{run_id}"
	case opArchive:
		return "DELETE /organizations/{org_id}/runs/{run_id}"
	}
	return "DELETE /organizations/{org_id}/runs/{run_id}/delete"
}

func (o apiOp) method() string {
	if o == opGet {
		return "GET"
	}
	return "DELETE"
}

func (o apiOp) path() string {
	_, p, _ := strings.Cut(o.spanName(), " ")
	return p
}

// traced makes request req of job inside a span of its own, a child of
// the job's: the traceparent Tallyfy gets names that span.
func (w *Worker) traced(ctx context.Context, op apiOp, job Job, req func(context.Context) (*tallyfy.Response, error)) (*tallyfy.Response, error) {
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, attrHTTPMethod.String(op.method()), attrURLPath.String(op.path()))
	attrs = appendJobAttrs(attrs, Job{OrgID: job.OrgID, RunID: job.RunID})
	ctx, span := w.tracer.Start(ctx, op.spanName(), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()
	resp, err := req(ctx)
	if !span.IsRecording() {
		return resp, err
	}
	if resp != nil {
		span.SetAttributes(attrHTTPStatus.Int(resp.StatusCode))
		if resp.RequestID != "" {
			span.SetAttributes(attrTallyfyRequestID.String(resp.RequestID))
		}
	}
	if err != nil {
		span.SetStatus(codes.Error, tallyfy.OneLine(err.Error(), maxErrorHeader))
	}
	return resp, err
}
