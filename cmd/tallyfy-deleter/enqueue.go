package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

const enqueueHelp = `
Arguments: [JOB ...]

A JOB is a JSON object, {"org_id":"acme","run_id":"r1","request_id":"gdpr-1"},
or a CSV line, org_id,run_id[,request_id] (an empty org_id means
TALLYFY_ORG_ID). Jobs come from the arguments, from --file, or (with
neither) from standard input, one per line. Blank lines, '#' comments and
CSV header lines are skipped.

Every job is checked as the worker would check it; a bad one is reported
as "line N: reason" and not published. Each job's Nats-Msg-Id derives from
its org_id, run_id and request_id, so enqueueing the same file again within
the jobs stream's duplicate window publishes nothing twice.

Exit status 1 if any line was rejected or not published.
`

func cmdEnqueue(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var defaultOrg, file string
	var check bool
	s := settings.ToolSettings(&cfg)
	s.Str(&defaultOrg, "TALLYFY_ORG_ID", "tallyfy-org-id", "", "organization of jobs that name none")
	s.Str(&file, "", "file", "", "read jobs from this file, one per line ('-': standard input)")
	s.Bool(&check, "", "check", "false", "only validate: report bad lines, publish nothing")
	rest, code, ok := s.Command("enqueue", args, getenv, stdout, stderr, enqueueHelp)
	if !ok {
		return code
	}
	var errs []error
	if defaultOrg != "" && !tallyfy.ValidID(defaultOrg) {
		errs = append(errs, fmt.Errorf("TALLYFY_ORG_ID %q is not 1 to 64 letters, digits, '-' or '_'", defaultOrg))
	}
	if file != "" && len(rest) > 0 {
		errs = append(errs, errors.New("give jobs as arguments or with --file, not both"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter enqueue: %v\n", err)
		return 2
	}

	errw := cli.NewSyncWriter(stderr)
	src, err := openJobSource(rest, file, stdin, errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: %v\n", err)
		return 1
	}
	defer src.close()
	ctx, stop := cli.Interruptible(errw)
	defer stop()

	var jobs *ops.Jobs
	if !check {
		var disconnect func()
		if jobs, disconnect, ok = openJobs(ctx, &cfg, errw); !ok {
			return 1
		}
		defer disconnect()
	}

	prog := cli.NewProgress(errw, "enqueue", src.total)
	res, err := ops.Enqueue(ctx, src.lines, ops.EnqueueOptions{Jobs: jobs, DefaultOrg: defaultOrg, OnLine: func(l ops.LineReport) {
		switch l.Status {
		case ops.LineRejected:
			prog.Logf("%s %d: %v", src.unit, l.N, l.Err)
		case ops.LineFailed:
			prog.Logf("%s %d: not published: %v", src.unit, l.N, l.Err)
		}
		prog.Add(1)
	}})
	prog.Done()
	stopped := stoppedMessage(ctx, err, src.unit)
	if stopped != "" {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: %s\n", stopped)
	}
	return printEnqueueSummary(stdout, errw, res, jobs, stopped != "")
}

// openJobs connects and looks up the jobs stream. On failure it has
// reported why.
func openJobs(ctx context.Context, cfg *settings.Tool, errw io.Writer) (*ops.Jobs, func(), bool) {
	js, disconnect, err := cli.ToolConnect(&cfg.NATS, "enqueue", errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: %v\n", err)
		return nil, nil, false
	}
	jobs, err := ops.OpenJobs(ctx, js, cfg.Names)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: %v\n", err)
		disconnect()
		return nil, nil, false
	}
	return jobs, disconnect, true
}

// stoppedMessage says why ops.Enqueue stopped early, or is empty when it
// read every line.
func stoppedMessage(ctx context.Context, err error, unit string) string {
	var st *ops.StoppedError
	switch {
	case !errors.As(err, &st):
		return ""
	case errors.Is(err, ops.ErrTooManyFailures):
		return fmt.Sprintf("%d publishes failed, giving up: %s %d and later were not read", ops.MaxPublishFailures, unit, st.At)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return fmt.Sprintf("interrupted: %s %d and later were not read", unit, st.At)
	default:
		return fmt.Sprintf("reading %s %d: %v", unit, st.At, st.Err)
	}
}

// printEnqueueSummary prints the summary line (and a word on duplicates)
// and returns the exit status. jobs is nil for --check.
func printEnqueueSummary(stdout, errw io.Writer, res ops.EnqueueResult, jobs *ops.Jobs, stopped bool) int {
	if jobs == nil {
		fmt.Fprintf(stdout, "enqueue --check: %d valid, %d rejected; nothing published\n", res.Valid, res.Rejected)
		if res.Rejected > 0 || stopped {
			return 1
		}
		return 0
	}
	fmt.Fprintf(stdout, "enqueue: %d published, %d duplicates, %d rejected", res.Published, res.Duplicates, res.Rejected)
	if res.Failed > 0 {
		fmt.Fprintf(stdout, ", %d failed", res.Failed)
	}
	fmt.Fprintln(stdout)
	if res.Duplicates > 0 {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: duplicates are jobs (same org_id, run_id and request_id) already published within the jobs stream's duplicate window (%s); they were not published again\n", jobs.DuplicateWindow)
	}
	if res.Rejected > 0 || res.Failed > 0 || stopped {
		return 1
	}
	return 0
}

// jobSource is where the lines to enqueue come from: arguments, a file or
// stdin.
type jobSource struct {
	unit  string // how a position is called in messages: "line" or "argument"
	total int    // 0 when unknown
	lines ops.Source
	close func()
}

func openJobSource(args []string, file string, stdin io.Reader, stderr io.Writer) (*jobSource, error) {
	if len(args) > 0 {
		return &jobSource{unit: "argument", total: len(args), lines: ops.Args(args), close: func() {}}, nil
	}
	if file == "" || file == "-" {
		if f, ok := stdin.(*os.File); ok && cli.IsTerminal(f) {
			fmt.Fprintln(stderr, "tallyfy-deleter enqueue: reading jobs from standard input, one per line; end with Ctrl-D")
		}
		return &jobSource{unit: "line", lines: ops.NewLineReader(stdin), close: func() {}}, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	total, err := ops.CountLines(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return &jobSource{unit: "line", total: total, lines: ops.NewLineReader(f), close: func() { f.Close() }}, nil
}
