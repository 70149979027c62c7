package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/service"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

const sweepHelp = `
A retention policy as one command, for cron: lists the archived runs of each
--org (default TALLYFY_ORG_ID) through Tallyfy's API, and enqueues a deletion
job for each run that is due, as enqueue would (the same checks, the same
Nats-Msg-Id, so a sweep run again within the jobs stream's duplicate window
publishes nothing twice).

Exactly one of --archived-before and --archived-for is required: there is
no default cutoff. A run is due only if its own record, as the API lists it,
says it was archived (archived_at set) before the cutoff, and shows the
--checklist and --tag asked for, whatever the list's filters returned. Every
page is listed before anything is published.

Exit status 0 when every page was read and every due run published; 1 when
a page failed after its retries, a publish failed, or the sweep was
interrupted (what was published stays published); 2 for a bad command line
or settings.
`

// sweepFlags are the flags of sweep alone, as given.
type sweepFlags struct {
	orgs                      []string
	before, archivedFor       string
	checklist, tag, requestID string
	filter                    string
	limit                     int
	dryRun, jsonOut           bool
}

// maxNameCell is how many bytes of a run's name the dry run's table shows.
const maxNameCell = 80

// maxAge bounds --archived-for: a century of days still fits a Duration.
const maxAge = 100 * 365 * 24 * time.Hour

func cmdSweep(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg settings.Sweep
	var fl sweepFlags
	s := settings.SweepSettings(&cfg)
	s.Repeat(&fl.orgs, "org", "organization to sweep, repeatable (default: TALLYFY_ORG_ID); each must be allowed by TALLYFY_ALLOWED_ORGS")
	s.Str(&fl.before, "", "archived-before", "", "RFC 3339 time: runs archived before it are due")
	s.Str(&fl.archivedFor, "", "archived-for", "", "runs archived longer ago than this are due: 90d, 720h, 30m")
	s.Str(&fl.checklist, "", "checklist", "", "only runs launched from this checklist (template) ID")
	s.Str(&fl.tag, "", "tag", "", "only runs with this tag ID")
	s.NumIn(&fl.limit, "", "limit", "0", "stop after this many due runs; 0 for no limit", 0, math.MaxInt32)
	s.Str(&fl.requestID, "", "request-id", "", "request_id of the jobs (default: sweep-<org>-<YYYY-MM-DD>, UTC)")
	s.Str(&fl.filter, "", "archived-filter", tallyfy.ArchivedOnly.String(), "how archived runs are asked for: archived=only or status=archived (each run is checked anyway)")
	s.Bool(&fl.dryRun, "", "dry-run", "false", "show the runs that would be enqueued; publish nothing (no NATS needed)")
	s.Bool(&fl.jsonOut, "", "json", "false", "print one JSON document instead of tables and summaries")
	rest, code, ok := s.Command("sweep", args, getenv, stdout, stderr, sweepHelp)
	if !ok {
		return code
	}
	now := time.Now()
	plan, errs := planSweep(&cfg, fl, rest, now)
	if len(errs) > 0 {
		for _, err := range errs {
			fmt.Fprintf(stderr, "tallyfy-deleter sweep: %v\n", err)
		}
		return 2
	}

	errw := cli.NewSyncWriter(stderr)
	api, err := tallyfy.New(cfg.APIURL, tallyfy.WithTimeout(cfg.APITimeout), tallyfy.WithUserAgent(service.UserAgent(version)), cfg.Credentials())
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter sweep: %v\n", err)
		return 2
	}
	ctx, stop := cli.Interruptible(errw)
	defer stop()
	var jobs *ops.Jobs
	if !fl.dryRun {
		var disconnect func()
		if jobs, disconnect, ok = openSweepJobs(ctx, &cfg, errw); !ok {
			return 1
		}
		defer disconnect()
	}

	out := sweepOutput{DryRun: fl.dryRun, Cutoff: plan.cutoff, Orgs: []sweepOrgOutput{}}
	failed := false
	limiter := ops.SweepLimiter(cfg.RateLimit, cfg.RateBurst)
	left := fl.limit
	for _, org := range plan.orgs {
		if fl.limit > 0 && left == 0 {
			fmt.Fprintf(errw, "tallyfy-deleter sweep: %s not swept: --limit %d reached\n", org, fl.limit)
			continue
		}
		opts := plan.options(org)
		opts.Jobs, opts.Limiter, opts.Limit = jobs, limiter, left
		res, err := sweepOrg(ctx, api, opts, errw)
		if fl.limit > 0 {
			left -= res.Due
		}
		o := sweepOrgOutput{SweepResult: res}
		if err != nil {
			o.Error = err.Error()
			failed = true
			fmt.Fprintf(errw, "tallyfy-deleter sweep: %s\n", stoppedSweep(ctx, res, err, fl.dryRun))
		}
		if res.Failed > 0 {
			failed = true
		}
		out.Orgs = append(out.Orgs, o)
		if ctx.Err() != nil {
			break
		}
	}
	if fl.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(errw, "tallyfy-deleter sweep: %v\n", err)
			return 1
		}
	} else {
		printSweep(stdout, out)
	}
	printSweepNotes(errw, out, jobs)
	if failed {
		return 1
	}
	return 0
}

