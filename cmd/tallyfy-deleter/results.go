package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const resultsHelp = `
Reads the result events (one per finished job: the audit trail of what was
deleted) without consuming or changing them, oldest first, and prints those
the flags select. The flags combine. The results stream keeps events for
DELETER_RESULTS_MAX_AGE (336h by default): nothing older can be found.

--since and --until take an RFC 3339 time (2026-11-27T02:00:00Z), a date
(2026-11-27, midnight UTC), or a duration meaning that long ago (24h, 90m,
7d). They compare with the event's "at" (the worker's clock when the job
finished): since <= at < until.

Formats:
  table (default)  SEQ AT OUTCOME REASON STATUS ARCHIVED ORG RUN REQUEST JOB
                   ATTEMPTS ERROR (ARCHIVED: yes when a worker archived the
                   run before deleting it; ERROR cut to 60 characters)
  --json           one event a line: the event's JSON as stored, with its
                   sequence in the results stream first, as "stream_seq"
  --csv            a header line, then stream_seq,stored,at,outcome,reason,
                   status,org_id,run_id,request_id,job_seq,attempts,worker,
                   tallyfy_request_id,archived,archived_at,error

--summary prints one line per request ID instead: how many jobs ended
deleted, not_found, dead_lettered (by reason) and dry_run; RESOLVED, the
jobs that did not end with their run gone but whose run another job of the
same request removed (a dead letter replayed with 'dlq replay', say); and
COMPLETE: yes when every job ended with its run gone (deleted or not_found)
or is resolved. A job is one job_seq; of several events for one job, the
last counts. Jobs not finished yet have no event: see 'tallyfy-deleter
status' for the backlog. The other flags select the events summarised.
  table            REQUEST JOBS DELETED NOT_FOUND DEAD_LETTERED DRY_RUN
                   RESOLVED COMPLETE FIRST LAST
  --json           one object a line: request_id, jobs, deleted, not_found,
                   dead_lettered, dead_lettered_by_reason, dry_run, other,
                   resolved, complete, first_at, last_at
  --csv            request_id,jobs,deleted,not_found,dead_lettered,
                   dead_lettered_<reason> for each reason (not_archived,
                   forbidden, rejected, retries_exhausted, invalid_job,
                   org_not_allowed, max_deliveries), dead_lettered_other,
                   dry_run,other,resolved,complete,first_at,last_at
The request ID "-" in the table ("" in JSON and CSV) is the jobs that had
none.

When nothing matches, the table and --json print nothing, --csv its header,
and "no result events match" goes to standard error. Events that are not
valid result events are left out and counted on standard error.

Exit status 0 when the stream was read (whether or not anything matched),
1 when it could not be (no results stream, NATS unreachable, interrupted),
2 for a bad command line.

Was erasure request gdpr-1142 carried out?
  tallyfy-deleter results --summary --request-id gdpr-1142
`

// resultsFlags are the flags of results as given.
type resultsFlags struct {
	requestID, org, run, outcome, since, until string
	summary, json, csv                         bool
}

