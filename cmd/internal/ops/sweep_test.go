package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// sweepEnv is a fake Tallyfy, a client for it, and (for sweeps that
// publish) an embedded JetStream server with the worker's streams.
type sweepEnv struct {
	t    *testing.T
	api  *testutil.FakeTallyfy
	c    *tallyfy.Client
	js   jetstream.JetStream
	jobs *Jobs
	now  time.Time
}

func newSweepEnv(t *testing.T, withNATS bool) *sweepEnv {
	t.Helper()
	api := testutil.NewFakeTallyfy(t)
	c, err := tallyfy.New(api.URL(), tallyfy.WithToken(api.Token()), tallyfy.WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e := &sweepEnv{t: t, api: api, c: c, now: time.Now()}
	if withNATS {
		e.js = newJetStream(t)
		provision(t, e.js)
		if e.jobs, err = OpenJobs(context.Background(), e.js, names); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// fastRetry keeps retries from slowing the tests down.
var fastRetry = SweepRetry{Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, MaxRetryAfter: 50 * time.Millisecond}

// options sweeps org1 for runs archived more than 30 days ago.
func (e *sweepEnv) options() SweepOptions {
	return SweepOptions{Org: "org1", Cutoff: e.now.Add(-30 * 24 * time.Hour), RequestID: "sweep-test", Jobs: e.jobs, Retry: fastRetry}
}

// addArchived adds n runs r<from>..., archived daysAgo days ago.
func (e *sweepEnv) addArchived(from, n, daysAgo int) []string {
	var ids []string
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("r%04d", i)
		e.api.AddRunWith("org1", testutil.RunSpec{ID: id, Name: "Run " + id, ArchivedAt: e.now.Add(-time.Duration(daysAgo) * 24 * time.Hour)})
		ids = append(ids, id)
	}
	return ids
}

// listRequests are the list requests the fake received, their queries
// parsed.
func (e *sweepEnv) listRequests() []url.Values {
	var out []url.Values
	for _, r := range e.api.Requests() {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/organizations/org1/runs") {
			q, err := url.ParseQuery(r.Query)
			if err != nil {
				e.t.Fatal(err)
			}
			out = append(out, q)
		}
	}
	return out
}

// stored are the jobs in the jobs stream, by run ID, with their msg IDs.
func (e *sweepEnv) stored() map[string]jetstream.RawStreamMsg {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, worker.DefaultJobsStream)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]jetstream.RawStreamMsg{}
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			e.t.Fatalf("message %d: %v", seq, err)
		}
		job, err := worker.DecodeJob(m.Data, "")
		if err != nil {
			e.t.Fatalf("message %d is not a job: %v", seq, err)
		}
		out[job.RunID] = *m
	}
	return out
}

func dueIDs(res SweepResult) []string {
	var ids []string
	for _, r := range res.Runs {
		ids = append(ids, r.RunID)
	}
	return ids
}