// sweepPlan is what the command line asks for, checked.
type sweepPlan struct {
	orgs      []string
	cutoff    time.Time
	filter    tallyfy.ArchivedFilter
	checklist string
	tag       string
	requestID string
	now       time.Time
}

func (p sweepPlan) options(org string) ops.SweepOptions {
	id := p.requestID
	if id == "" {
		id = ops.DefaultSweepRequestID(org, p.now)
	}
	return ops.SweepOptions{Org: org, Cutoff: p.cutoff, Archived: p.filter, ChecklistID: p.checklist, TagID: p.tag, RequestID: id}
}

// planSweep checks the command line and the settings; every error names
// the flag or setting.
func planSweep(cfg *settings.Sweep, fl sweepFlags, rest []string, now time.Time) (sweepPlan, []error) {
	p := sweepPlan{checklist: fl.checklist, tag: fl.tag, requestID: fl.requestID, now: now}
	var errs []error
	if len(rest) > 0 {
		errs = append(errs, fmt.Errorf("takes no arguments, got %q", rest))
	}
	switch {
	case fl.before == "" && fl.archivedFor == "":
		errs = append(errs, errors.New("give --archived-before TIME or --archived-for DURATION: there is no default cutoff"))
	case fl.before != "" && fl.archivedFor != "":
		errs = append(errs, errors.New("give --archived-before or --archived-for, not both"))
	case fl.before != "":
		t, err := time.Parse(time.RFC3339Nano, fl.before)
		if err != nil {
			errs = append(errs, fmt.Errorf("--archived-before %q is not an RFC 3339 time such as 2026-01-31T00:00:00Z", fl.before))
		}
		p.cutoff = t
	default:
		d, err := parseAge(fl.archivedFor)
		if err != nil {
			errs = append(errs, err)
		}
		p.cutoff = now.Add(-d)
	}
	if !p.cutoff.IsZero() && p.cutoff.After(now) {
		// No run is archived in the future: such a cutoff is a typo that
		// would make every archived run due.
		errs = append(errs, fmt.Errorf("the cutoff %s is in the future", p.cutoff.UTC().Format(time.RFC3339)))
	}
	f, err := tallyfy.ParseArchivedFilter(fl.filter)
	if err != nil {
		errs = append(errs, fmt.Errorf("--archived-filter %q is neither archived=only nor status=archived", fl.filter))
	}
	p.filter = f
	if err := cfg.Check(); err != nil {
		errs = append(errs, err)
	}
	orgs := fl.orgs
	if len(orgs) == 0 && cfg.DefaultOrg != "" {
		orgs = []string{cfg.DefaultOrg}
	}
	if len(orgs) == 0 {
		errs = append(errs, errors.New("no organization: give --org or set TALLYFY_ORG_ID"))
	}
	for _, org := range orgs {
		switch {
		case slices.Contains(p.orgs, org):
		case !tallyfy.ValidID(org):
			errs = append(errs, fmt.Errorf("--org %q is not 1 to 64 letters, digits, '-' or '_'", org))
		case !cfg.Allowed(org):
			errs = append(errs, fmt.Errorf("--org %s is not allowed by TALLYFY_ALLOWED_ORGS (default: TALLYFY_ORG_ID only)", org))
		default:
			p.orgs = append(p.orgs, org)
		}
	}
	if fl.checklist != "" && !tallyfy.ValidID(fl.checklist) {
		errs = append(errs, fmt.Errorf("--checklist %q is not 1 to 64 letters, digits, '-' or '_'", fl.checklist))
	}
	if fl.tag != "" && !tallyfy.ValidID(fl.tag) {
		errs = append(errs, fmt.Errorf("--tag %q is not 1 to 64 letters, digits, '-' or '_'", fl.tag))
	}
	if err := ops.CheckRequestID(fl.requestID); err != nil {
		errs = append(errs, fmt.Errorf("--request-id: %w", err))
	}
	return p, errs
}

