package worker

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// Outcome is the final result of one job, published as the last token of
// the result subject.
type Outcome string

// Outcomes. Every job ends with exactly one of these.
const (
	OutcomeDeleted      Outcome = "deleted"
	OutcomeNotFound     Outcome = "not_found"
	OutcomeDeadLettered Outcome = "dead_lettered"
	// OutcomeDryRun: DELETER_DRY_RUN was on, the job was valid and allowed,
	// and nothing was deleted.
	OutcomeDryRun Outcome = "dry_run"
)

// Reason says why a job was dead-lettered; it is the last token of the
// dead-letter subject and the Tallyfy-Dlq-Reason header.
type Reason string

// Dead-letter reasons.
const (
	ReasonNotArchived      Reason = "not_archived"
	ReasonForbidden        Reason = "forbidden"
	ReasonRejected         Reason = "rejected"
	ReasonRetriesExhausted Reason = "retries_exhausted"
	ReasonInvalidJob       Reason = "invalid_job"
	ReasonOrgNotAllowed    Reason = "org_not_allowed"
	// ReasonMaxDeliveries: the job passed its delivery limit without a
	// worker seeing its last delivery (a worker died holding it); the
	// sweeper dead-letters it.
	ReasonMaxDeliveries Reason = "max_deliveries"
)

// Outcomes lists every Outcome, and Reasons every Reason, in the order
// above: for metrics, dashboards and documentation.
var (
	Outcomes = []Outcome{OutcomeDeleted, OutcomeNotFound, OutcomeDeadLettered, OutcomeDryRun}
	Reasons  = []Reason{ReasonNotArchived, ReasonForbidden, ReasonRejected, ReasonRetriesExhausted,
		ReasonInvalidJob, ReasonOrgNotAllowed, ReasonMaxDeliveries}
)

// ErrStillExists: the API answered 404 to the delete, but the run is still
// there (Tallyfy documents 404 also for "not archived").
var ErrStillExists = errors.New("delete answered 404 but the run still exists: it is probably not archived")

// Action is what the worker does with the message after one attempt.
type Action int

const (
	// ActFinish publishes the outcome (and the dead letter, if any), then acks.
	ActFinish Action = iota + 1
	// ActRetry naks with Delay: the attempt counts toward MaxDeliver.
	ActRetry
	// ActWaitRateLimit keeps the job in hand for Delay and pauses pulling as
	// long; no delivery is spent.
	ActWaitRateLimit
	// ActHandBack gives the job back to the pool at once, without spending
	// one of its attempts: this worker cannot call Tallyfy (its breaker is
	// not closed, its credentials were rejected or cannot be read), which is
	// no fault of the job, and another worker may well be able to. Delay,
	// after a 401, is how long this worker then pauses pulling.
	ActHandBack
	// ActGiveBack gives the job back to the pool at once, like ActHandBack:
	// the worker is shutting down.
	ActGiveBack
	// ActArchive archives the run, which Tallyfy would not delete because
	// it is not archived, then deletes it.
	ActArchive
)

func (a Action) String() string {
	switch a {
	case ActFinish:
		return "finish"
	case ActRetry:
		return "retry"
	case ActWaitRateLimit:
		return "wait_rate_limit"
	case ActHandBack:
		return "hand_back"
	case ActGiveBack:
		return "give_back"
	case ActArchive:
		return "archive"
	}
	return "unknown"
}

// Attempt is what one try at a job produced.
type Attempt struct {
	// Err is the decode or validation error, or the API call's error; nil
	// when the run was deleted, or with DryRun when it would have been
	// called.
	Err error
	// DryRun is true when Config.DryRun kept a valid, allowed job from
	// being called.
	DryRun bool
	// Delivered is the message's delivery count, from 1.
	Delivered int
	// BreakerTripped is true when the breaker is not closed after a failed
	// call: the failure is part of an outage, not the job's fault.
	BreakerTripped bool
	// MayArchive: Config.ArchiveFirst allows the worker to archive this
	// job's run.
	MayArchive bool
	// Archived: the worker has archived the run, in this delivery or an
	// earlier one.
	Archived bool
	// Archiving: Err is the archive call's, not the delete's.
	Archiving bool
}

// Decision is what Policy.Route makes of an Attempt.
type Decision struct {
	Action  Action
	Outcome Outcome       // with ActFinish
	Reason  Reason        // with ActFinish and OutcomeDeadLettered
	Status  int           // the HTTP status, when there was an answer
	Delay   time.Duration // with ActRetry and the waits
}

// Policy holds the settings that routing depends on.
type Policy struct {
	MaxDeliver int
	// Backoff is the delay before delivery n+1 after a failed delivery n;
	// the last step repeats.
	Backoff []time.Duration
	// CredentialsPause is how long pulling pauses after a 401.
	CredentialsPause time.Duration
	// DefaultRetryAfter applies to a 429 without a usable Retry-After;
	// MaxRetryAfter caps one that asks for too long.
	DefaultRetryAfter, MaxRetryAfter time.Duration
}

