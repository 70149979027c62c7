package service

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otelVars are every variable these tests set: each test sets them all, so
// that the environment the tests run in changes nothing.
var otelVars = []string{envEndpoint, envTracesEndpoint, envProtocol, envTracesProtocol, envTracesExporter,
	envSDKDisabled, "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_HEADERS"}

func setOTelEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, vars[k])
	}
}

// otlpSink is a local OTLP/HTTP receiver: every POST to /v1/traces is
// decoded and handed to the test.
func otlpSink(t *testing.T) (*httptest.Server, <-chan *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	got := make(chan *coltracepb.ExportTraceServiceRequest, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("the exporter sent a body that is not an ExportTraceServiceRequest: %v", err)
		}
		select {
		case got <- &req:
		default:
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func TestSetupTracingExports(t *testing.T) {
	srv, got := otlpSink(t)
	setOTelEnv(t, map[string]string{envEndpoint: srv.URL})
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	ctx := context.Background()
	tp, shutdown, err := SetupTracing(ctx, "tallyfy-deleter", "v9.9.9", &log)
	if err != nil {
		t.Fatalf("SetupTracing: %v", err)
	}
	if _, ok := tp.(*sdktrace.TracerProvider); !ok {
		t.Fatalf("SetupTracing gave a %T with %s set, want the SDK's provider", tp, envEndpoint)
	}
	_, span := tp.Tracer("test").Start(ctx, "process tallyfy.runs.delete")
	span.End()
	// Shutdown flushes the batch; the POST is waited for all the same.
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case req := <-got:
		var names, services []string
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.GetResource().GetAttributes() {
				if a.Key == "service.name" {
					services = append(services, a.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, s.Name)
				}
			}
		}
		if len(names) != 1 || names[0] != "process tallyfy.runs.delete" || len(services) != 1 || services[0] != "tallyfy-deleter" {
			t.Errorf("exported spans %q of services %q, want the one span of tallyfy-deleter", names, services)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no POST /v1/traces within 10s")
	}
	if !strings.Contains(logs.String(), "exporting spans over OTLP/HTTP") {
		t.Errorf("SetupTracing did not say where spans go:\n%s", logs.String())
	}
}

func TestSetupTracingOff(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
	}{
		{"no endpoint", nil},
		{"SDK disabled", map[string]string{envEndpoint: "http://127.0.0.1:4318", envSDKDisabled: "true"}},
		{"exporter none", map[string]string{envEndpoint: "http://127.0.0.1:4318", envTracesExporter: "none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setOTelEnv(t, tt.env)
			log := zerolog.Nop()
			before := runtime.NumGoroutine()
			tp, shutdown, err := SetupTracing(context.Background(), "tallyfy-deleter", "v1", &log)
			if err != nil {
				t.Fatalf("SetupTracing: %v", err)
			}
			if _, ok := tp.(noop.TracerProvider); !ok {
				t.Errorf("SetupTracing gave a %T, want the no-op provider", tp)
			}
			if after := runtime.NumGoroutine(); after != before {
				t.Errorf("%d goroutines before SetupTracing, %d after: it started something", before, after)
			}
			if err := shutdown(context.Background()); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		})
	}
}

func TestTracingEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "unset"},
		{name: "endpoint", env: map[string]string{envEndpoint: "http://collector:4318"}, want: "http://collector:4318"},
		{name: "traces endpoint wins", env: map[string]string{envEndpoint: "http://a:4318", envTracesEndpoint: "https://b/v1/traces"},
			want: "https://b/v1/traces"},
		{name: "credentials not shown", env: map[string]string{envEndpoint: "https://user:secret@collector:4318?key=k"},
			want: "https://collector:4318"},
		{name: "http/protobuf", env: map[string]string{envEndpoint: "http://c:4318", envProtocol: "http/protobuf"}, want: "http://c:4318"},
		{name: "traces protocol wins", env: map[string]string{envEndpoint: "http://c:4318", envProtocol: "grpc", envTracesProtocol: "http/json"},
			want: "http://c:4318"},
		{name: "grpc", env: map[string]string{envEndpoint: "http://c:4317", envProtocol: "grpc"}, wantErr: envProtocol + "=grpc"},
		{name: "other exporter", env: map[string]string{envEndpoint: "http://c:4318", envTracesExporter: "zipkin"}, wantErr: envTracesExporter},
		{name: "not a URL", env: map[string]string{envEndpoint: "collector:4318"}, wantErr: envEndpoint},
		{name: "not a URL, with credentials", env: map[string]string{envTracesEndpoint: "user:secret@collector:4318"}, wantErr: envTracesEndpoint},
		{name: "disabled", env: map[string]string{envEndpoint: "http://c:4318", envSDKDisabled: "TRUE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tracingEndpoint(func(k string) string { return tt.env[k] })
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one naming %s", err, tt.wantErr)
			case tt.wantErr == "" && err != nil:
				t.Fatalf("error %v", err)
			}
			if got != tt.want {
				t.Errorf("endpoint %q, want %q", got, tt.want)
			}
			if strings.Contains(got, "secret") || (err != nil && strings.Contains(err.Error(), "secret")) {
				t.Errorf("the endpoint's credentials show: %q, %v", got, err)
			}
		})
	}
}