// parseAge reads a Go duration, or whole days as 90d.
func parseAge(s string) (time.Duration, error) {
	bad := fmt.Errorf("--archived-for %q is not a positive duration such as 90d, 720h or 30m", s)
	var d time.Duration
	if days, ok := strings.CutSuffix(strings.TrimSpace(s), "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > int(maxAge/(24*time.Hour)) {
			return 0, bad
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(strings.TrimSpace(s)); err != nil {
			return 0, bad
		}
	}
	if d <= 0 || d > maxAge {
		return 0, bad
	}
	return d, nil
}

// openSweepJobs connects and looks up the jobs stream. On failure it has
// reported why.
func openSweepJobs(ctx context.Context, cfg *settings.Sweep, errw io.Writer) (*ops.Jobs, func(), bool) {
	js, disconnect, err := cli.ToolConnect(&cfg.NATS, "sweep", errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter sweep: %v\n", err)
		return nil, nil, false
	}
	jobs, err := ops.OpenJobs(ctx, js, cfg.Names)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter sweep: %v\n", err)
		disconnect()
		return nil, nil, false
	}
	return jobs, disconnect, true
}

// sweepOrg sweeps one organization with a progress line per page on
// standard error, and the runs that need a word about them.
func sweepOrg(ctx context.Context, api ops.RunLister, opts ops.SweepOptions, errw io.Writer) (ops.SweepResult, error) {
	var prog *cli.Progress
	logf := func(format string, a ...any) {
		if prog != nil {
			prog.Logf(format, a...)
		} else {
			fmt.Fprintf(errw, format+"\n", a...)
		}
	}
	label := "sweep " + opts.Org
	scanned := 0
	opts.OnPage = func(p ops.PageReport) {
		if prog == nil {
			prog = cli.NewProgress(errw, label, max(p.Total, 0))
		}
		prog.Add(p.Scanned - scanned)
		scanned = p.Scanned
		if p.Last {
			prog.Done()
		}
	}
	opts.OnSkip = func(r ops.SkipReport) {
		switch r.Reason {
		case ops.SkipInvalidID, ops.SkipBadArchivedAt, ops.SkipMalformed:
			logf("%s: run %s skipped, %s: %s", label, cli.Cell(r.RunID), r.Reason.Text(), r.Detail)
		}
	}
	opts.OnRetry = func(r ops.RetryReport) {
		logf("%s: page %d: %v; asking again in %s", label, r.Page, r.Err, r.Wait.Round(10*time.Millisecond))
	}
	opts.OnPublish = func(r ops.SweptRun) {
		if r.Status == ops.RunFailed {
			logf("%s: run %s not published: %v", label, r.RunID, r.Err)
		}
	}
	res, err := ops.Sweep(ctx, api, opts)
	if prog != nil {
		prog.Done()
	}
	return res, err
}

