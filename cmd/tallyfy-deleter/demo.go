package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/service"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil/servers"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// demoCase is one row of the outcome table, played against the fake API.
type demoCase struct {
	what   string
	body   string
	setup  func(api *servers.FakeTallyfy)
	expect string // outcome/reason
}

const (
	demoOrg      = "acme"
	demoOtherOrg = "globex" // allowed, but the service user is no admin there
	demoSweepOrg = "hooli"  // swept: runs archived over a year ago are due
)

// demoStreams are the default names, which the demo's worker uses.
var demoStreams = worker.Streams{
	JobsStream: worker.DefaultJobsStream, JobsSubject: worker.DefaultJobsSubject, Consumer: worker.DefaultConsumer,
	ResultsStream: worker.DefaultResultsStream, ResultsSubject: worker.DefaultResultsSubject,
	DLQStream: worker.DefaultDLQStream, DLQSubject: worker.DefaultDLQSubject,
}

// demoRetention is the sweep's retention period: runs archived longer ago
// than this are due.
const demoRetention = 365 * 24 * time.Hour

// demoSweepRuns are the runs of demoSweepOrg: three archived long enough ago
// to be due, one archived too recently, one still active.
func demoSweepRuns(now time.Time) []servers.RunSpec {
	day := 24 * time.Hour
	return []servers.RunSpec{
		{ID: "run-2024-onboarding", Name: "Onboarding: J. Doe", ArchivedAt: now.Add(-700 * day)},
		{ID: "run-2025-offboarding", Name: "Offboarding: R. Roe", ArchivedAt: now.Add(-400 * day)},
		{ID: "run-2025-audit", Name: "Audit 2025-Q1", ArchivedAt: now.Add(-370 * day)},
		{ID: "run-recent", Name: "Audit 2026-Q3", ArchivedAt: now.Add(-30 * day)},
		{ID: "run-ongoing", Name: "Audit 2026-Q4"},
	}
}

