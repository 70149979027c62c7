package ops

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// RunLister reads one page of an organization's runs; *tallyfy.Client is
// one. Errors are the client's: an *tallyfy.APIError for an answer other
// than 2xx (RetryAfter set for a 429), a *tallyfy.TokenError when no token
// could be had, tallyfy.ErrPageTooLarge for a page over 1 MiB, anything
// else a connection failure, a timeout or a body that did not decode.
// Sweep calls it from one goroutine.
type RunLister interface {
	ListRuns(ctx context.Context, orgID string, q tallyfy.ListQuery) (*tallyfy.RunPage, *tallyfy.Response, error)
}

// SkipReason says why a listed run is not due. Whatever the list's
// filters were, a run is due only if its own record says so.
type SkipReason string

const (
	// SkipNotArchived: archived_at is null; the filter let an active run
	// through.
	SkipNotArchived SkipReason = "not_archived"
	// SkipTooRecent: archived at or after the cutoff.
	SkipTooRecent SkipReason = "too_recent"
	// SkipBadArchivedAt: archived_at is set but not an RFC 3339 time.
	SkipBadArchivedAt SkipReason = "bad_archived_at"
	// SkipInvalidID: the run's ID is not one a job may carry.
	SkipInvalidID SkipReason = "invalid_id"
	// SkipOtherChecklist: the sweep is of one checklist and the run shows
	// another (or none).
	SkipOtherChecklist SkipReason = "other_checklist"
	// SkipTagNotShown: the sweep is of one tag and the run does not show
	// it among its tags (or shows no tags).
	SkipTagNotShown SkipReason = "tag_not_shown"
	// SkipListedAgain: the run was on an earlier page too.
	SkipListedAgain SkipReason = "listed_again"
	// SkipMalformed: an entry of the page's data that is not a JSON object.
	SkipMalformed SkipReason = "malformed"
)

// SkipReasons are every SkipReason, in the order a summary lists them.
var SkipReasons = []SkipReason{SkipTooRecent, SkipNotArchived, SkipOtherChecklist, SkipTagNotShown, SkipBadArchivedAt, SkipInvalidID, SkipListedAgain, SkipMalformed}

// Text is the reason as a summary says it.
func (r SkipReason) Text() string {
	switch r {
	case SkipNotArchived:
		return "not archived"
	case SkipTooRecent:
		return "archived after the cutoff"
	case SkipBadArchivedAt:
		return "archived_at unreadable"
	case SkipInvalidID:
		return "invalid ID"
	case SkipOtherChecklist:
		return "of another checklist"
	case SkipTagNotShown:
		return "tag not shown"
	case SkipListedAgain:
		return "listed twice"
	case SkipMalformed:
		return "not a run object"
	}
	return string(r)
}

// RunStatus is what became of a due run.
type RunStatus string

const (
	RunDue          RunStatus = "due"           // dry run: would be published
	RunPublished    RunStatus = "published"     // published and stored
	RunDuplicate    RunStatus = "duplicate"     // already stored within the duplicate window
	RunFailed       RunStatus = "failed"        // its publish failed
	RunNotPublished RunStatus = "not_published" // the sweep stopped before publishing it
)

// SweepRetry is how Sweep retries a page. Zero values are the defaults,
// which are Tallyfy's CLI's.
type SweepRetry struct {
	// Attempts is how many times a page is asked for while it fails with
	// a 5xx, a 408, a timeout, a connection error or a body that does not
	// decode. Default 4.
	Attempts int
	// Backoff is the wait before the first retry, doubling up to
	// MaxBackoff, each with jitter. Defaults 500ms and 8s.
	Backoff, MaxBackoff time.Duration
	// RateLimited is how many 429s one page may get. Default 10.
	RateLimited int
	// MaxRetryAfter caps the wait a 429's Retry-After asks for (1s when it
	// asks for none). Default 30s.
	MaxRetryAfter time.Duration
}

