package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const statusHelp = `
Shows the jobs backlog (the consumer's pending, ack-pending and redelivered
counts), the dead letters by reason and the result events kept, by outcome.
Streams that do not exist yet are reported as such.
`

func cmdStatus(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var jsonOut bool
	s := settings.ToolSettings(&cfg)
	s.Bool(&jsonOut, "", "json", "false", "print JSON instead of tables")
	rest, code, ok := s.Command("status", args, getenv, stdout, stderr, statusHelp)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "tallyfy-deleter status: takes no arguments, got %q\n", rest)
		return 2
	}
	errw := cli.NewSyncWriter(stderr)
	js, disconnect, err := cli.ToolConnect(&cfg.NATS, "status", errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter status: %v\n", err)
		return 1
	}
	defer disconnect()
	rep, err := ops.Status(context.Background(), js, cfg.Names)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter status: %v\n", err)
		return 1
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(errw, "tallyfy-deleter status: %v\n", err)
			return 1
		}
		return 0
	}
	printStatus(stdout, rep)
	return 0
}

func printStatus(w io.Writer, r *ops.StatusReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()

	j := r.Jobs
	switch {
	case !j.Exists:
		fmt.Fprintf(tw, "JOBS  stream %s: not created yet (a worker creates it when it starts)\n", j.Stream)
	case !j.Consumer.Exists:
		fmt.Fprintf(tw, "JOBS  stream %s, consumer %s: consumer not created yet (a worker creates it when it starts)\n", j.Stream, j.Consumer.Name)
		fmt.Fprintf(tw, "  in the stream\t%d\n", j.Messages)
	default:
		c := j.Consumer
		paused := ""
		if c.Paused {
			paused = " (paused)"
		}
		fmt.Fprintf(tw, "JOBS  stream %s, consumer %s%s\n", j.Stream, c.Name, paused)
		fmt.Fprintf(tw, "  backlog\t%d\tnot yet delivered to a worker\n", c.Backlog)
		fmt.Fprintf(tw, "  ack pending\t%d\tdelivered, not yet finished (in progress or waiting to retry)\n", c.AckPending)
		fmt.Fprintf(tw, "  redelivered\t%d\tdelivered more than once, not yet finished\n", c.Redelivered)
		fmt.Fprintf(tw, "  waiting pulls\t%d\tworkers waiting for jobs\n", c.Waiting)
		fmt.Fprintf(tw, "  in the stream\t%d\tjobs stored, not yet finished\n", j.Messages)
	}
	fmt.Fprintln(tw)

	d := r.DeadLetters
	if !d.Exists {
		fmt.Fprintf(tw, "DEAD LETTERS  stream %s: not created yet\n", d.Stream)
	} else {
		fmt.Fprintf(tw, "DEAD LETTERS  stream %s, by reason\n", d.Stream)
		printCounts(tw, d.ByReason, worker.Reasons, d.Total)
	}
	fmt.Fprintln(tw)

	res := r.Results
	if !res.Exists {
		fmt.Fprintf(tw, "RESULTS  stream %s: not created yet\n", res.Stream)
		return
	}
	kept := ""
	if res.MaxAge != "" {
		kept = ", events of the last " + res.MaxAge
	}
	fmt.Fprintf(tw, "RESULTS  stream %s, by outcome%s\n", res.Stream, kept)
	printCounts(tw, res.ByOutcome, worker.Outcomes, res.Total)
}

// printCounts prints counts in the order of known (the worker's reasons
// or outcomes), then any others by name.
func printCounts[K ~string](tw io.Writer, counts map[string]uint64, known []K, total uint64) {
	var keys, others []string
	for _, k := range known {
		keys = append(keys, string(k))
	}
	for k := range counts {
		if !slices.Contains(keys, k) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	for _, k := range append(keys, others...) {
		fmt.Fprintf(tw, "  %s\t%d\n", cli.Cell(k), counts[k])
	}
	fmt.Fprintf(tw, "  total\t%d\n", total)
}
