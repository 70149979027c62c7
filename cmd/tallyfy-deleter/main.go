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

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/service"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
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
  sweep       enqueue the archived runs a retention policy makes due
  results     query the result events: the audit trail of what was deleted
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
		return cmdRun(args[1:], getenv, stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "enqueue":
		return cmdEnqueue(args[1:], getenv, os.Stdin, stdout, stderr)
	case "dlq":
		return cmdDLQ(args[1:], getenv, stdout, stderr)
	case "sweep":
		return cmdSweep(args[1:], getenv, stdout, stderr)
	case "results":
		return cmdResults(args[1:], getenv, stdout, stderr)
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

func cmdRun(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := settings.LoadRun(args, getenv, stdout)
	var usageErr *settings.UsageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "tallyfy-deleter run: %v\n%s\n", err, settings.Hint("run"))
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "tallyfy-deleter run: refusing to start:\n%s\n", cli.Indent(err.Error()))
		return 2
	}
	log := cli.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat, cfg.WorkerName())
	ctx, stop := cli.SignalContext(&log)
	defer stop()
	return service.Run(ctx, cfg, version, log)
}
