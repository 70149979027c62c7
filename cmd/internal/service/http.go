package service

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// newRegistry holds the worker's metrics and the Go and process ones.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// readiness says whether this worker should take traffic: connected to
// NATS, bound to its consumer, and able to call Tallyfy (breaker closed,
// credentials readable and not rejected). When Tallyfy is down every
// replica turns unready, so autoscalers stop adding pressure; when only
// this worker cannot reach it, only this one does.
func readiness(nc *nats.Conn, w *worker.Worker) (bool, []string) {
	var why []string
	if !nc.IsConnected() {
		why = append(why, "not connected to NATS")
	}
	h := w.Health()
	if !h.ConsumerBound {
		why = append(why, "consumer not bound")
	}
	if h.Reason != "" {
		why = append(why, h.Reason)
	}
	return len(why) == 0, why
}

// httpServer serves /metrics, /healthz and /readyz. startHTTP listens
// before it returns, so that the caller learns at once that the address is
// taken (Run then goes on without the server: a taken port must not stop
// deletions).
type httpServer struct {
	srv  *http.Server
	done chan struct{}
}

func startHTTP(addr string, reg *prometheus.Registry, ready func() (bool, []string), log *zerolog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ready": ok, "reasons": why})
	})
	s := &httpServer{
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("metrics and probes server stopped")
		}
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz and /readyz")
	return s, nil
}

func (s *httpServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}
