package service

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Run is `tallyfy-deleter run` once its settings are loaded: the worker,
// wired to NATS, Tallyfy, metrics and probes, working until ctx is
// cancelled. It returns the exit status: 0 after a clean stop (a stop
// while it still waits for NATS included), 1 when it could not start (NATS
// refused the connection, the streams could not be set up), 2 when it
// refused to (settings that cannot work).
func Run(ctx context.Context, cfg *settings.Run, version string, log zerolog.Logger) int {
	cfg.Worker.Logger = &log
	log.Info().Str("version", version).Interface("config", cfg.Effective).Msg("effective configuration")

	reg := newRegistry()
	metrics := worker.NewMetrics(reg)
	cfg.Worker.Metrics = metrics
	api, err := newAPIClient(cfg, version, tallyfy.WithRequestHook(metrics.ObserveRequest))
	if err != nil {
		log.Error().Err(err).Msg("refusing to start")
		return 2
	}
	tp, stopTracing, err := SetupTracing(ctx, "tallyfy-deleter", version, &log)
	if err != nil {
		log.Error().Err(err).Msg("refusing to start")
		return 2
	}
	// On a context the signal did not cancel: the last spans are flushed
	// within TracingShutdownTimeout.
	defer func() {
		if err := stopTracing(context.WithoutCancel(ctx)); err != nil {
			log.Warn().Err(err).Msg("tracing: the last spans were not all exported")
		}
	}()
	cfg.Worker.TracerProvider = tp
	// The probes answer from the start: live, and unready until the worker
	// is connected and bound, so that one waiting for NATS is not
	// restarted by its liveness probe, nor sent traffic.
	var running atomic.Pointer[parts]
	if cfg.HTTPAddr != "" {
		// A taken port must not stop deletions: several workers on one host
		// with the default address would otherwise all but one refuse to
		// run. Without the server the probes fail, which is visible enough.
		ready := func() (bool, []string) {
			p := running.Load()
			if p == nil {
				return false, []string{"connecting to NATS"}
			}
			return readiness(p.nc, p.w)
		}
		srv, err := startHTTP(cfg.HTTPAddr, reg, ready, &log)
		if err != nil {
			log.Error().Err(err).Str("addr", cfg.HTTPAddr).Msg("DELETER_HTTP_ADDR: cannot listen; running without /metrics, /healthz and /readyz")
		} else {
			defer srv.stop()
		}
	}
	nc, err := connectNATS(ctx, &cfg.NATS, "tallyfy-deleter "+cfg.WorkerName(), &log)
	if ctx.Err() != nil {
		if nc != nil {
			nc.Close()
		}
		log.Info().Msg("stopped before NATS could be reached; nothing was taken")
		return 0
	}
	if err != nil {
		log.Error().Err(err).Str("nats_url", cli.RedactURLs(cfg.NATS.Servers())).Msg("cannot connect to NATS")
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc, worker.JetStreamOptions(cfg.Worker)...)
	if err != nil {
		log.Error().Err(err).Msg("cannot use JetStream")
		return 1
	}
	w, err := worker.New(js, api, cfg.Worker)
	if err != nil {
		log.Error().Str("error", settings.Describe(err)).Msg("refusing to start")
		return 2
	}
	running.Store(&parts{nc, w})
	if cfg.Worker.DryRun {
		log.Warn().Msg("DELETER_DRY_RUN is on: nothing will be deleted")
	}
	log.Info().Str("nats_url", cli.RedactURLs(cfg.NATS.Servers())).Str("api_url", cfg.APIURL).Msg("worker starting")
	if err := w.Run(ctx); err != nil {
		log.Error().Str("error", settings.Describe(err)).Msg("worker could not start")
		return 1
	}
	if err := nc.Drain(); err != nil {
		log.Warn().Err(err).Msg("draining the NATS connection")
	}
	return 0
}

// parts are what readiness looks at once the worker exists.
type parts struct {
	nc *nats.Conn
	w  *worker.Worker
}

// Waits between connect attempts while no NATS server can be reached: the
// first retry after natsRetryFirst, each wait twice the last, up to
// natsRetryMax.
const (
	natsRetryFirst = time.Second
	natsRetryMax   = 30 * time.Second
)

// connectNATS connects as cli.ConnectNATS does, trying again while no
// server can be reached (see unreachable) until ctx ends: a worker started
// before NATS, or cut off from it, waits for it rather than exiting (and
// crash-looping, its restarts spaced ever wider, long after NATS is back).
// A server that answers and refuses (TLS, credentials) ends it at once:
// waiting would not change the settings. Each attempt is bounded by
// nats.go's connect timeout, 2 s a server, which is also how long a signal
// may wait.
func connectNATS(ctx context.Context, to cli.NATSTarget, name string, log *zerolog.Logger) (*nats.Conn, error) {
	wait := natsRetryFirst
	for attempt := 1; ; attempt++ {
		nc, err := cli.ConnectNATS(to, name, log)
		if err == nil || !unreachable(err) {
			return nc, err
		}
		log.Warn().Err(err).Str("nats_url", cli.RedactURLs(to.Servers())).Int("attempt", attempt).
			Dur("retry_in", wait).Msg("NATS unreachable; trying again")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, natsRetryMax)
	}
}

// unreachable says whether a connect failed for want of a server to talk
// to: none listening, a name that does not resolve, a dial or a greeting
// that timed out.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		(errors.As(err, &op) && op.Op == "dial")
}

// newAPIClient builds the Tallyfy client with the credentials LoadRun
// checked (their file already read).
func newAPIClient(cfg *settings.Run, version string, extra ...tallyfy.Option) (*tallyfy.Client, error) {
	opts := append([]tallyfy.Option{
		tallyfy.WithTimeout(cfg.Worker.APITimeout),
		tallyfy.WithUserAgent(UserAgent(version)),
		// One connection per job in flight (a verify GET follows its
		// DELETE, never runs beside it), so none is redialled.
		tallyfy.WithKeepAlive(max(cfg.Worker.Concurrency, worker.DefaultConcurrency)),
	}, extra...)
	opts = append(opts, cfg.Credentials())
	return tallyfy.New(cfg.APIURL, opts...)
}

// UserAgent is what the binary of this version calls itself at Tallyfy.
func UserAgent(version string) string { return "tallyfy-deleter/" + version }
