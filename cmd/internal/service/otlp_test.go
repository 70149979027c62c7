package service

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// envOf is a getenv over vars.
func envOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func testSpans() []*tracepb.ResourceSpans {
	return []*tracepb.ResourceSpans{{ScopeSpans: []*tracepb.ScopeSpans{{
		Scope: &commonpb.InstrumentationScope{Name: "test"},
		Spans: []*tracepb.Span{{
			TraceId:      []byte{0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c},
			SpanId:       []byte{0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31},
			ParentSpanId: []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08},
			Name:         "process tallyfy.runs.delete",
			Kind:         tracepb.Span_SPAN_KIND_CONSUMER,
		}},
	}}}}
}

// collector records what is posted to it and answers with the statuses
// given, one per request, then 200.
type collector struct {
	mu       sync.Mutex
	statuses []int
	requests []*http.Request
	bodies   [][]byte
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	c.requests = append(c.requests, r)
	c.bodies = append(c.bodies, body)
	status := http.StatusOK
	if len(c.statuses) > 0 {
		status, c.statuses = c.statuses[0], c.statuses[1:]
	}
	c.mu.Unlock()
	w.WriteHeader(status)
}

func startCollector(t *testing.T, statuses ...int) (*collector, *httptest.Server) {
	t.Helper()
	c := &collector{statuses: statuses}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv
}