func (r SweepRetry) withDefaults() SweepRetry {
	if r.Attempts <= 0 {
		r.Attempts = 4
	}
	if r.Backoff <= 0 {
		r.Backoff = 500 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 8 * time.Second
	}
	if r.RateLimited <= 0 {
		r.RateLimited = 10
	}
	if r.MaxRetryAfter <= 0 {
		r.MaxRetryAfter = 30 * time.Second
	}
	return r
}

// backoff is the wait before retry n (from 1): between half and all of
// Backoff×2^(n-1), at most MaxBackoff.
func (r SweepRetry) backoff(n int) time.Duration {
	d := r.MaxBackoff
	if n < 31 {
		d = min(r.Backoff<<(n-1), r.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// SweepOptions are one organization's sweep.
type SweepOptions struct {
	// Org is the organization swept.
	Org string
	// Cutoff: a run is due when its own archived_at is before it.
	Cutoff time.Time
	// Archived is how archived runs are asked for; zero means
	// tallyfy.ArchivedOnly. The answer is checked whatever is sent.
	Archived tallyfy.ArchivedFilter
	// ChecklistID and TagID narrow the sweep to runs of that checklist and
	// with that tag: they are sent as filters, and a run is due only if it
	// shows them.
	ChecklistID, TagID string
	// RequestID goes into every job; "" means DefaultSweepRequestID.
	RequestID string
	// Limit stops the sweep once this many due runs are found; 0 for none.
	Limit int
	// Jobs is where due runs are published. Nil is a dry run: nothing is
	// published, and no NATS is needed.
	Jobs *Jobs
	// Limiter paces list requests, retries included; nil for none. Share
	// one between the sweeps of a command (SweepLimiter).
	Limiter *rate.Limiter
	Retry   SweepRetry

	// The callbacks, if set, hear of each page, each run skipped, each
	// page retried and each publish confirmed. Calls never overlap.
	OnPage    func(PageReport)
	OnSkip    func(SkipReport)
	OnRetry   func(RetryReport)
	OnPublish func(SweptRun)
}

// Validate refuses options that cannot make jobs the worker takes, before
// any request.
func (o SweepOptions) Validate() error {
	var errs []error
	if !tallyfy.ValidID(o.Org) {
		errs = append(errs, fmt.Errorf("organization %q is not 1 to 64 letters, digits, '-' or '_'", o.Org))
	}
	if o.Cutoff.IsZero() {
		errs = append(errs, errors.New("no cutoff: a sweep needs one"))
	}
	if o.ChecklistID != "" && !tallyfy.ValidID(o.ChecklistID) {
		errs = append(errs, fmt.Errorf("checklist %q is not 1 to 64 letters, digits, '-' or '_'", o.ChecklistID))
	}
	if o.TagID != "" && !tallyfy.ValidID(o.TagID) {
		errs = append(errs, fmt.Errorf("tag %q is not 1 to 64 letters, digits, '-' or '_'", o.TagID))
	}
	if o.Limit < 0 {
		errs = append(errs, fmt.Errorf("limit %d is negative", o.Limit))
	}
	if o.Archived < tallyfy.NoArchivedFilter || o.Archived > tallyfy.StatusArchived {
		errs = append(errs, fmt.Errorf("unknown archived filter %d", o.Archived))
	}
	if err := CheckRequestID(o.RequestID); err != nil {
		errs = append(errs, fmt.Errorf("request ID: %w", err))
	}
	return errors.Join(errs...)
}

// CheckRequestID says whether a job may carry id as its request_id, by the
// worker's rule ("" is no request ID, which it may).
func CheckRequestID(id string) error {
	_, err := jobOf("org", "run", id, "")
	return err
}

// DefaultSweepRequestID is sweep-<org>-<YYYY-MM-DD> of now in UTC: a sweep
// run again the same day makes the same jobs, which the jobs stream's
// duplicate window then stores once.
func DefaultSweepRequestID(org string, now time.Time) string {
	return "sweep-" + org + "-" + now.UTC().Format(time.DateOnly)
}

// SweepLimiter is the rate limit of list requests as the worker builds its
// own: perSecond 0 for none, burst 0 for one second's worth.
func SweepLimiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 1)
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return rate.NewLimiter(rate.Limit(perSecond), burst)
}

// PageReport is one page listed.
type PageReport struct {
	Org  string
	Page int
	// Runs is how many entries the page held.
	Runs int
	// Scanned and Due count the sweep so far.
	Scanned, Due int
	// Total is the server's count of runs matching the filters, -1 when
	// it gave none.
	Total int
	// Last: no page after it will be read.
	Last bool
}

// SkipReport is one listed run that is not due.
type SkipReport struct {
	Org, RunID, Name string
	Reason           SkipReason
	// Detail says more, for reasons that need it (an invalid ID's error).
	Detail string
}

// RetryReport is a page asked for again after Wait.
type RetryReport struct {
	Org     string
	Page    int
	Attempt int // the attempt that failed, from 1
	Wait    time.Duration
	Err     error
}

// SweptRun is a due run and what became of it.
type SweptRun struct {
	OrgID      string    `json:"org_id"`
	RunID      string    `json:"run_id"`
	Name       string    `json:"name"`
	ArchivedAt time.Time `json:"archived_at"`
	Status     RunStatus `json:"status"`
	// Err is why its publish failed (Error is its text).
	Err   error  `json:"-"`
	Error string `json:"error,omitempty"`

	job worker.Job
}

// SweepResult is what a sweep found and did.
type SweepResult struct {
	Org       string    `json:"org_id"`
	RequestID string    `json:"request_id"`
	Cutoff    time.Time `json:"cutoff"`
	// Filter is the archived filter sent, as key=value.
	Filter string `json:"archived_filter"`
	// Pages is how many pages were read.
	Pages int `json:"pages"`
	// Complete: every page was read.
	Complete bool `json:"complete"`
	// LimitReached: the sweep stopped at SweepOptions.Limit due runs.
	LimitReached bool `json:"limit_reached"`
	// Total is the server's count of matching runs on the last page read,
	// -1 when it gave none.
	Total int `json:"total"`

	Scanned      int                `json:"scanned"`
	Due          int                `json:"due"`
	Published    int                `json:"published"`
	Duplicates   int                `json:"duplicates"`
	Failed       int                `json:"failed"`
	NotPublished int                `json:"not_published"`
	Skipped      map[SkipReason]int `json:"skipped"`
	// Runs are the due runs, in list order.
	Runs []SweptRun `json:"runs"`
}

// SkippedTotal is how many listed runs were not due.
func (r SweepResult) SkippedTotal() int {
	n := 0
	for _, c := range r.Skipped {
		n += c
	}
	return n
}

// PageError is a page that could not be read, after its retries or
// because ctx was cancelled. The due runs of the pages before it are still
// published (Sweep's result says what became of them); Page and later
// pages were not looked at.
type PageError struct {
	Page int
	Err  error
}

func (e *PageError) Error() string { return fmt.Sprintf("page %d: %v", e.Page, e.Err) }
func (e *PageError) Unwrap() error { return e.Err }

// PublishStoppedError is a publishing that stopped before the last due run:
// ctx was cancelled, or MaxPublishFailures publishes failed
// (ErrTooManyFailures). At runs were offered; the rest are RunNotPublished.
type PublishStoppedError struct {
	At, Of int
	Err    error
}

func (e *PublishStoppedError) Error() string {
	return fmt.Sprintf("publishing stopped after %d of %d due runs: %v", e.At, e.Of, e.Err)
}
func (e *PublishStoppedError) Unwrap() error { return e.Err }

var (
	errPageRepeats  = errors.New("every run on it was on an earlier page: the API does not seem to page")
	errTooManyPages = fmt.Errorf("more than %d pages", maxSweepPages)
)

// maxSweepPages ends a sweep whose API never says it is done: ten million
// runs at 100 a page.
const maxSweepPages = 100_000

// minPerPage is the smallest page size Sweep asks for after a page was too
// large; halving stops at an odd size, so page boundaries stay where they
// were.
const minPerPage = 10

// Sweep lists the organization's archived runs, page by page, and finds
// the due ones: those whose own record says they were archived before the
// cutoff (and show the checklist and tag swept), with an ID a job may
// carry. Then it publishes them as Enqueue would, one job each with
// Nats-Msg-Id enqueueMsgID, so that a sweep run again within the jobs
// stream's duplicate window publishes nothing twice.
//
// Every page is listed before anything is published: a run deleted while
// the sweep pages would move the runs after it to earlier pages, and the
// sweep would never see some of them.
//
// A page that fails after its retries stops the listing with a *PageError;
// the due runs of the pages before it are still published. When ctx is
// cancelled, Sweep publishes nothing more, waits for the acks of what it
// published, and returns ctx's error (in a *PageError while listing, a
// *PublishStoppedError while publishing). The result says what was done.
func Sweep(ctx context.Context, api RunLister, opts SweepOptions) (SweepResult, error) {
	if opts.Archived == tallyfy.NoArchivedFilter {
		opts.Archived = tallyfy.ArchivedOnly
	}
	if opts.RequestID == "" {
		opts.RequestID = DefaultSweepRequestID(opts.Org, time.Now())
	}
	s := &sweepRun{
		api:   api,
		opts:  opts,
		retry: opts.Retry.withDefaults(),
		seen:  map[string]bool{},
		res: SweepResult{
			Org: opts.Org, RequestID: opts.RequestID, Cutoff: opts.Cutoff,
			Filter: opts.Archived.String(), Total: -1, Skipped: map[SkipReason]int{}, Runs: []SweptRun{},
		},
	}
	if err := opts.Validate(); err != nil {
		return s.res, err
	}
	listErr := s.list(ctx)
	if listErr != nil && ctx.Err() != nil {
		// Interrupted while listing. Interrupted after it, publish says so.
		s.notPublished(0)
		return s.res, listErr
	}
	return s.res, errors.Join(listErr, s.publish(ctx))
}

// sweepRun is one Sweep's state. res and the callbacks are guarded by mu:
// the acks of publishes are reported from the publisher's goroutine.
type sweepRun struct {
	api   RunLister
	opts  SweepOptions
	retry SweepRetry
	seen  map[string]bool

	mu  sync.Mutex
	res SweepResult
}

func (s *sweepRun) list(ctx context.Context) error {
	q := tallyfy.ListQuery{
		Page: 1, PerPage: tallyfy.MaxPerPage, Archived: s.opts.Archived,
		ChecklistID: s.opts.ChecklistID, TagID: s.opts.TagID,
	}
	for {
		if s.res.Pages >= maxSweepPages {
			return &PageError{Page: q.Page, Err: errTooManyPages}
		}
		page, err := s.fetch(ctx, q)
		if errors.Is(err, tallyfy.ErrPageTooLarge) && q.PerPage%2 == 0 && q.PerPage/2 >= minPerPage {
			// The same runs, in pages half the size: those before this page
			// are the same pages, read already.
			offset := (q.Page - 1) * q.PerPage
			q.PerPage /= 2
			q.Page = offset/q.PerPage + 1
			continue
		}
		if err != nil {
			return &PageError{Page: q.Page, Err: err}
		}
		fresh, cut := s.take(page)
		last := page.Last(q)
		s.mu.Lock()
		s.res.Pages++
		s.res.Total = page.Pagination.Total
		s.res.Complete = last && !cut
		if s.opts.Limit > 0 && s.res.Due >= s.opts.Limit && !s.res.Complete {
			s.res.LimitReached, last = true, true
		}
		if s.opts.OnPage != nil {
			s.opts.OnPage(PageReport{
				Org: s.opts.Org, Page: q.Page, Runs: len(page.Runs) + page.Malformed,
				Scanned: s.res.Scanned, Due: s.res.Due, Total: page.Pagination.Total, Last: last,
			})
		}
		s.mu.Unlock()
		if last {
			return nil
		}
		if fresh == 0 && len(page.Runs) > 0 {
			return &PageError{Page: q.Page, Err: errPageRepeats}
		}
		q.Page++
	}
}

// fetch asks for one page, again after a 429 (once Retry-After has
// passed) and after a failure that another try may not meet.
func (s *sweepRun) fetch(ctx context.Context, q tallyfy.ListQuery) (*tallyfy.RunPage, error) {
	failed, limited := 0, 0
	for {
		if s.opts.Limiter != nil {
			if err := s.opts.Limiter.Wait(ctx); err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, err
			}
		}
		page, _, err := s.api.ListRuns(ctx, s.opts.Org, q)
		if err == nil {
			return page, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var wait time.Duration
		switch {
		case errors.Is(err, tallyfy.ErrRateLimited):
			if limited++; limited >= s.retry.RateLimited {
				return nil, fmt.Errorf("%w (rate limited %d times)", err, limited)
			}
			wait = retryAfter(err, s.retry.MaxRetryAfter)
		case retryable(err):
			if failed++; failed >= s.retry.Attempts {
				return nil, fmt.Errorf("%w (tried %d times)", err, failed)
			}
			wait = s.retry.backoff(failed)
		default:
			return nil, err
		}
		if s.opts.OnRetry != nil {
			s.mu.Lock()
			s.opts.OnRetry(RetryReport{Org: s.opts.Org, Page: q.Page, Attempt: failed + limited, Wait: wait, Err: err})
			s.mu.Unlock()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// retryable says whether another try may meet a different answer: a 5xx,
// a 408, no answer at all, a body that did not decode, a token endpoint
// that could not be reached. Credentials refused or unreadable, a 403, a
// 404 and the like will not change by asking again.
func retryable(err error) bool {
	var apiErr *tallyfy.APIError
	var tokErr *tallyfy.TokenError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.StatusCode >= 500 || apiErr.StatusCode == 408
	case errors.As(err, &tokErr):
		return !errors.Is(err, tallyfy.ErrCredentialsUnreadable) && (tokErr.StatusCode == 0 || tokErr.StatusCode >= 500)
	case errors.Is(err, tallyfy.ErrPageTooLarge), errors.Is(err, tallyfy.ErrInvalidID):
		return false
	}
	return true
}

// retryAfter is the wait a 429 asks for: its Retry-After, 1s when it gave
// none, at most max.
func retryAfter(err error, max time.Duration) time.Duration {
	d := time.Second
	var apiErr *tallyfy.APIError
	if errors.As(err, &apiErr) && apiErr.RetryAfter > 0 {
		d = apiErr.RetryAfter
	}
	return min(d, max)
}

// take looks at each run of a page until the limit is reached, and
// returns how many had not been listed before, and whether the limit left
// some unlooked at.
func (s *sweepRun) take(page *tallyfy.RunPage) (fresh int, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range page.Malformed {
		s.res.Scanned++
		s.skipLocked(tallyfy.ListedRun{}, SkipMalformed, "an entry of data is not a JSON object")
	}
	for _, run := range page.Runs {
		if s.opts.Limit > 0 && s.res.Due >= s.opts.Limit {
			return fresh, true
		}
		s.res.Scanned++
		if !s.seen[run.ID] {
			fresh++
		}
		s.classifyLocked(run)
	}
	return fresh, false
}

// classifyLocked decides whether one run is due. Its own record decides,
// not the filters that listed it.
func (s *sweepRun) classifyLocked(run tallyfy.ListedRun) {
	job, err := jobOf(s.opts.Org, run.ID, s.opts.RequestID, "")
	if err != nil {
		s.skipLocked(run, SkipInvalidID, err.Error())
		return
	}
	if s.seen[run.ID] {
		s.skipLocked(run, SkipListedAgain, "")
		return
	}
	s.seen[run.ID] = true
	at, archived, err := run.Archived()
	switch {
	case err != nil:
		s.skipLocked(run, SkipBadArchivedAt, err.Error())
		return
	case !archived:
		s.skipLocked(run, SkipNotArchived, "")
		return
	case !at.Before(s.opts.Cutoff):
		s.skipLocked(run, SkipTooRecent, "")
		return
	case s.opts.ChecklistID != "" && run.ChecklistID != s.opts.ChecklistID:
		s.skipLocked(run, SkipOtherChecklist, "checklist_id "+quoteShort(run.ChecklistID))
		return
	case s.opts.TagID != "" && !run.HasTag(s.opts.TagID):
		s.skipLocked(run, SkipTagNotShown, "")
		return
	}
	s.res.Due++
	s.res.Runs = append(s.res.Runs, SweptRun{
		OrgID: job.OrgID, RunID: job.RunID, Name: tallyfy.OneLine(run.Name, maxRunName),
		ArchivedAt: at.UTC(), Status: RunDue, job: job,
	})
}

// maxRunName bounds what a sweep keeps of a run's name, for its table.
const maxRunName = 200

func (s *sweepRun) skipLocked(run tallyfy.ListedRun, why SkipReason, detail string) {
	s.res.Skipped[why]++
	if s.opts.OnSkip != nil {
		s.opts.OnSkip(SkipReport{
			Org: s.opts.Org, RunID: tallyfy.OneLine(run.ID, 80), Name: tallyfy.OneLine(run.Name, maxRunName),
			Reason: why, Detail: detail,
		})
	}
}

func quoteShort(s string) string {
	if s == "" {
		return "none"
	}
	return fmt.Sprintf("%q", tallyfy.OneLine(s, 80))
}

// publish publishes the due runs as Enqueue publishes jobs.
func (s *sweepRun) publish(ctx context.Context) error {
	if s.opts.Jobs == nil || len(s.res.Runs) == 0 {
		return nil
	}
	runs := len(s.res.Runs)
	pub := newPublisher(s.opts.Jobs, s.published)
	var stop error
	i := 0
	for ; i < runs; i++ {
		if s.failures() >= MaxPublishFailures {
			stop = ErrTooManyFailures
		} else if ctx.Err() != nil {
			stop = ctx.Err()
		}
		if stop != nil {
			break
		}
		s.mu.Lock()
		job := s.res.Runs[i].job
		s.mu.Unlock()
		pub.publish(i, job)
	}
	pub.finish()
	if stop == nil {
		return nil
	}
	s.notPublished(i)
	return &PublishStoppedError{At: i, Of: runs, Err: stop}
}

// published records what the ack of one publish said.
func (s *sweepRun) published(rep LineReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.res.Runs[rep.N]
	switch rep.Status {
	case LinePublished:
		r.Status = RunPublished
		s.res.Published++
	case LineDuplicate:
		r.Status = RunDuplicate
		s.res.Duplicates++
	default:
		r.Status, r.Err = RunFailed, rep.Err
		if rep.Err != nil {
			r.Error = rep.Err.Error()
		}
		s.res.Failed++
	}
	if s.opts.OnPublish != nil {
		s.opts.OnPublish(*r)
	}
}

func (s *sweepRun) failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.res.Failed
}

// notPublished marks the due runs from the i-th on as never published
// (with Jobs; a dry run publishes none by design).
func (s *sweepRun) notPublished(from int) {
	if s.opts.Jobs == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := from; i < len(s.res.Runs); i++ {
		s.res.Runs[i].Status = RunNotPublished
		s.res.NotPublished++
	}
}