func demoCases() []demoCase {
	job := func(org, run string) string {
		return fmt.Sprintf(`{"org_id":%q,"run_id":%q,"request_id":"demo-%s"}`, org, run, run)
	}
	return []demoCase{
		{"archived run: 200", job(demoOrg, "run-archived"), func(a *servers.FakeTallyfy) { a.AddRun(demoOrg, "run-archived", true) }, "deleted"},
		{"archived run: 204 (older API)", job(demoOrg, "run-204"), func(a *servers.FakeTallyfy) {
			a.Script(demoOrg, "run-204", servers.Response{Status: 204})
		}, "deleted"},
		{"default org from TALLYFY_ORG_ID", `{"run_id":"run-default-org"}`, func(a *servers.FakeTallyfy) { a.AddRun(demoOrg, "run-default-org", true) }, "deleted"},
		{"unknown run: 404", job(demoOrg, "run-missing"), nil, "not_found"},
		{"run not archived: 422", job(demoOrg, "run-active"), func(a *servers.FakeTallyfy) { a.AddRun(demoOrg, "run-active", false) }, "dead_lettered/not_archived"},
		{"not archived, job says archive_first", `{"run_id":"run-erase","request_id":"demo-erasure","archive_first":true}`, func(a *servers.FakeTallyfy) {
			a.AddRun(demoOrg, "run-erase", false)
		}, "deleted (archived first)"},
		{"404, but a GET finds the run", job(demoOrg, "run-hidden"), func(a *servers.FakeTallyfy) {
			a.AddRun(demoOrg, "run-hidden", false)
			a.Script(demoOrg, "run-hidden", servers.Response{Status: 404, Body: `{"message":"Process not found"}`})
		}, "dead_lettered/not_archived"},
		{"no admin rights: 403", job(demoOtherOrg, "run-locked"), func(a *servers.FakeTallyfy) {
			a.AddRun(demoOtherOrg, "run-locked", true)
			a.SetAdmin(demoOtherOrg, false)
		}, "dead_lettered/forbidden"},
		{"other 4xx: 409", job(demoOrg, "run-conflict"), func(a *servers.FakeTallyfy) {
			a.Script(demoOrg, "run-conflict", servers.Response{Status: 409, Body: `{"message":"conflict"}`})
		}, "dead_lettered/rejected"},
		{"503, then 200", job(demoOrg, "run-flaky"), func(a *servers.FakeTallyfy) {
			a.AddRun(demoOrg, "run-flaky", true)
			a.Script(demoOrg, "run-flaky", servers.Response{Status: 503})
		}, "deleted"},
		{"500 on every delivery", job(demoOrg, "run-broken"), func(a *servers.FakeTallyfy) {
			a.Script(demoOrg, "run-broken", servers.Response{Status: 500}, servers.Response{Status: 500}, servers.Response{Status: 500})
		}, "dead_lettered/retries_exhausted"},
		{"429 Retry-After: 1, then 200", job(demoOrg, "run-throttled"), func(a *servers.FakeTallyfy) {
			a.AddRun(demoOrg, "run-throttled", true)
			a.Script(demoOrg, "run-throttled", servers.Response{Status: 429, RetryAfter: "1"})
		}, "deleted"},
		{"401 once, then 200", job(demoOrg, "run-auth"), func(a *servers.FakeTallyfy) {
			a.AddRun(demoOrg, "run-auth", true)
			a.Script(demoOrg, "run-auth", servers.Response{Status: 401})
		}, "deleted"},
		{"not JSON", `delete run-x please`, nil, "dead_lettered/invalid_job"},
		{"run_id with a path", job(demoOrg, "../runs/other"), nil, "dead_lettered/invalid_job"},
		{"org not allowed", job("initech", "run-foreign"), func(a *servers.FakeTallyfy) { a.AddRun("initech", "run-foreign", true) }, "dead_lettered/org_not_allowed"},
	}
}

const demoHelp = `
Runs the whole pipeline on an embedded NATS server and a fake Tallyfy: one
job per row of the README's outcome table, through the real worker, each
job's outcome printed with where it went. Needs no network.
`

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	var verbose bool
	s := &settings.Set{}
	s.Bool(&verbose, "", "verbose", "false", "show the worker's log lines")
	rest, code, ok := s.Command("demo", args, func(string) string { return "" }, stdout, stderr, demoHelp)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "tallyfy-deleter demo: takes no arguments, got %q\n%s\n", rest, settings.Hint("demo"))
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := demo(ctx, stdout, stderr, verbose); err != nil {
		fmt.Fprintf(stderr, "demo failed: %v\n", err)
		return 1
	}
	return 0
}