// stoppedSweep says how far a sweep that stopped got.
func stoppedSweep(ctx context.Context, res ops.SweepResult, err error, dryRun bool) string {
	var pe *ops.PageError
	var ps *ops.PublishStoppedError
	interrupted := ctx.Err() != nil && errors.Is(err, ctx.Err())
	switch {
	case errors.As(err, &pe) && interrupted:
		return fmt.Sprintf("%s: interrupted while reading page %d (%d pages read): nothing was published", res.Org, pe.Page, res.Pages)
	case errors.As(err, &pe):
		found := fmt.Sprintf("their %d due runs were enqueued (%d published, %d duplicates, %d failed)", res.Due, res.Published, res.Duplicates, res.Failed)
		if dryRun {
			found = fmt.Sprintf("their %d due runs are listed (dry run: nothing published)", res.Due)
		}
		return fmt.Sprintf("%s: stopped at %v; %d pages were read before it and %s; page %d and later were not looked at",
			res.Org, err, res.Pages, found, pe.Page)
	case errors.As(err, &ps) && interrupted:
		return fmt.Sprintf("%s: interrupted: %d of %d due runs were offered for publishing, %d not published", res.Org, ps.At, ps.Of, res.NotPublished)
	case errors.As(err, &ps):
		return fmt.Sprintf("%s: %v; %d not published", res.Org, err, res.NotPublished)
	}
	return fmt.Sprintf("%s: %v", res.Org, err)
}

// sweepOutput is what --json prints.
type sweepOutput struct {
	DryRun bool             `json:"dry_run"`
	Cutoff time.Time        `json:"cutoff"`
	Orgs   []sweepOrgOutput `json:"orgs"`
}

type sweepOrgOutput struct {
	ops.SweepResult
	// Error is why the sweep of the org stopped early.
	Error string `json:"error,omitempty"`
}

// printSweep prints, for a dry run, the table of the runs that would be
// enqueued, then a summary line per organization.
func printSweep(w io.Writer, out sweepOutput) {
	if out.DryRun {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ORG\tRUN\tNAME\tARCHIVED AT")
		for _, o := range out.Orgs {
			for _, r := range o.Runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.OrgID, r.RunID, cli.Cell(tallyfy.OneLine(r.Name, maxNameCell)), r.ArchivedAt.Format(time.RFC3339))
			}
		}
		tw.Flush()
	}
	for _, o := range out.Orgs {
		mode := ""
		if out.DryRun {
			mode = " (dry run: nothing published)"
		}
		fmt.Fprintf(w, "sweep %s%s: %d scanned, %d due, %d published, %d duplicates, %d skipped%s",
			o.Org, mode, o.Scanned, o.Due, o.Published, o.Duplicates, o.SkippedTotal(), skippedWhy(o.Skipped))
		if o.Failed > 0 {
			fmt.Fprintf(w, ", %d failed", o.Failed)
		}
		if o.NotPublished > 0 {
			fmt.Fprintf(w, ", %d not published", o.NotPublished)
		}
		fmt.Fprintln(w)
	}
}

// skippedWhy is " (5 archived after the cutoff, 1 invalid ID)", or "".
func skippedWhy(skipped map[ops.SkipReason]int) string {
	var parts []string
	for _, r := range ops.SkipReasons {
		if n := skipped[r]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, r.Text()))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// printSweepNotes says what an operator may want to know about the
// numbers.
func printSweepNotes(errw io.Writer, out sweepOutput, jobs *ops.Jobs) {
	for _, o := range out.Orgs {
		if n := o.Skipped[ops.SkipNotArchived]; n > 0 {
			other := tallyfy.StatusArchived
			if o.Filter == other.String() {
				other = tallyfy.ArchivedOnly
			}
			fmt.Fprintf(errw, "tallyfy-deleter sweep: %s: the API listed %d runs that are not archived for %s; they were skipped (if no run is ever due, try --archived-filter %s)\n", o.Org, n, o.Filter, other)
		}
		if o.LimitReached {
			fmt.Fprintf(errw, "tallyfy-deleter sweep: %s: --limit reached on page %d; later runs were not looked at\n", o.Org, o.Pages)
		}
		if o.Duplicates > 0 && jobs != nil {
			fmt.Fprintf(errw, "tallyfy-deleter sweep: %s: duplicates are jobs (same org, run and request ID %s) already published within the jobs stream's duplicate window (%s); they were not published again\n", o.Org, o.RequestID, jobs.DuplicateWindow)
		}
	}
}