// Route turns one attempt into a decision. It is the outcome table of the
// README, and nothing else decides an outcome.
func (p Policy) Route(a Attempt) Decision {
	err := a.Err
	var apiErr *tallyfy.APIError
	switch {
	case err == nil && a.DryRun:
		return finish(OutcomeDryRun, "", 0)
	case err == nil:
		return finish(OutcomeDeleted, "", 0)
	case errors.Is(err, ErrInvalidJob):
		return finish(OutcomeDeadLettered, ReasonInvalidJob, 0)
	case errors.Is(err, ErrOrgNotAllowed):
		return finish(OutcomeDeadLettered, ReasonOrgNotAllowed, 0)
	case errors.Is(err, ErrStillExists):
		if a.archivable() {
			return Decision{Action: ActArchive, Status: http.StatusNotFound}
		}
		return finish(OutcomeDeadLettered, ReasonNotArchived, http.StatusNotFound)
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return Decision{Action: ActHandBack}
	case errors.Is(err, context.Canceled):
		// Only shutdown cancels a call.
		return Decision{Action: ActGiveBack}
	case errors.Is(err, tallyfy.ErrUnauthorized):
		// From the API, or from the token endpoint: either way no retry of
		// this job can fix it, new credentials can, and other workers may
		// have them.
		return Decision{Action: ActHandBack, Status: http.StatusUnauthorized, Delay: p.CredentialsPause}
	case errors.Is(err, tallyfy.ErrCredentialsUnreadable):
		// A file here, not Tallyfy: no call was made.
		return Decision{Action: ActHandBack}
	case errors.As(err, &apiErr):
		return p.routeStatus(a, apiErr)
	}
	return p.transient(a, 0)
}

func (p Policy) routeStatus(a Attempt, e *tallyfy.APIError) Decision {
	s := e.StatusCode
	switch {
	case s == http.StatusNotFound:
		return finish(OutcomeNotFound, "", s)
	case s == http.StatusUnprocessableEntity:
		if a.archivable() {
			return Decision{Action: ActArchive, Status: s}
		}
		return finish(OutcomeDeadLettered, ReasonNotArchived, s)
	case s == http.StatusForbidden:
		return finish(OutcomeDeadLettered, ReasonForbidden, s)
	case s == http.StatusTooManyRequests:
		d := e.RetryAfter
		if d <= 0 {
			d = p.DefaultRetryAfter
		}
		if d > p.MaxRetryAfter {
			d = p.MaxRetryAfter
		}
		return Decision{Action: ActWaitRateLimit, Status: s, Delay: d}
	case s == http.StatusRequestTimeout:
		return p.transient(a, s)
	case s >= 400 && s < 500:
		return finish(OutcomeDeadLettered, ReasonRejected, s)
	}
	// 5xx, and anything else that is neither success nor a client error
	// (a redirect we refuse to follow, an informational status): the API, or
	// something in front of it, is not working. Dead-lettering the backlog
	// would not help, retrying might.
	return p.transient(a, s)
}

// archivable: the delete was refused for a run that is not archived, and
// the worker may archive it and has not already (a run it archived that
// still cannot be deleted is dead-lettered, not archived again and again).
func (a Attempt) archivable() bool { return a.MayArchive && !a.Archived && !a.Archiving }

func (p Policy) transient(a Attempt, status int) Decision {
	switch {
	case a.BreakerTripped:
		return Decision{Action: ActHandBack, Status: status}
	case a.Delivered >= p.MaxDeliver:
		return finish(OutcomeDeadLettered, ReasonRetriesExhausted, status)
	}
	return Decision{Action: ActRetry, Status: status, Delay: p.backoff(a.Delivered)}
}

// backoff is the delay after failed delivery n (from 1).
func (p Policy) backoff(n int) time.Duration {
	if len(p.Backoff) == 0 {
		return 0
	}
	if n < 1 {
		n = 1
	}
	if n > len(p.Backoff) {
		n = len(p.Backoff)
	}
	return p.Backoff[n-1]
}

func finish(o Outcome, r Reason, status int) Decision {
	return Decision{Action: ActFinish, Outcome: o, Reason: r, Status: status}
}

// isBreakerFailure says whether an API error means the API is not working.
// A 4xx answer is the API working (except 408); a call cancelled by shutdown,
// and credentials that could not be read, are excluded by isBreakerExcluded
// and never get here.
func isBreakerFailure(err error) bool {
	if err == nil || errors.Is(err, tallyfy.ErrUnauthorized) {
		return false
	}
	var apiErr *tallyfy.APIError
	if errors.As(err, &apiErr) {
		s := apiErr.StatusCode
		return !(s >= 400 && s < 500) || s == http.StatusRequestTimeout
	}
	return !errors.Is(err, tallyfy.ErrInvalidID)
}

// isBreakerExcluded: neither a success nor a failure of Tallyfy's.
func isBreakerExcluded(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, tallyfy.ErrCredentialsUnreadable)
}
