package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// maxOTLPBody bounds what the sink reads of one export: the SDK's batches
// are 512 spans, a few hundred KiB.
const maxOTLPBody = 16 << 20

// otlpSink is the OTLP/HTTP endpoint the traced worker child exports its
// spans to: it answers 200 to every POST /v1/traces, reads the body (at
// most maxOTLPBody) and throws it away, counting requests and bytes. It
// listens on the loopback only.
type otlpSink struct {
	srv      *http.Server
	url      string
	served   sync.WaitGroup
	requests atomic.Int64
	bytes    atomic.Int64
}

func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second}
	// Serve fails only when closed, or with a listener gone bad; a traced
	// run then fails for want of spans, which says enough.
	s.served.Go(func() { _ = s.srv.Serve(ln) })
	return s, nil
}

func (s *otlpSink) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	n, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxOTLPBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.requests.Add(1)
	s.bytes.Add(n)
	// An empty ExportTraceServiceResponse: all spans accepted.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// counts is what the sink has received so far.
func (s *otlpSink) counts() (requests, bytes int64) { return s.requests.Load(), s.bytes.Load() }

// close stops the sink and waits for its server to end.
func (s *otlpSink) close(ctx context.Context) {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	s.served.Wait()
}
