package service

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/time/rate"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// TracingShutdownTimeout bounds the flush of the spans still buffered at
// exit, when the shutdown's ctx has no deadline of its own.
const TracingShutdownTimeout = 5 * time.Second

// The OpenTelemetry variables SetupTracing itself looks at; the exporter
// reads these and the rest of OTEL_EXPORTER_OTLP_* (see otlpClient), the
// SDK the others (OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, ...), as the OpenTelemetry specification says.
const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envTracesExporter = "OTEL_TRACES_EXPORTER"
	envSDKDisabled    = "OTEL_SDK_DISABLED"
)

// SetupTracing builds the TracerProvider that exports the worker's spans
// over OTLP/HTTP, when the environment asks for it: OTEL_EXPORTER_OTLP_ENDPOINT
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and neither
// OTEL_SDK_DISABLED=true nor OTEL_TRACES_EXPORTER=none). The SDK reads the
// other OTEL_* variables itself. Otherwise it returns the no-op provider
// (with which the worker makes no spans, and only carries jobs' trace
// context on) and a shutdown that does nothing, and it starts nothing.
//
// The provider is returned, never installed as OpenTelemetry's global one:
// only what it is handed to makes spans. Its spans are exported in batches
// by one goroutine, which shutdown stops after flushing what is buffered,
// within ctx's deadline or TracingShutdownTimeout. Export failures are
// logged to log (at most every 30 s), and cost the worker nothing else: the
// spans are dropped.
//
// An error means the variables ask for what this build cannot do (OTLP
// over gRPC, an exporter other than otlp, an endpoint that is not an http
// or https URL); the provider is then the no-op one.
func SetupTracing(ctx context.Context, serviceName, version string, log *zerolog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	off := func(context.Context) error { return nil }
	endpoint, err := tracingEndpoint(os.Getenv)
	if err != nil || endpoint == "" {
		return noop.NewTracerProvider(), off, err
	}
	client, err := newOTLPClient(os.Getenv)
	if err != nil {
		return noop.NewTracerProvider(), off, fmt.Errorf("tracing: %w", err)
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return noop.NewTracerProvider(), off, fmt.Errorf("tracing: the OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attribute.String("service.name", serviceName), attribute.String("service.version", version)),
		// Last, so that OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win.
		// No process detector: the command line may hold a token.
		resource.WithFromEnv(),
	)
	if err != nil {
		// A partial resource still names the service.
		log.Warn().Err(err).Msg("tracing: some resource attributes could not be read")
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(&loggedExporter{SpanExporter: exp, log: log, every: rate.Sometimes{Interval: 30 * time.Second}}),
		sdktrace.WithResource(res),
	)
	log.Info().Str("endpoint", endpoint).Msg("tracing: exporting spans over OTLP/HTTP")
	shutdown := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, TracingShutdownTimeout)
			defer cancel()
		}
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("tracing: flushing the last spans: %w", err)
		}
		return nil
	}
	return tp, shutdown, nil
}

// tracingEndpoint is the endpoint spans go to, as the variables getenv
// reads set it (the traces one first), without user information or
// query: fit for a log. "" when tracing is off.
func tracingEndpoint(getenv func(string) string) (string, error) {
	if strings.EqualFold(strings.TrimSpace(getenv(envSDKDisabled)), "true") {
		return "", nil
	}
	switch e := strings.TrimSpace(getenv(envTracesExporter)); e {
	case "", "otlp":
	case "none":
		return "", nil
	default:
		return "", fmt.Errorf("%s=%s: this build exports spans with otlp only (or none)", envTracesExporter, e)
	}
	name, endpoint := envTracesEndpoint, strings.TrimSpace(getenv(envTracesEndpoint))
	if endpoint == "" {
		name, endpoint = envEndpoint, strings.TrimSpace(getenv(envEndpoint))
	}
	if endpoint == "" {
		return "", nil
	}
	for _, p := range []string{envTracesProtocol, envProtocol} {
		switch v := strings.TrimSpace(getenv(p)); v {
		case "":
			continue
		case "http/protobuf", "http/json":
		default:
			return "", fmt.Errorf("%s=%s: this build exports spans over OTLP/HTTP only (http/protobuf or http/json)", p, v)
		}
		break
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// The SDK would ignore it and send to localhost:4318 instead. The
		// value is not shown: it may hold credentials.
		return "", fmt.Errorf("%s is not an http or https URL such as http://otel-collector:4318", name)
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String(), nil
}

// loggedExporter logs what the exporter could not send, instead of the
// OpenTelemetry global error handler (which prints plain text to standard
// error): the worker's log stays one JSON line per event. It reports every
// export as done to the batcher, which has nothing more to do with a failed
// one anyway; the exporter has retried it already.
type loggedExporter struct {
	sdktrace.SpanExporter
	log   *zerolog.Logger
	every rate.Sometimes
	lost  atomic.Int64
}

func (e *loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	lost := e.lost.Add(int64(len(spans)))
	if errors.Is(err, context.Canceled) {
		return nil // shutdown cut the export short; Shutdown says so
	}
	e.every.Do(func() {
		e.log.Warn().Str("error", tallyfy.OneLine(err.Error(), 1024)).Int64("spans_lost", lost).
			Msg("tracing: could not export spans over OTLP; dropping them")
	})
	return nil
}
