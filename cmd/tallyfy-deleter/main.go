// Command tallyfy-deleter permanently deletes Tallyfy process runs on
// request: it consumes jobs from NATS JetStream and calls Tallyfy's
// permanent-delete endpoint. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
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

func cmdRun(args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := settings.LoadRun(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tallyfy-deleter run: refusing to start:\n%s\n", cli.Indent(err.Error()))
		return 2
	}
	workerID := cfg.Worker.WorkerID
	if workerID == "" {
		workerID, _ = os.Hostname()
	}
	log := cli.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat, workerID)
	cfg.Worker.Logger = &log

	ctx, stop := cli.SignalContext(&log)
	defer stop()
	log.Info().Str("version", version).Interface("config", cfg.Effective).Msg("effective configuration")

	reg := newRegistry()
	metrics := worker.NewMetrics(reg)
	cfg.Worker.Metrics = metrics
	api, err := newAPIClient(cfg, tallyfy.WithRequestHook(metrics.ObserveRequest))
	if err != nil {
		log.Error().Err(err).Msg("refusing to start")
		return 2
	}
	nc, err := cli.ConnectNATS(cfg.NATSURL, cfg.NATSCreds, "tallyfy-deleter "+workerID, &log)
	if err != nil {
		log.Error().Err(err).Str("nats_url", cli.RedactURLs(cfg.NATSURL)).Msg("cannot connect to NATS")
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
	log.Info().Str("nats_url", cli.RedactURLs(cfg.NATSURL)).Str("api_url", cfg.APIURL).Msg("worker starting")
	if err := w.Run(ctx); err != nil {
		log.Error().Err(err).Msg("worker could not start")
		return 1
	}
	if err := nc.Drain(); err != nil {
		log.Warn().Err(err).Msg("draining the NATS connection")
	}
	return 0
}

func newAPIClient(cfg *settings.Run, extra ...tallyfy.Option) (*tallyfy.Client, error) {
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