func demo(ctx context.Context, stdout, stderr io.Writer, verbose bool) error {
	dir, err := os.MkdirTemp("", "tallyfy-deleter-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := servers.StartNATS(servers.NATSOptions{StoreDir: dir})
	if err != nil {
		return fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	defer srv.Shutdown()
	api := servers.StartFakeTallyfy()
	defer api.Close()

	cases := demoCases()
	for _, c := range cases {
		if c.setup != nil {
			c.setup(api)
		}
	}
	now := time.Now()
	for _, r := range demoSweepRuns(now) {
		api.AddRunWith(demoSweepOrg, r)
	}

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	w, err := demoWorker(js, api, stderr, verbose)
	if err != nil {
		return err
	}
	runCtx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(runCtx) }()

	fmt.Fprintf(stdout, "tallyfy-deleter demo: embedded NATS at %s, fake Tallyfy at %s\n", srv.URL(), api.URL())
	fmt.Fprintf(stdout, "publishing %d jobs to %s ...\n\n", len(cases), worker.DefaultJobsSubject)

	// Results and dead letters are read back from their streams, as an
	// upstream service would.
	if err := waitStream(ctx, js, worker.DefaultJobsStream); err != nil {
		return err
	}
	seqs := make([]uint64, len(cases))
	for i, c := range cases {
		ack, err := js.Publish(ctx, worker.DefaultJobsSubject, []byte(c.body))
		if err != nil {
			return fmt.Errorf("publishing job %d: %w", i, err)
		}
		seqs[i] = ack.Sequence
	}
	results, err := collectResults(ctx, js, len(cases))
	if err != nil {
		return err
	}
	bad := printDemo(stdout, cases, seqs, results)
	fmt.Fprintf(stdout, "\nTallyfy received %d requests; invalid and disallowed jobs caused none.\n", api.RequestCount())

	sweepBad, err := demoSweep(ctx, stdout, js, api, now, len(cases))
	if err != nil {
		return err
	}
	stopWorker()
	if err := <-stopped; err != nil {
		return err
	}
	if bad += sweepBad; bad > 0 {
		return fmt.Errorf("%d jobs did not get the expected outcome", bad)
	}
	fmt.Fprintln(stdout, "\nevery job got exactly one outcome.")
	return nil
}

// demoSweep sweeps demoSweepOrg as `tallyfy-deleter sweep` would, waits
// for the worker to finish the jobs it published, and reads the request's
// summary back from the results stream as `tallyfy-deleter results
// --summary` would. before is how many result events there were already.
// It returns how many of the sweep's runs did not end as expected.
func demoSweep(ctx context.Context, stdout io.Writer, js jetstream.JetStream, api *servers.FakeTallyfy, now time.Time, before int) (int, error) {
	cutoff := now.Add(-demoRetention)
	fmt.Fprintf(stdout, "\nsweeping %s for runs archived before %s (a retention of %s) ...\n",
		demoSweepOrg, cutoff.Format(time.DateOnly), fmt.Sprintf("%d days", demoRetention/(24*time.Hour)))
	jobs, err := ops.OpenJobs(ctx, js, demoStreams)
	if err != nil {
		return 0, err
	}
	client, err := tallyfy.New(api.URL(), tallyfy.WithToken(api.Token()), tallyfy.WithUserAgent(service.UserAgent(version)))
	if err != nil {
		return 0, err
	}
	res, err := ops.Sweep(ctx, client, ops.SweepOptions{
		Org: demoSweepOrg, Cutoff: cutoff, RequestID: "demo-retention-" + now.UTC().Format(time.DateOnly), Jobs: jobs,
	})
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	fmt.Fprintf(stdout, "listed %d archived runs in %d page(s): %d due, %d published, %d not due (archived too recently)\n",
		res.Scanned, res.Pages, res.Due, res.Published, res.Skipped[ops.SkipTooRecent])
	if _, err := collectResults(ctx, js, before+res.Published); err != nil {
		return 0, err
	}

	sum := ops.NewSummary()
	_, err = ops.ScanResults(ctx, js, demoStreams, ops.ResultsQuery{RequestID: res.RequestID}, ops.ScanOptions{
		OnEvent: func(ev *ops.ResultEvent) error { sum.Add(ev); return nil },
	})
	if err != nil {
		return 0, fmt.Errorf("reading the results: %w", err)
	}
	bad := 0
	for _, r := range demoSweepRuns(now) {
		due := r.ArchivedAt.Before(cutoff) && !r.ArchivedAt.IsZero()
		gone := api.Deleted(demoSweepOrg, r.ID)
		state := "kept"
		if gone {
			state = "deleted"
		}
		okText := "yes"
		if gone != due {
			okText = "NO"
			bad++
		}
		fmt.Fprintf(stdout, "  %-22s %-20s %-8s as expected: %s\n", r.ID, r.Name, state, okText)
	}
	reqs := sum.Requests()
	if len(reqs) != 1 {
		bad++
	}
	for _, rs := range reqs {
		complete := "no"
		if rs.Complete {
			complete = "yes"
		}
		fmt.Fprintf(stdout, "results --summary --request-id %s: %d jobs, %d deleted, %d dead-lettered, complete: %s\n",
			rs.RequestID, rs.Jobs, rs.Deleted, rs.DeadLettered, complete)
		if !rs.Complete || rs.Jobs != res.Due {
			bad++
		}
	}
	return bad, nil
}

func waitStream(ctx context.Context, js jetstream.JetStream, name string) error {
	for {
		if _, err := js.Stream(ctx, name); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s never appeared: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// collectResults reads n result events from the results stream, keyed by
// the job's stream sequence.
func collectResults(ctx context.Context, js jetstream.JetStream, n int) (map[uint64]worker.Result, error) {
	cons, err := js.OrderedConsumer(ctx, worker.DefaultResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := map[uint64]worker.Result{}
	for len(out) < n {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return out, fmt.Errorf("waiting for results (%d of %d): %w", len(out), n, err)
		}
		var r worker.Result
		if err := json.Unmarshal(msg.Data(), &r); err != nil {
			return out, fmt.Errorf("result %q: %w", strings.TrimSpace(string(msg.Data())), err)
		}
		if _, dup := out[r.JobSeq]; dup {
			return out, fmt.Errorf("job %d has two result events", r.JobSeq)
		}
		out[r.JobSeq] = r
	}
	return out, nil
}

// demoWorker is the real worker, on the demo's servers, logging to stderr
// only when verbose.
func demoWorker(js jetstream.JetStream, api *servers.FakeTallyfy, stderr io.Writer, verbose bool) (*worker.Worker, error) {
	level := zerolog.Disabled
	if verbose {
		level = zerolog.InfoLevel
	}
	log := cli.NewLogger(stderr, "info", "console", "demo").Level(level)
	client, err := tallyfy.New(api.URL(), tallyfy.WithToken(api.Token()), tallyfy.WithUserAgent(service.UserAgent(version)), tallyfy.WithTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	cfg := worker.Config{
		DefaultOrg:     demoOrg,
		AllowedOrgs:    []string{demoOrg, demoOtherOrg, demoSweepOrg},
		MaxDeliver:     3,
		Backoff:        []time.Duration{200 * time.Millisecond},
		AckWait:        5 * time.Second,
		APITimeout:     3 * time.Second,
		BreakerTimeout: time.Second,
		WorkerID:       "demo-worker",
		Logger:         &log,
		VerifyNotFound: true,
		ArchiveFirst:   worker.ArchiveJob,
	}
	return worker.New(js, client, cfg)
}

// printDemo prints one row per case and returns how many did not get the
// outcome expected.
func printDemo(stdout io.Writer, cases []demoCase, seqs []uint64, results map[uint64]worker.Result) int {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tOUTCOME\tREASON\tSTATUS\tATTEMPTS\tWENT TO\tAS EXPECTED")
	bad := 0
	for i, c := range cases {
		r, ok := results[seqs[i]]
		if !ok {
			fmt.Fprintf(tw, "%s\t(none)\t\t\t\t\tNO\n", c.what)
			bad++
			continue
		}
		got := string(r.Outcome)
		where := worker.DefaultResultsSubject + "." + got
		if r.Reason != "" {
			got += "/" + string(r.Reason)
			where = worker.DefaultDLQSubject + "." + string(r.Reason) + " + " + where
		}
		if r.Archived {
			got += " (archived first)"
		}
		okText := "yes"
		if got != c.expect {
			okText = "NO, expected " + c.expect
			bad++
		}
		status := ""
		if r.Status != 0 {
			status = fmt.Sprint(r.Status)
		}
		outcome := string(r.Outcome)
		if r.Archived {
			outcome += ", archived first"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.what, outcome, r.Reason, status, r.Attempts, where, okText)
	}
	tw.Flush()
	return bad
}