// TestSweepPagesThroughQuirks: 250 due runs, a page size capped at 100
// and total_pages computed for pages of 10 (so the third page still names
// a next one): three requests, archived=only and 100 per page each, and
// every due run published once, as enqueue would publish it.
func TestSweepPagesThroughQuirks(t *testing.T) {
	e := newSweepEnv(t, true)
	due := e.addArchived(0, 250, 90)
	var pages []PageReport
	opts := e.options()
	opts.OnPage = func(p PageReport) { pages = append(pages, p) }
	res, err := Sweep(context.Background(), e.c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Scanned != 250 || res.Due != 250 || res.Published != 250 || res.Duplicates != 0 || res.SkippedTotal() != 0 || !res.Complete || res.Pages != 3 {
		t.Errorf("result %+v", summary(res))
	}
	reqs := e.listRequests()
	if len(reqs) != 3 {
		t.Fatalf("%d list requests, want 3: %v", len(reqs), reqs)
	}
	for i, q := range reqs {
		if q.Get("page") != fmt.Sprint(i+1) || q.Get("per_page") != "100" || q.Get("archived") != "only" || q.Has("status") {
			t.Errorf("request %d: %v", i+1, q)
		}
	}
	if len(pages) != 3 || !pages[2].Last || pages[0].Total != 250 || pages[1].Scanned != 200 {
		t.Errorf("page reports %+v", pages)
	}
	got := e.stored()
	if len(got) != 250 {
		t.Fatalf("%d jobs stored, want 250", len(got))
	}
	for _, id := range due {
		m, ok := got[id]
		job := worker.Job{OrgID: "org1", RunID: id, RequestID: "sweep-test"}
		want, _ := json.Marshal(job)
		if !ok || string(m.Data) != string(want) || m.Header.Get(jetstream.MsgIDHeader) != enqueueMsgID(job) {
			t.Errorf("%s stored as %s %v, want %s with Nats-Msg-Id %s", id, m.Data, m.Header, want, enqueueMsgID(job))
		}
	}
}

// summary is a result without its runs, for messages.
func summary(r SweepResult) SweepResult {
	r.Runs = nil
	return r
}

// TestSweepChecksEachRunsOwnRecord: whatever the list returned (here a
// server that ignores every filter), a run is due only if its own record
// says it is archived, before the cutoff, of the checklist and with the tag
// swept, and its ID is one a job may carry. Nothing else is published.
func TestSweepChecksEachRunsOwnRecord(t *testing.T) {
	e := newSweepEnv(t, true)
	e.api.IgnoreListFilters(true)
	cutoff := e.now.Add(-30 * 24 * time.Hour)
	tests := []struct {
		spec testutil.RunSpec
		want SkipReason // "" for due
	}{
		{testutil.RunSpec{ID: "due", ChecklistID: "c1", Tags: []string{"t0", "t1"}, ArchivedAt: cutoff.Add(-time.Hour)}, ""},
		{testutil.RunSpec{ID: "just-before", ChecklistID: "c1", Tags: []string{"t1"}, ArchivedAt: cutoff.Add(-time.Second)}, ""},
		{testutil.RunSpec{ID: "active", ChecklistID: "c1", Tags: []string{"t1"}}, SkipNotArchived},
		{testutil.RunSpec{ID: "at-cutoff", ChecklistID: "c1", Tags: []string{"t1"}, ArchivedAt: cutoff}, SkipTooRecent},
		{testutil.RunSpec{ID: "recent", ChecklistID: "c1", Tags: []string{"t1"}, ArchivedAt: e.now.Add(-time.Hour)}, SkipTooRecent},
		{testutil.RunSpec{ID: "other-checklist", ChecklistID: "c2", Tags: []string{"t1"}, ArchivedAt: cutoff.Add(-time.Hour)}, SkipOtherChecklist},
		{testutil.RunSpec{ID: "no-checklist", Tags: []string{"t1"}, ArchivedAt: cutoff.Add(-time.Hour)}, SkipOtherChecklist},
		{testutil.RunSpec{ID: "other-tag", ChecklistID: "c1", Tags: []string{"t2"}, ArchivedAt: cutoff.Add(-time.Hour)}, SkipTagNotShown},
		{testutil.RunSpec{ID: "a/b", ChecklistID: "c1", Tags: []string{"t1"}, ArchivedAt: cutoff.Add(-time.Hour)}, SkipInvalidID},
		{testutil.RunSpec{ID: strings.Repeat("x", 65), ChecklistID: "c1", Tags: []string{"t1"}, ArchivedAt: cutoff.Add(-time.Hour)}, SkipInvalidID},
	}
	for _, tc := range tests {
		e.api.AddRunWith("org1", tc.spec)
	}
	skipped := map[string]SkipReason{}
	opts := e.options()
	opts.ChecklistID, opts.TagID = "c1", "t1"
	opts.OnSkip = func(r SkipReport) {
		skipped[r.RunID] = r.Reason
		if r.Reason == SkipInvalidID && !strings.Contains(r.Detail, "run_id is not 1 to 64") {
			t.Errorf("%s skipped without the reason: %q", r.RunID, r.Detail)
		}
	}
	res, err := Sweep(context.Background(), e.c, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		id := tallyfy.OneLine(tc.spec.ID, 80)
		isDue := slices.Contains(dueIDs(res), tc.spec.ID)
		switch {
		case tc.want == "" && !isDue:
			t.Errorf("%s: skipped %q, want due", id, skipped[id])
		case tc.want != "" && skipped[id] != tc.want:
			t.Errorf("%s: skipped %q (due %v), want %q", id, skipped[id], isDue, tc.want)
		}
	}
	if res.Due != 2 || res.Published != 2 || res.Scanned != len(tests) || res.SkippedTotal() != len(tests)-2 {
		t.Errorf("result %+v", summary(res))
	}
	if got := e.stored(); len(got) != 2 || got["due"].Data == nil || got["just-before"].Data == nil {
		var ids []string
		for id := range got {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		t.Errorf("stored the jobs of %q, want due and just-before", ids)
	}
	// The filters were asked for all the same, with the tags to check them.
	if q := e.listRequests()[0]; q.Get("checklist_id") != "c1" || q.Get("tag") != "t1" || q.Get("with") != "tags" {
		t.Errorf("query %v", q)
	}
}

// TestSweepArchivedFilters: the fake honours both ways of asking for
// archived runs; whichever is sent, the same runs are due.
func TestSweepArchivedFilters(t *testing.T) {
	for _, f := range []tallyfy.ArchivedFilter{tallyfy.ArchivedOnly, tallyfy.StatusArchived} {
		t.Run(f.String(), func(t *testing.T) {
			e := newSweepEnv(t, false)
			e.addArchived(0, 5, 90)
			e.api.AddRun("org1", "active1", false)
			opts := e.options()
			opts.Archived = f
			res, err := Sweep(context.Background(), e.c, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Due != 5 || res.Scanned != 5 || res.Filter != f.String() {
				t.Errorf("result %+v", summary(res))
			}
			key, value, _ := strings.Cut(f.String(), "=")
			if q := e.listRequests()[0]; q.Get(key) != value {
				t.Errorf("query %v, want %s", q, f)
			}
		})
	}
}

// TestSweepRerunPublishesNothingTwice: a sweep run again (the cron job
// retried), and enqueue of the same job, are duplicates: the jobs stream
// holds each job once.
func TestSweepRerunPublishesNothingTwice(t *testing.T) {
	e := newSweepEnv(t, true)
	e.addArchived(0, 120, 90)
	ctx := context.Background()
	first, err := Sweep(ctx, e.c, e.options())
	if err != nil || first.Published != 120 {
		t.Fatalf("first sweep: %+v, %v", summary(first), err)
	}
	again, err := Sweep(ctx, e.c, e.options())
	if err != nil || again.Published != 0 || again.Duplicates != 120 {
		t.Errorf("second sweep: %+v, %v", summary(again), err)
	}
	for _, r := range again.Runs {
		if r.Status != RunDuplicate {
			t.Errorf("%s: %s", r.RunID, r.Status)
		}
	}
	res, err := Enqueue(ctx, Args([]string{"org1,r0007,sweep-test"}), EnqueueOptions{Jobs: e.jobs})
	if err != nil || res.Duplicates != 1 {
		t.Errorf("enqueue of a swept job: %+v, %v; want a duplicate", res, err)
	}
	if n := msgs(t, e.js, worker.DefaultJobsStream); n != 120 {
		t.Errorf("jobs stream holds %d, want 120", n)
	}
}

// TestSweepPageFailsAfterRetries: a page that keeps failing stops the
// sweep with a *PageError naming it, after the retries; what the pages
// before it found is published, and later pages are never asked for.
func TestSweepPageFailsAfterRetries(t *testing.T) {
	e := newSweepEnv(t, true)
	e.addArchived(0, 250, 90)
	e.api.ScriptList("org1", 2, slices.Repeat([]Response{{Status: 503, Body: `{"message":"down"}`}}, 10)...)
	var retries []RetryReport
	opts := e.options()
	opts.OnRetry = func(r RetryReport) { retries = append(retries, r) }
	res, err := Sweep(context.Background(), e.c, opts)
	var pe *PageError
	var apiErr *tallyfy.APIError
	if !errors.As(err, &pe) || pe.Page != 2 || !errors.As(err, &apiErr) || apiErr.StatusCode != 503 {
		t.Fatalf("error %v, want a *PageError for page 2 with the 503", err)
	}
	if res.Complete || res.Pages != 1 || res.Due != 100 || res.Published != 100 {
		t.Errorf("result %+v", summary(res))
	}
	if n := msgs(t, e.js, worker.DefaultJobsStream); n != 100 {
		t.Errorf("jobs stream holds %d, want page 1's 100", n)
	}
	var pageTwo, pageThree int
	for _, q := range e.listRequests() {
		switch q.Get("page") {
		case "2":
			pageTwo++
		case "3":
			pageThree++
		}
	}
	if pageTwo != 4 || pageThree != 0 || len(retries) != 3 {
		t.Errorf("page 2 asked %d times (want 4), page 3 %d times, %d retries reported", pageTwo, pageThree, len(retries))
	}
}

// Response is the fake's scripted answer.
type Response = testutil.Response

// TestSweepRetriesTransientFailures: a 500, a 502 or a 408 once costs a
// retry, not the sweep.
func TestSweepRetriesTransientFailures(t *testing.T) {
	for _, status := range []int{500, 502, 408} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newSweepEnv(t, false)
			e.addArchived(0, 150, 90)
			e.api.ScriptList("org1", 2, Response{Status: status})
			res, err := Sweep(context.Background(), e.c, e.options())
			if err != nil || !res.Complete || res.Due != 150 {
				t.Fatalf("%+v, %v", summary(res), err)
			}
			if n := len(e.listRequests()); n != 3 {
				t.Errorf("%d list requests, want 3 (page 2 twice)", n)
			}
		})
	}
}

