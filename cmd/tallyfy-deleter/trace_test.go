package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// otlpSink is an OTLP/HTTP trace receiver that keeps what it is sent.
type otlpSink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newOTLPSink(t *testing.T) *otlpSink {
	s := &otlpSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// holds reports whether any export so far holds b.
func (s *otlpSink) holds(b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, body := range s.bodies {
		if bytes.Contains(body, b) {
			return true
		}
	}
	return false
}

// TestTraceContextEndToEnd: the built binary, with the standard
// OTEL_EXPORTER_OTLP_ENDPOINT set, takes a job whose traceparent a
// publisher in another language wrote (lower case), sends the trace on to
// Tallyfy, puts it on the result event, and exports the job's spans to the
// collector (that no variable means no exporter is SetupTracing's test).
func TestTraceContextEndToEnd(t *testing.T) {
	srv := testutil.JetStream(t)
	api := testutil.NewFakeTallyfy(t)
	sink := newOTLPSink(t)
	p := newPool(t, srv.URL(), api)
	p.start("traced", "OTEL_EXPORTER_OTLP_ENDPOINT="+sink.srv.URL, "OTEL_BSP_SCHEDULE_DELAY=50", "LOG_LEVEL=info")
	p.waitPulling(1)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	api.AddRun(poolOrg, "traced-run", true)
	m := nats.NewMsg(worker.DefaultJobsSubject)
	m.Data = []byte(`{"org_id":"` + poolOrg + `","run_id":"traced-run","request_id":"gdpr-trace"}`)
	m.Header["traceparent"] = []string{"00-" + traceID + "-00f067aa0ba902b7-01"}
	m.Header["tracestate"] = []string{"vendor=abc"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	p.waitResults(1, 30*time.Second)

	results := p.readStream(worker.DefaultResultsStream)
	var res worker.Result
	if err := json.Unmarshal(results[0].Data(), &res); err != nil {
		t.Fatal(err)
	}
	if res.Outcome != worker.OutcomeDeleted || res.TraceID != traceID {
		t.Errorf("result %+v: want deleted with trace_id %s", res, traceID)
	}
	if tp := results[0].Headers().Get("traceparent"); !strings.Contains(tp, traceID) {
		t.Errorf("result event's traceparent %q does not carry the job's trace", tp)
	}
	sent := false
	for _, r := range api.Requests() {
		if r.Method == http.MethodDelete && strings.Contains(r.Header.Get("Traceparent"), traceID) {
			sent = true
		}
	}
	if !sent {
		t.Errorf("the DELETE did not carry the job's trace: %+v", api.Requests())
	}
	raw, _ := hex.DecodeString(traceID)
	p.waitUntil(20*time.Second, "the job's spans exported to the collector", func() bool { return sink.holds(raw) })
}
