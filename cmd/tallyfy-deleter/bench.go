package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/bench"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
)

const benchHelp = `
Measures the worker against a bare loop (pull, DELETE, publish the result,
ack: the confirmations the worker makes, and nothing else) on an embedded
JetStream server (file storage) and a fake Tallyfy API answering after
--api-latency. Each loop runs in a child process, so CPU, peak RSS and
allocations are the loop's own. One run per latency, concurrency and loop.

With --memory, runs only the worker with backlogs of 1,000 and 100,000
jobs (--memory-jobs) at concurrency 64 and API latency 0 unless those flags
are given, and compares peak RSS: it should follow the jobs in flight, not
the backlog.

A run lasts at least jobs × latency / concurrency: with the defaults, the
row at concurrency 1 and 50ms takes over 8 minutes per loop.
`

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if bench.IsChild(args) {
		return bench.Child(args, version, os.Stdin, stdout, stderr)
	}
	opts, asJSON, code, ok := parseBenchFlags(args, stdout, stderr)
	if !ok {
		return code
	}
	// The first signal stops the run in progress (its children are
	// killed, not finished) and prints the rows done so far.
	ctx, stop := cli.OnSignal(func(os.Signal) {
		fmt.Fprintln(stderr, "interrupted: stopping the run in progress; the rows done so far follow; interrupt again to quit at once")
	}, nil)
	defer stop()
	// A failed or interrupted bench still shows the rows it finished: a
	// full run takes long.
	rows, err := bench.Run(ctx, opts, stderr)
	if err == nil || len(rows) > 0 {
		if asJSON {
			if err := bench.WriteJSON(stdout, rows); err != nil {
				fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n", err)
				return 1
			}
		} else {
			bench.WriteTable(stdout, rows, opts.Memory)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n", err)
		return 1
	}
	return 0
}

// parseBenchFlags reads bench's command line as every subcommand reads
// its own: help on stdout, a bad command line in one line and a hint on
// stderr. When it returns false, the command exits with code.
func parseBenchFlags(args []string, stdout, stderr io.Writer) (opts bench.Options, asJSON bool, code int, ok bool) {
	var conc, lat, memJobs string
	s := &settings.Set{}
	s.NumIn(&opts.Jobs, "", "jobs", "10000", "jobs per run, the backlog published before the loop starts (1 to 10000000)", 1, 10_000_000)
	s.Str(&conc, "", "concurrency", "", "jobs in flight, a comma list: one run per value, each 1 to 10000 (default: 1,16,64,256; 64 with --memory)")
	s.Str(&lat, "", "api-latency", "", "the fake API's answer delay, a comma list: one run per value (default: 0,50ms; 0 with --memory)")
	s.Bool(&asJSON, "", "json", "false", "print the rows as a JSON array instead of a table")
	s.Bool(&opts.Memory, "", "memory", "false", "compare the worker's peak RSS with a small and a large backlog")
	s.Str(&memJobs, "", "memory-jobs", "1000,100000", "backlogs compared by --memory, a comma list, each 1 to 10000000")
	s.NumIn(&opts.Repeat, "", "repeat", "1", "measure each setting this many times, alternating the loops (and which goes first), and report the medians (1 to 1000)", 1, 1000)
	s.Bool(&opts.Trace, "", "trace", "false", "also run the worker with tracing on (a span per job and per request, exported over OTLP/HTTP to a local sink that discards them), every job carrying a traceparent")
	s.Str(&opts.ProfileDir, "", "cpuprofile-dir", "", "write profiles of each run to this directory: the child's CPU and allocations, and the servers' CPU (NATS and the fake API)")
	rest, code, ok := s.Command("bench", args, func(string) string { return "" }, stdout, stderr, benchHelp)
	if !ok {
		return opts, asJSON, code, false
	}
	err := benchLists(&opts, rest, conc, lat, memJobs)
	if err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n%s\n", err, settings.Hint("bench"))
		return opts, asJSON, 2, false
	}
	return opts, asJSON, 0, true
}

// benchLists reads the comma lists of the flags into opts.
func benchLists(opts *bench.Options, rest []string, conc, lat, memJobs string) error {
	if len(rest) > 0 {
		return fmt.Errorf("takes no arguments, got %q", rest)
	}
	switch {
	case conc != "":
	case opts.Memory:
		conc = "64"
	default:
		conc = "1,16,64,256"
	}
	switch {
	case lat != "":
	case opts.Memory:
		lat = "0"
	default:
		lat = "0,50ms"
	}
	var err error
	if opts.Concurrency, err = parseInts(conc, 1, 10000); err != nil {
		return fmt.Errorf("--concurrency: %w", err)
	}
	if opts.MemoryJobs, err = parseInts(memJobs, 1, 10_000_000); err != nil {
		return fmt.Errorf("--memory-jobs: %w", err)
	}
	for _, s := range strings.Split(lat, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return fmt.Errorf("--api-latency: %q is not a duration such as 0, 5ms or 50ms", s)
		}
		opts.Latencies = append(opts.Latencies, d)
	}
	return nil
}

func parseInts(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not a whole number from %d to %d", part, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}