// uploadOnce sends testSpans, with a client of the variables vars gives
// for a fresh collector's URL, and returns the one request it got.
func uploadOnce(t *testing.T, vars func(collectorURL string) map[string]string) (*http.Request, []byte) {
	t.Helper()
	col, srv := startCollector(t)
	c, err := newOTLPClient(envOf(vars(srv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.UploadTraces(context.Background(), testSpans()); err != nil {
		t.Fatalf("UploadTraces: %v", err)
	}
	return col.requests[0], col.bodies[0]
}

// TestOTLPProtobufWithHeadersAndGzip: the request is a protobuf
// ExportTraceServiceRequest, gzipped when asked, at <endpoint>/v1/traces,
// with the headers of OTEL_EXPORTER_OTLP_HEADERS (values percent-decoded).
func TestOTLPProtobufWithHeadersAndGzip(t *testing.T) {
	r, body := uploadOnce(t, func(url string) map[string]string {
		return map[string]string{
			envEndpoint:                      url + "/base/",
			"OTEL_EXPORTER_OTLP_HEADERS":     "api-key=s%3Dcret, x-team = deletions",
			"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
		}
	})
	if r.URL.Path != "/base/v1/traces" || r.Method != http.MethodPost {
		t.Errorf("%s %s, want POST /base/v1/traces", r.Method, r.URL.Path)
	}
	if got := r.Header.Get("Api-Key"); got != "s=cret" {
		t.Errorf("api-key header %q, want s=cret", got)
	}
	if got := r.Header.Get("X-Team"); got != "deletions" {
		t.Errorf("x-team header %q, want deletions", got)
	}
	if r.Header.Get("Content-Type") != "application/x-protobuf" || r.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("Content-Type %q, Content-Encoding %q; want application/x-protobuf, gzip", r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the body is not gzip: %v", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		t.Fatalf("not an ExportTraceServiceRequest: %v", err)
	}
	if !proto.Equal(req.ResourceSpans[0], testSpans()[0]) || len(req.ResourceSpans) != 1 {
		t.Errorf("the collector got %v, want the spans sent", req.ResourceSpans)
	}
}

// TestOTLPJSON: with http/json the body is OTLP's JSON: IDs in hex, enums
// as numbers, lowerCamelCase names.
func TestOTLPJSON(t *testing.T) {
	r, body := uploadOnce(t, func(url string) map[string]string {
		return map[string]string{
			envTracesEndpoint:                    url + "/custom/path",
			envProtocol:                          "http/protobuf",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json",
		}
	})
	if r.URL.Path != "/custom/path" {
		t.Errorf("posted to %s, want the traces endpoint as it is", r.URL.Path)
	}
	if r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	}
	var doc struct {
		ResourceSpans []struct {
			ScopeSpans []struct {
				Spans []struct {
					TraceID      string `json:"traceId"`
					SpanID       string `json:"spanId"`
					ParentSpanID string `json:"parentSpanId"`
					Name         string `json:"name"`
					Kind         int    `json:"kind"`
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	s := doc.ResourceSpans[0].ScopeSpans[0].Spans[0]
	if s.TraceID != "0af7651916cd43dd8448eb211c80319c" || s.SpanID != "b7ad6b7169203331" || s.ParentSpanID != "0102030405060708" {
		t.Errorf("IDs %s %s %s, want hex", s.TraceID, s.SpanID, s.ParentSpanID)
	}
	if s.Kind != int(tracepb.Span_SPAN_KIND_CONSUMER) || s.Name != "process tallyfy.runs.delete" {
		t.Errorf("kind %d name %q", s.Kind, s.Name)
	}
}

// TestOTLPRetries: 429, 502, 503 and 504 are tried again (Retry-After
// honoured); another refusal is final and says what the collector said.
func TestOTLPRetries(t *testing.T) {
	col, srv := startCollector(t, http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway)
	c, err := newOTLPClient(envOf(map[string]string{envEndpoint: srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	c.retryMin = time.Millisecond
	if err := c.UploadTraces(context.Background(), testSpans()); err != nil {
		t.Fatalf("UploadTraces after three retryable answers: %v", err)
	}
	if len(col.requests) != 4 {
		t.Errorf("%d posts, want 4", len(col.requests))
	}

	_, srv = startCollector(t, http.StatusBadRequest)
	if c, err = newOTLPClient(envOf(map[string]string{envEndpoint: srv.URL})); err != nil {
		t.Fatal(err)
	}
	if err := c.UploadTraces(context.Background(), testSpans()); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("UploadTraces after a 400 = %v, want an error naming it", err)
	}

	// A collector that keeps refusing: the export gives up at its timeout.
	_, srv = startCollector(t, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503, 503)
	if c, err = newOTLPClient(envOf(map[string]string{envEndpoint: srv.URL, "OTEL_EXPORTER_OTLP_TIMEOUT": "200"})); err != nil {
		t.Fatal(err)
	}
	c.retryMin = 20 * time.Millisecond
	start := time.Now()
	if err := c.UploadTraces(context.Background(), testSpans()); err == nil {
		t.Error("UploadTraces succeeded against a collector answering 503")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("UploadTraces took %s with a 200 ms timeout", d)
	}
}

// TestOTLPSettingsRefused: a setting that cannot be used is an error that
// names it and does not show a header's value.
func TestOTLPSettingsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		vars map[string]string
		want string
	}{
		{"timeout", map[string]string{"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, "OTEL_EXPORTER_OTLP_TIMEOUT"},
		{"compression", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "zstd"}, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"},
		{"headers", map[string]string{"OTEL_EXPORTER_OTLP_HEADERS": "api-key s3cret-value"}, "OTEL_EXPORTER_OTLP_HEADERS"},
		{"certificate", map[string]string{"OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent/ca.pem"}, "OTEL_EXPORTER_OTLP_CERTIFICATE"},
		{"client key alone", map[string]string{"OTEL_EXPORTER_OTLP_CLIENT_KEY": "/nonexistent/key.pem"}, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.vars[envEndpoint] = "http://otel-collector:4318"
			_, err := newOTLPClient(envOf(tc.vars))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("newOTLPClient = %v, want an error naming %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows a header's value: %v", err)
			}
		})
	}
}

func TestTracesURL(t *testing.T) {
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{envEndpoint: "http://c:4318"}, "http://c:4318/v1/traces"},
		{map[string]string{envEndpoint: "http://c:4318/"}, "http://c:4318/v1/traces"},
		{map[string]string{envEndpoint: "https://c/otlp"}, "https://c/otlp/v1/traces"},
		{map[string]string{envTracesEndpoint: "http://c:4318"}, "http://c:4318/"},
		{map[string]string{envTracesEndpoint: "http://c:4318/x/traces", envEndpoint: "http://other:4318"}, "http://c:4318/x/traces"},
	} {
		got, err := tracesURL(envOf(tc.vars))
		if err != nil || got != tc.want {
			t.Errorf("tracesURL(%v) = %q, %v; want %q", tc.vars, got, err, tc.want)
		}
	}
}

// TestOTLPUserAgent: the exporter names itself, not Go's default.
func TestOTLPUserAgent(t *testing.T) {
	r, _ := uploadOnce(t, func(url string) map[string]string { return map[string]string{envEndpoint: url} })
	if ua := r.Header.Get("User-Agent"); !regexp.MustCompile(`(?i)otlp`).MatchString(ua) {
		t.Errorf("User-Agent %q", ua)
	}
}
