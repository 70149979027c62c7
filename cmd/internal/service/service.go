package service

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Run is `tallyfy-deleter run` once its settings are loaded: the worker,
// wired to NATS, Tallyfy, metrics and probes, working until ctx is
// cancelled. It returns the exit status: 0 after a clean stop, 1 when it
// could not start (NATS unreachable), 2 when it refused to (settings that
// cannot work).
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
	nc, err := cli.ConnectNATS(&cfg.NATS, "tallyfy-deleter "+cfg.WorkerName(), &log)
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
	if cfg.HTTPAddr != "" {
		// A taken port must not stop deletions: several workers on one host
		// with the default address would otherwise all but one refuse to
		// run. Without the server the probes fail, which is visible enough.
		srv, err := startHTTP(cfg.HTTPAddr, reg, func() (bool, []string) { return readiness(nc, w) }, &log)
		if err != nil {
			log.Error().Err(err).Str("addr", cfg.HTTPAddr).Msg("DELETER_HTTP_ADDR: cannot listen; running without /metrics, /healthz and /readyz")
		} else {
			defer srv.stop()
		}
	}
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