func cmdResults(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var fl resultsFlags
	s := settings.ToolSettings(&cfg)
	s.Str(&fl.requestID, "", "request-id", "", "only events of this request_id")
	s.Str(&fl.org, "", "org", "", "only events of this organization")
	s.Str(&fl.run, "", "run", "", "only events of this run")
	s.Str(&fl.outcome, "", "outcome", "", "only events of this outcome: deleted, not_found, dead_lettered or dry_run")
	s.Str(&fl.since, "", "since", "", "only events at or after this time: RFC 3339, a date, or a duration ago (24h, 7d)")
	s.Str(&fl.until, "", "until", "", "only events before this time: RFC 3339, a date, or a duration ago (24h, 7d)")
	s.Bool(&fl.summary, "", "summary", "false", "one line per request ID: jobs by outcome, and whether it is complete")
	s.Bool(&fl.json, "", "json", "false", "print JSON, one object a line")
	s.Bool(&fl.csv, "", "csv", "false", "print CSV with a header line")
	rest, code, ok := s.Command("results", args, getenv, stdout, stderr, resultsHelp)
	if !ok {
		return code
	}
	q, err := fl.query(time.Now())
	if err == nil && fl.json && fl.csv {
		err = errors.New("--json and --csv: choose one")
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("takes no arguments, got %q", rest)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter results: %v\n%s\n", err, settings.Hint("results"))
		return 2
	}

	errw := cli.NewSyncWriter(stderr)
	js, disconnect, err := cli.ToolConnect(&cfg.NATS, "results", errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter results: %v\n", err)
		return 1
	}
	defer disconnect()
	ctx, stop := cli.OnSignal(func(os.Signal) {
		fmt.Fprintln(errw, "interrupted: stopping the scan")
	}, nil)
	defer stop()

	out := newResultsOutput(fl, stdout)
	opts := ops.ScanOptions{OnEvent: out.add}
	// A progress bar only where it cannot garble the output: standard
	// error on a terminal, and the output not streamed to one.
	var prog *cli.Progress
	if cli.IsTerminal(errw) && (out.buffered() || !cli.IsTerminal(stdout)) {
		done := 0
		opts.OnProgress = func(read, total int) {
			if prog == nil {
				prog = cli.NewProgress(errw, "results: scanning", total)
			}
			prog.Add(read - done)
			done = read
		}
	}
	scan, err := ops.ScanResults(ctx, js, cfg.Names, q, opts)
	if prog != nil {
		prog.Done()
	}
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(errw, "tallyfy-deleter results: interrupted: the scan did not finish, the output is incomplete")
		return 1
	case err != nil:
		fmt.Fprintf(errw, "tallyfy-deleter results: %v\n", err)
		return 1
	}
	if err := out.finish(); err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter results: writing: %v\n", err)
		return 1
	}
	reportScan(errw, fl, q, scan)
	return 0
}

// query is the selection the flags make; now is when "24h" is counted
// back from.
func (fl resultsFlags) query(now time.Time) (ops.ResultsQuery, error) {
	q := ops.ResultsQuery{RequestID: fl.requestID, Org: fl.org, Run: fl.run, Outcome: fl.outcome}
	var errs []error
	if fl.org != "" && !tallyfy.ValidID(fl.org) {
		errs = append(errs, fmt.Errorf("--org %q is not 1 to 64 letters, digits, '-' or '_'", fl.org))
	}
	if fl.run != "" && !tallyfy.ValidID(fl.run) {
		errs = append(errs, fmt.Errorf("--run %q is not 1 to 64 letters, digits, '-' or '_'", fl.run))
	}
	if fl.outcome != "" && !slices.Contains(worker.Outcomes, worker.Outcome(fl.outcome)) {
		errs = append(errs, fmt.Errorf("--outcome %q is not deleted, not_found, dead_lettered or dry_run", fl.outcome))
	}
	var err error
	if q.Since, err = parseWhen(fl.since, now); err != nil {
		errs = append(errs, fmt.Errorf("--since: %w", err))
	}
	if q.Until, err = parseWhen(fl.until, now); err != nil {
		errs = append(errs, fmt.Errorf("--until: %w", err))
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Since.Before(q.Until) {
		errs = append(errs, fmt.Errorf("--since %s is not before --until %s", q.Since.Format(time.RFC3339), q.Until.Format(time.RFC3339)))
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return q, errors.New(strings.Join(msgs, "; "))
	}
	return q, nil
}

// parseWhen reads a time as --since and --until take it: RFC 3339, a date
// (midnight UTC), or a duration ago (Go's, or a whole number of days such
// as 7d). "" is no time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		var n int
		if n, err = strconv.Atoi(days); err == nil && n <= 100*366 {
			d = time.Duration(n) * 24 * time.Hour
		} else if err == nil {
			err = errors.New("too many days")
		}
	}
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (2026-11-27T02:00:00Z), a date (2026-11-27) or a duration ago (24h, 7d)", s)
	}
	return now.Add(-d), nil
}