// TestSweepDoesNotRetryRefusals: 401, 403 and 404 will not change by
// asking again: one request, and the sweep stops.
func TestSweepDoesNotRetryRefusals(t *testing.T) {
	for _, status := range []int{401, 403, 404} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			e := newSweepEnv(t, false)
			e.addArchived(0, 5, 90)
			e.api.ScriptList("org1", 1, slices.Repeat([]Response{{Status: status}}, 5)...)
			_, err := Sweep(context.Background(), e.c, e.options())
			var apiErr *tallyfy.APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
				t.Errorf("error %v, want the %d", err, status)
			}
			if n := len(e.listRequests()); n != 1 {
				t.Errorf("%d list requests, want 1", n)
			}
		})
	}
}

// TestSweepHonoursRetryAfter: a 429 is retried once its Retry-After has
// passed, not before; a Retry-After beyond the cap waits the cap; and a
// page rate-limited without end fails.
func TestSweepHonoursRetryAfter(t *testing.T) {
	t.Run("waits Retry-After", func(t *testing.T) {
		e := newSweepEnv(t, false)
		e.addArchived(0, 5, 90)
		e.api.ScriptList("org1", 1, Response{Status: 429, RetryAfter: "1"})
		opts := e.options()
		opts.Retry.MaxRetryAfter = 0 // the default cap, 30s
		res, err := Sweep(context.Background(), e.c, opts)
		if err != nil || res.Due != 5 {
			t.Fatalf("%+v, %v", summary(res), err)
		}
		reqs := e.api.Requests()
		if len(reqs) != 2 {
			t.Fatalf("%d requests, want 2", len(reqs))
		}
		if gap := reqs[1].At.Sub(reqs[0].At); gap < time.Second {
			t.Errorf("asked again after %s, before Retry-After's 1s", gap)
		}
	})
	t.Run("capped", func(t *testing.T) {
		e := newSweepEnv(t, false)
		e.addArchived(0, 5, 90)
		e.api.ScriptList("org1", 1, Response{Status: 429, RetryAfter: "3600"})
		start := time.Now()
		res, err := Sweep(context.Background(), e.c, e.options()) // MaxRetryAfter 50ms
		if err != nil || res.Due != 5 {
			t.Fatalf("%+v, %v", summary(res), err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %s: the cap was not applied", d)
		}
		reqs := e.api.Requests()
		if gap := reqs[1].At.Sub(reqs[0].At); gap < 50*time.Millisecond {
			t.Errorf("asked again after %s, before the capped wait", gap)
		}
	})
	t.Run("without end", func(t *testing.T) {
		e := newSweepEnv(t, false)
		e.addArchived(0, 5, 90)
		e.api.ScriptList("org1", 1, slices.Repeat([]Response{{Status: 429, RetryAfter: "1"}}, 20)...)
		opts := e.options()
		opts.Retry.RateLimited = 3
		_, err := Sweep(context.Background(), e.c, opts)
		if !errors.Is(err, tallyfy.ErrRateLimited) {
			t.Errorf("error %v, want the 429", err)
		}
		if n := len(e.listRequests()); n != 3 {
			t.Errorf("%d requests, want 3", n)
		}
	})
}

// TestSweepRateLimit: the limiter (DELETER_RATE_LIMIT) paces the list
// requests.
func TestSweepRateLimit(t *testing.T) {
	e := newSweepEnv(t, false)
	e.addArchived(0, 450, 90) // 5 pages
	opts := e.options()
	opts.Limiter = SweepLimiter(10, 1)
	if _, err := Sweep(context.Background(), e.c, opts); err != nil {
		t.Fatal(err)
	}
	reqs := e.api.Requests()
	if len(reqs) != 5 {
		t.Fatalf("%d requests, want 5", len(reqs))
	}
	// 10 a second with a burst of 1: 5 requests take at least 0.4s.
	if span := reqs[4].At.Sub(reqs[0].At); span < 350*time.Millisecond {
		t.Errorf("5 requests in %s at 10/s", span)
	}
}

// TestSweepLimit: --limit stops the sweep at that many due runs, pages
// after them unread.
func TestSweepLimit(t *testing.T) {
	e := newSweepEnv(t, true)
	e.addArchived(0, 250, 90)
	opts := e.options()
	opts.Limit = 150
	res, err := Sweep(context.Background(), e.c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Due != 150 || res.Published != 150 || !res.LimitReached || res.Complete || res.Pages != 2 || res.Scanned != 150 {
		t.Errorf("result %+v", summary(res))
	}
	if n := len(e.listRequests()); n != 2 {
		t.Errorf("%d list requests, want 2", n)
	}
	// A limit the sweep does not reach is no limit.
	opts.Limit, opts.Jobs = 1000, nil
	if res, err = Sweep(context.Background(), e.c, opts); err != nil || res.LimitReached || !res.Complete || res.Due != 250 {
		t.Errorf("limit not reached: %+v, %v", summary(res), err)
	}
}

// TestSweepHalvesTooLargePages: a page over 1 MiB is asked for again in
// pages half the size, and no run is missed or listed twice.
func TestSweepHalvesTooLargePages(t *testing.T) {
	e := newSweepEnv(t, false)
	for i := range 120 {
		e.api.AddRunWith("org1", testutil.RunSpec{ID: fmt.Sprintf("r%d", i), Name: strings.Repeat("n", 12<<10), ArchivedAt: e.now.Add(-90 * 24 * time.Hour)})
	}
	res, err := Sweep(context.Background(), e.c, e.options())
	if err != nil {
		t.Fatal(err)
	}
	if res.Due != 120 || res.Scanned != 120 || !res.Complete {
		t.Errorf("result %+v", summary(res))
	}
	var asked []string
	for _, q := range e.listRequests() {
		asked = append(asked, q.Get("page")+"/"+q.Get("per_page"))
	}
	if want := []string{"1/100", "1/50", "2/50", "3/50"}; !slices.Equal(asked, want) {
		t.Errorf("pages asked %v, want %v", asked, want)
	}
}

// TestSweepStopsOnRepeatingPages: an API that answers every page with the
// same runs would never end; the sweep stops, and says so.
func TestSweepStopsOnRepeatingPages(t *testing.T) {
	e := newSweepEnv(t, false)
	body := `{"data":[{"id":"r1","archived_at":"2020-01-01T00:00:00Z"}],"meta":{"pagination":{"links":{"next":"x"}}}}`
	e.api.ScriptList("org1", 0, slices.Repeat([]Response{{Body: body}}, 5)...)
	res, err := Sweep(context.Background(), e.c, e.options())
	var pe *PageError
	if !errors.As(err, &pe) || pe.Page != 2 || !errors.Is(err, errPageRepeats) {
		t.Errorf("error %v, want page 2 repeating page 1", err)
	}
	if res.Due != 1 || res.Skipped[SkipListedAgain] != 1 {
		t.Errorf("result %+v", summary(res))
	}
}

// TestSweepOddAnswers: an archived_at that is not RFC 3339 and an entry
// that is not an object are skipped with their reason; links as [] ends
// the listing.
func TestSweepOddAnswers(t *testing.T) {
	e := newSweepEnv(t, false)
	body := `{"data":[{"id":"r1","archived_at":"2020-01-01 00:00:00"},"r2",{"id":"r3","archived_at":"2020-01-01T00:00:00+01:00"}],
		"meta":{"pagination":{"total":30,"per_page":10,"current_page":1,"total_pages":3,"links":[]}}}`
	e.api.ScriptList("org1", 1, Response{Body: body})
	var details []string
	opts := e.options()
	opts.OnSkip = func(r SkipReport) { details = append(details, string(r.Reason)+": "+r.Detail) }
	res, err := Sweep(context.Background(), e.c, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Due != 1 || res.Runs[0].RunID != "r3" || !res.Runs[0].ArchivedAt.Equal(time.Date(2019, 12, 31, 23, 0, 0, 0, time.UTC)) ||
		res.Skipped[SkipBadArchivedAt] != 1 || res.Skipped[SkipMalformed] != 1 || res.Pages != 1 {
		t.Errorf("result %+v", res)
	}
	if !slices.ContainsFunc(details, func(d string) bool { return strings.Contains(d, "not an RFC 3339 time") }) {
		t.Errorf("skip details %q", details)
	}
}

// TestSweepInterrupted: cancelled while listing, a sweep publishes
// nothing; the error says at which page.
func TestSweepInterrupted(t *testing.T) {
	e := newSweepEnv(t, true)
	e.addArchived(0, 250, 90)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := e.options()
	opts.OnPage = func(PageReport) { cancel() }
	res, err := Sweep(ctx, e.c, opts)
	var pe *PageError
	if !errors.As(err, &pe) || pe.Page != 2 || !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want page 2 cancelled", err)
	}
	if res.Published != 0 || res.NotPublished != 100 || msgs(t, e.js, worker.DefaultJobsStream) != 0 {
		t.Errorf("result %+v", summary(res))
	}
}

// TestSweepPublishFailures: publishes that fail are counted, and after
// MaxPublishFailures the sweep stops publishing.
func TestSweepPublishFailures(t *testing.T) {
	e := newSweepEnv(t, true)
	// More than a window of publishes awaiting their acks, and the failures
	// on top: the failures are counted before the last run is offered.
	n := MaxPublishFailures + enqueueWindow + 50
	e.addArchived(0, n, 90)
	e.jobs.subject = "nowhere.jobs" // no stream listens: every publish fails
	res, err := Sweep(context.Background(), e.c, e.options())
	var ps *PublishStoppedError
	if !errors.As(err, &ps) || !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("error %v, want publishing stopped by ErrTooManyFailures", err)
	}
	if res.Failed < MaxPublishFailures || res.Published != 0 || res.Failed+res.NotPublished != n || ps.At+res.NotPublished != n {
		t.Errorf("result %+v", summary(res))
	}
}

// TestSweepDryRun publishes nothing and needs no NATS.
func TestSweepDryRun(t *testing.T) {
	e := newSweepEnv(t, false)
	e.addArchived(0, 3, 90)
	e.addArchived(3, 2, 1)
	res, err := Sweep(context.Background(), e.c, e.options())
	if err != nil {
		t.Fatal(err)
	}
	if res.Due != 3 || res.Skipped[SkipTooRecent] != 2 || res.Published != 0 {
		t.Errorf("result %+v", summary(res))
	}
	for _, r := range res.Runs {
		if r.Status != RunDue || r.Name != "Run "+r.RunID {
			t.Errorf("%+v", r)
		}
	}
}

// TestSweepValidate: options that cannot make valid jobs are refused
// before any request.
func TestSweepValidate(t *testing.T) {
	e := newSweepEnv(t, false)
	tests := []struct {
		name string
		edit func(*SweepOptions)
		want string
	}{
		{"bad org", func(o *SweepOptions) { o.Org = "a/b" }, "organization"},
		{"no cutoff", func(o *SweepOptions) { o.Cutoff = time.Time{} }, "cutoff"},
		{"bad checklist", func(o *SweepOptions) { o.ChecklistID = "x y" }, "checklist"},
		{"bad tag", func(o *SweepOptions) { o.TagID = "x/y" }, "tag"},
		{"bad request ID", func(o *SweepOptions) { o.RequestID = "a\nb" }, "request ID"},
		{"negative limit", func(o *SweepOptions) { o.Limit = -1 }, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.options()
			tc.edit(&opts)
			if _, err := Sweep(context.Background(), e.c, opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	if n := e.api.RequestCount(); n != 0 {
		t.Errorf("%d requests for refused options", n)
	}
}

func TestDefaultSweepRequestID(t *testing.T) {
	at := time.Date(2026, 3, 4, 23, 30, 0, 0, time.FixedZone("x", -3*3600)) // 2026-03-05 in UTC
	if got := DefaultSweepRequestID("acme", at); got != "sweep-acme-2026-03-05" {
		t.Errorf("%q", got)
	}
	if err := CheckRequestID(DefaultSweepRequestID(strings.Repeat("o", 64), at)); err != nil {
		t.Errorf("the longest org's default request ID: %v", err)
	}
}

// TestFakeListQuirks pins the quirks of the fake's list that the sweep
// tests rely on: total_pages counted for pages of 10, so the real last
// page still names a next one; links as [] when there is no other page;
// archived runs only when asked for.
func TestFakeListQuirks(t *testing.T) {
	e := newSweepEnv(t, false)
	e.addArchived(0, 250, 90)
	e.api.AddRun("org1", "active1", false)
	ctx := context.Background()
	page, _, err := e.c.ListRuns(ctx, "org1", tallyfy.ListQuery{Page: 3, Archived: tallyfy.ArchivedOnly})
	if err != nil {
		t.Fatal(err)
	}
	pg := page.Pagination
	if len(page.Runs) != 50 || pg.Total != 250 || pg.PerPage != 100 || pg.CurrentPage != 3 || pg.TotalPages != 25 || pg.Next == "" || pg.Previous == "" {
		t.Errorf("page 3: %d runs, %+v", len(page.Runs), pg)
	}
	if !page.Last(tallyfy.ListQuery{Page: 3}) {
		t.Error("page 3 of 250 at 100 a page is not the last")
	}
	page, _, err = e.c.ListRuns(ctx, "org1", tallyfy.ListQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Runs) != 1 || page.Runs[0].ID != "active1" || !page.Pagination.Links || page.Pagination.Next != "" || page.Pagination.Previous != "" {
		t.Errorf("without a filter: %+v", page)
	}
	page, _, err = e.c.ListRuns(ctx, "org1", tallyfy.ListQuery{Archived: tallyfy.StatusArchived, PerPage: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Runs) != 7 || page.Pagination.TotalPages != 25 || page.Runs[0].Status != "archived" || page.Runs[0].ArchivedAt == nil {
		t.Errorf("status=archived, 7 a page: %d runs, %+v", len(page.Runs), page.Pagination)
	}
}
