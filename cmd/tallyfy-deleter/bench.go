package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/bench"
)

const benchUsage = `Usage: tallyfy-deleter bench [flags]

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

Flags:
`

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if bench.IsChild(args) {
		return bench.Child(args, version, os.Stdin, stdout, stderr)
	}
	opts, asJSON, err := parseBenchFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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

func parseBenchFlags(args []string, stderr io.Writer) (opts bench.Options, asJSON bool, err error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	fs.IntVar(&opts.Jobs, "jobs", 10000, "jobs per run (the backlog published before the loop starts)")
	conc := fs.String("concurrency", "1,16,64,256", "jobs in flight, a comma list: one run per value")
	lat := fs.String("api-latency", "0,50ms", "the fake API's answer delay, a comma list: one run per value")
	fs.BoolVar(&asJSON, "json", false, "print the rows as a JSON array instead of a table")
	fs.BoolVar(&opts.Memory, "memory", false, "compare the worker's peak RSS with a small and a large backlog")
	memJobs := fs.String("memory-jobs", "1000,100000", "backlogs compared by --memory")
	fs.IntVar(&opts.Repeat, "repeat", 1, "measure each setting this many times, alternating the loops (and which goes first), and report the medians")
	fs.StringVar(&opts.ProfileDir, "cpuprofile-dir", "", "write a CPU profile of each child (worker and bare) to this directory")
	if err := fs.Parse(args); err != nil {
		return opts, asJSON, err
	}
	if fs.NArg() > 0 {
		return opts, asJSON, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opts.Memory {
		if !set["concurrency"] {
			*conc = "64"
		}
		if !set["api-latency"] {
			*lat = "0"
		}
	}
	if opts.Concurrency, err = parseInts(*conc, 1, 10000); err != nil {
		return opts, asJSON, fmt.Errorf("--concurrency: %w", err)
	}
	if opts.MemoryJobs, err = parseInts(*memJobs, 1, 10_000_000); err != nil {
		return opts, asJSON, fmt.Errorf("--memory-jobs: %w", err)
	}
	if opts.Repeat < 1 {
		return opts, asJSON, fmt.Errorf("--repeat must be at least 1, not %d", opts.Repeat)
	}
	if opts.Jobs < 1 {
		return opts, asJSON, fmt.Errorf("--jobs must be at least 1, not %d", opts.Jobs)
	}
	for _, s := range strings.Split(*lat, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return opts, asJSON, fmt.Errorf("--api-latency: %q is not a duration such as 0, 5ms or 50ms", s)
		}
		opts.Latencies = append(opts.Latencies, d)
	}
	return opts, asJSON, nil
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