// reportScan says on standard error what the output cannot: nothing
// matched, events that could not be read, what a summary covers.
func reportScan(errw io.Writer, fl resultsFlags, q ops.ResultsQuery, scan *ops.ResultsScan) {
	if scan.Invalid > 0 {
		seqs := make([]string, len(scan.InvalidSeqs))
		for i, s := range scan.InvalidSeqs {
			seqs[i] = strconv.FormatUint(s, 10)
		}
		more := ""
		if scan.Invalid > len(seqs) {
			more = ", ..."
		}
		fmt.Fprintf(errw, "tallyfy-deleter results: %d events are not valid result events and were left out (stream sequences %s%s; 'nats stream get %s <seq>' shows one)\n",
			scan.Invalid, strings.Join(seqs, ", "), more, scan.Stream)
	}
	if scan.Matched == 0 {
		kept := ""
		switch {
		case scan.Oldest.IsZero():
			kept = fmt.Sprintf(" (the results stream %s holds no events)", scan.Stream)
		case scan.MaxAge > 0:
			kept = fmt.Sprintf(" (the results stream keeps events for %s; the oldest it holds is from %s)", scan.MaxAge, scan.Oldest.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(errw, "no result events match%s\n", kept)
		return
	}
	if fl.summary && q.Outcome != "" {
		fmt.Fprintf(errw, "note: --outcome %s summarised only the jobs that ended %s; leave it out to know whether a request is complete\n", q.Outcome, q.Outcome)
	}
	if fl.summary && (!q.Since.IsZero() || !q.Until.IsZero()) {
		fmt.Fprintln(errw, "note: the summary counts only the jobs whose events fall within --since/--until")
	}
}

// resultsOutput is one of the five outputs: events as a table, JSON or
// CSV, or the summary. JSON and CSV events are written as they come; a
// table and a summary once the scan is done.
type resultsOutput struct {
	fl      resultsFlags
	w       *bufio.Writer
	csv     *csv.Writer
	events  []*ops.ResultEvent // for the table
	summary *ops.Summary
	err     error // the first write error
}

func newResultsOutput(fl resultsFlags, stdout io.Writer) *resultsOutput {
	o := &resultsOutput{fl: fl, w: bufio.NewWriterSize(stdout, 64<<10)}
	if fl.summary {
		o.summary = ops.NewSummary()
	}
	if fl.csv {
		o.csv = csv.NewWriter(o.w)
		if !fl.summary {
			o.err = o.csv.Write(eventCSVHeader)
		}
	}
	return o
}

// buffered says whether nothing is written before the scan ends.
func (o *resultsOutput) buffered() bool { return o.summary != nil || (!o.fl.json && !o.fl.csv) }

// add takes one event; a write error ends the scan.
func (o *resultsOutput) add(ev *ops.ResultEvent) error {
	switch {
	case o.err != nil:
		return o.err
	case o.summary != nil:
		o.summary.Add(ev)
	case o.fl.json:
		// The event as stored, with its sequence spliced in first.
		o.w.WriteString(`{"stream_seq":`)
		o.w.WriteString(strconv.FormatUint(ev.Seq, 10))
		if raw := ev.Raw[1:]; len(bytes.TrimSpace(raw)) > 1 {
			o.w.WriteByte(',')
			o.w.Write(raw)
		} else {
			o.w.WriteByte('}')
		}
		_, o.err = o.w.WriteString("\n")
	case o.fl.csv:
		o.err = o.csv.Write(eventCSVRow(ev))
	default:
		o.events = append(o.events, ev)
	}
	return o.err
}

// finish writes what was kept for the end, and flushes.
func (o *resultsOutput) finish() error {
	if o.err != nil {
		return o.err
	}
	switch {
	case o.summary != nil:
		reqs := o.summary.Requests()
		switch {
		case o.fl.json:
			enc := json.NewEncoder(o.w)
			enc.SetEscapeHTML(false)
			for _, r := range reqs {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
		case o.fl.csv:
			if err := o.csv.Write(summaryCSVHeader()); err != nil {
				return err
			}
			for _, r := range reqs {
				if err := o.csv.Write(summaryCSVRow(r)); err != nil {
					return err
				}
			}
		case len(reqs) > 0:
			printSummaryTable(o.w, reqs)
		}
	case !o.fl.json && !o.fl.csv && len(o.events) > 0:
		printEventsTable(o.w, o.events)
	}
	if o.csv != nil {
		o.csv.Flush()
		if err := o.csv.Error(); err != nil {
			return err
		}
	}
	return o.w.Flush()
}

var eventCSVHeader = []string{"stream_seq", "stored", "at", "outcome", "reason", "status", "org_id", "run_id", "request_id",
	"job_seq", "attempts", "worker", "tallyfy_request_id", "archived", "archived_at", "error"}

func eventCSVRow(ev *ops.ResultEvent) []string {
	status := ""
	if ev.Status != 0 {
		status = strconv.Itoa(ev.Status)
	}
	return []string{
		strconv.FormatUint(ev.Seq, 10), ev.Stored.UTC().Format(time.RFC3339Nano), ev.At.UTC().Format(time.RFC3339Nano),
		string(ev.Outcome), string(ev.Reason), status, ev.OrgID, ev.RunID, ev.RequestID,
		strconv.FormatUint(ev.JobSeq, 10), strconv.Itoa(ev.Attempts), ev.Worker, ev.TallyfyRequestID,
		strconv.FormatBool(ev.Archived), ev.ArchivedAt, ev.Error,
	}
}

func printEventsTable(w io.Writer, events []*ops.ResultEvent) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAT\tOUTCOME\tREASON\tSTATUS\tARCHIVED\tORG\tRUN\tREQUEST\tJOB\tATTEMPTS\tERROR")
	for _, ev := range events {
		status, archived := "-", "-"
		if ev.Status != 0 {
			status = strconv.Itoa(ev.Status)
		}
		if ev.Archived {
			archived = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", ev.Seq, ev.At.UTC().Format(time.RFC3339),
			cli.Cell(string(ev.Outcome)), cli.Cell(string(ev.Reason)), status, archived, cli.Cell(ev.OrgID), cli.Cell(ev.RunID),
			cli.Cell(ev.RequestID), ev.JobSeq, ev.Attempts, truncate(cli.Cell(ev.Error), maxErrorCell))
	}
	tw.Flush()
}

// summaryCSVHeader has a dead_lettered_<reason> column for every reason
// the worker knows, and one for any other.
func summaryCSVHeader() []string {
	h := []string{"request_id", "jobs", "deleted", "not_found", "dead_lettered"}
	for _, r := range worker.Reasons {
		h = append(h, "dead_lettered_"+string(r))
	}
	return append(h, "dead_lettered_other", "dry_run", "other", "resolved", "complete", "first_at", "last_at")
}

func summaryCSVRow(r ops.RequestSummary) []string {
	row := []string{r.RequestID, strconv.Itoa(r.Jobs), strconv.Itoa(r.Deleted), strconv.Itoa(r.NotFound), strconv.Itoa(r.DeadLettered)}
	known := 0
	for _, reason := range worker.Reasons {
		n := r.ByReason[string(reason)]
		known += n
		row = append(row, strconv.Itoa(n))
	}
	return append(row, strconv.Itoa(r.DeadLettered-known), strconv.Itoa(r.DryRun), strconv.Itoa(r.Other), strconv.Itoa(r.Resolved),
		strconv.FormatBool(r.Complete), r.First.UTC().Format(time.RFC3339Nano), r.Last.UTC().Format(time.RFC3339Nano))
}

func printSummaryTable(w io.Writer, reqs []ops.RequestSummary) {
	other := slices.ContainsFunc(reqs, func(r ops.RequestSummary) bool { return r.Other > 0 })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "REQUEST\tJOBS\tDELETED\tNOT_FOUND\tDEAD_LETTERED\tDRY_RUN\t")
	if other {
		fmt.Fprint(tw, "OTHER\t")
	}
	fmt.Fprintln(tw, "RESOLVED\tCOMPLETE\tFIRST\tLAST")
	for _, r := range reqs {
		complete := "no"
		if r.Complete {
			complete = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t", cli.Cell(r.RequestID), r.Jobs, r.Deleted, r.NotFound, deadLetteredCell(r), r.DryRun)
		if other {
			fmt.Fprintf(tw, "%d\t", r.Other)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.Resolved, complete, r.First.UTC().Format(time.RFC3339), r.Last.UTC().Format(time.RFC3339))
	}
	tw.Flush()
}

// deadLetteredCell is the count with its reasons: "2 (not_archived 1,
// forbidden 1)", in the worker's order of reasons, then any others.
func deadLetteredCell(r ops.RequestSummary) string {
	if r.DeadLettered == 0 {
		return "0"
	}
	var keys []string
	for _, reason := range worker.Reasons {
		keys = append(keys, string(reason))
	}
	var others []string
	for k := range r.ByReason {
		if !slices.Contains(keys, k) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	var parts []string
	for _, k := range append(keys, others...) {
		if n := r.ByReason[k]; n > 0 {
			name := k
			if name == "" {
				name = "none"
			}
			parts = append(parts, cli.Cell(name)+" "+strconv.Itoa(n))
		}
	}
	return fmt.Sprintf("%d (%s)", r.DeadLettered, strings.Join(parts, ", "))
}
