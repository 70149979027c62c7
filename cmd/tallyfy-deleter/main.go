// Command tallyfy-deleter permanently deletes Tallyfy process runs on
// request: it consumes jobs from NATS JetStream and calls Tallyfy's
// permanent-delete endpoint. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usage = `tallyfy-deleter permanently deletes Tallyfy process runs on request.

Usage: tallyfy-deleter <command> [flags]

Commands:
  run         consume deletion jobs from NATS JetStream (the worker)
  demo        the whole pipeline on an embedded NATS and a fake Tallyfy
  enqueue     publish deletion jobs from arguments, a file or stdin
  dlq ls      list dead letters
  dlq replay  re-publish dead letters as jobs, removing each once re-published
  status      backlog, dead letters by reason, results by outcome
  bench       measure the worker against a bare loop on embedded servers
  version     print the version

Run 'tallyfy-deleter <command> --help' for a command's flags.
`

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], getenv, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "enqueue":
		return cmdEnqueue(args[1:], getenv, os.Stdin, stdout, stderr)
	case "dlq":
		return cmdDLQ(args[1:], getenv, stdout, stderr)
	case "status":
		return cmdStatus(args[1:], getenv, stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "tallyfy-deleter %s\n", version)
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tallyfy-deleter: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func userAgent() string { return "tallyfy-deleter/" + version }

func parseLevel(s string) (zerolog.Level, error) {
	l, err := zerolog.ParseLevel(strings.ToLower(strings.TrimSpace(s)))
	if err != nil || s == "" {
		return zerolog.InfoLevel, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

func newLogger(w io.Writer, level, format, workerID string) zerolog.Logger {
	l, _ := parseLevel(level)
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(l).With().Timestamp().Str("worker", workerID).Logger()
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// exits the process at once.
func signalContext(log *zerolog.Logger) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			log.Info().Str("signal", s.String()).Msg("shutting down; a second signal exits at once")
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			log.Warn().Str("signal", s.String()).Msg("second signal: exiting now")
			os.Exit(1)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

func cmdRun(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := loadRunConfig(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tallyfy-deleter run: refusing to start:\n%s\n", indent(err.Error()))
		return 2
	}
	workerID := cfg.Worker.WorkerID
	if workerID == "" {
		workerID, _ = os.Hostname()
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat, workerID)
	cfg.Worker.Logger = &log

	ctx, stop := signalContext(&log)
	defer stop()
	log.Info().Str("version", version).Interface("config", cfg.effective).Msg("effective configuration")

	reg := newRegistry()
	metrics := worker.NewMetrics(reg)
	cfg.Worker.Metrics = metrics
	api, err := newAPIClient(cfg, tallyfy.WithRequestHook(metrics.ObserveRequest))
	if err != nil {
		log.Error().Err(err).Msg("refusing to start")
		return 2
	}
	nc, err := connectNATS(cfg.NATSURL, cfg.NATSCreds, "tallyfy-deleter "+workerID, &log)
	if err != nil {
		log.Error().Err(err).Str("nats_url", redactURLs(cfg.NATSURL)).Msg("cannot connect to NATS")
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error().Err(err).Msg("cannot use JetStream")
		return 1
	}
	w, err := worker.New(js, api, cfg.Worker)
	if err != nil {
		log.Error().Err(err).Msg("refusing to start")
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
	log.Info().Str("nats_url", redactURLs(cfg.NATSURL)).Str("api_url", cfg.APIURL).Msg("worker starting")
	if err := w.Run(ctx); err != nil {
		log.Error().Err(err).Msg("worker could not start")
		return 1
	}
	if err := nc.Drain(); err != nil {
		log.Warn().Err(err).Msg("draining the NATS connection")
	}
	return 0
}

func newAPIClient(cfg *runConfig, extra ...tallyfy.Option) (*tallyfy.Client, error) {
	opts := append([]tallyfy.Option{
		tallyfy.WithTimeout(cfg.Worker.APITimeout),
		tallyfy.WithUserAgent(userAgent()),
		// One connection per job in flight (a verify GET follows its
		// DELETE, never runs beside it), so none is redialled.
		tallyfy.WithKeepAlive(max(cfg.Worker.Concurrency, worker.DefaultConcurrency)),
	}, extra...)
	switch {
	case cfg.TokenFile != "":
		opts = append(opts, tallyfy.WithTokenSource(tallyfy.FileTokenSource(cfg.TokenFile)))
	case cfg.ClientID != "":
		cs, err := tallyfy.ClientCredentials(tallyfy.ClientCredentialsConfig{
			TokenURL:         cfg.TokenURL,
			ClientID:         cfg.ClientID,
			ClientSecret:     cfg.ClientSecret,
			ClientSecretFile: cfg.ClientSecretFile,
		})
		if err != nil {
			return nil, fmt.Errorf("TALLYFY_CLIENT_ID, TALLYFY_CLIENT_SECRET(_FILE), TALLYFY_TOKEN_URL: %w", err)
		}
		opts = append(opts, tallyfy.WithTokenSource(cs))
	default:
		opts = append(opts, tallyfy.WithToken(cfg.Token))
	}
	return tallyfy.New(cfg.APIURL, opts...)
}

func connectNATS(url, creds, name string, log *zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if c.IsClosed() {
				return // closed on purpose, not lost
			}
			log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn().Err(err).Msg("NATS error")
		}),
	}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	return nats.Connect(url, opts...)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}
