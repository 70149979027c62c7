package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/sony/gobreaker/v2"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// reachedTallyfy says whether a call's request went to Tallyfy with
// credentials it did not refuse, so Tallyfy may have acted on the job: the
// delivery was a real attempt. One refused before it went (breaker,
// unreadable credentials) or refused without being looked at (401, 429)
// was not.
func reachedTallyfy(err error) bool {
	for _, not := range []error{gobreaker.ErrOpenState, gobreaker.ErrTooManyRequests,
		tallyfy.ErrCredentialsUnreadable, tallyfy.ErrUnauthorized, tallyfy.ErrRateLimited} {
		if errors.Is(err, not) {
			return false
		}
	}
	return true
}

// call makes one API call through the breaker. tripped is true when the
// call failed and the breaker is not closed afterwards.
func (w *Worker) call(ctx context.Context, job Job) (resp *tallyfy.Response, tripped bool, err error) {
	resp, err = w.through(ctx, opDelete, job, func(ctx context.Context) (*tallyfy.Response, error) {
		return w.api.DeleteRun(ctx, job.OrgID, job.RunID)
	})
	if w.checker != nil && errors.Is(err, tallyfy.ErrNotFound) {
		deleteErr := err
		_, err = w.through(ctx, opGet, job, func(ctx context.Context) (*tallyfy.Response, error) {
			_, r, err := w.checker.GetRun(ctx, job.OrgID, job.RunID)
			return r, err
		})
		switch {
		case err == nil:
			err = fmt.Errorf("%w (%w)", ErrStillExists, deleteErr)
		case errors.Is(err, tallyfy.ErrNotFound):
			err = deleteErr
		}
	}
	w.noteCredentials(err)
	tripped = err != nil && isBreakerFailure(err) && w.breaker.State() != gobreaker.StateClosed
	return resp, tripped, err
}

// archive archives job's run through the breaker, as call deletes it.
func (w *Worker) archive(ctx context.Context, job Job) (resp *tallyfy.Response, tripped bool, err error) {
	resp, err = w.through(ctx, opArchive, job, func(ctx context.Context) (*tallyfy.Response, error) {
		return w.archiver.ArchiveRun(ctx, job.OrgID, job.RunID)
	})
	w.noteCredentials(err)
	tripped = err != nil && isBreakerFailure(err) && w.breaker.State() != gobreaker.StateClosed
	return resp, tripped, err
}

// noteCredentials learns from one call's error whether the credentials
// could be read and whether Tallyfy accepted them.
func (w *Worker) noteCredentials(err error) {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) || errors.Is(err, context.Canceled) {
		return // no call was made, or its end was not heard
	}
	if errors.Is(err, tallyfy.ErrCredentialsUnreadable) {
		w.ab.setUnreadable(tallyfy.OneLine(err.Error(), maxErrorHeader))
		return
	}
	var apiErr *tallyfy.APIError
	switch {
	case errors.Is(err, tallyfy.ErrUnauthorized):
		w.ab.setUnreadable("")
		w.ab.setRejected(true)
	case err == nil, errors.As(err, &apiErr) && apiErr.StatusCode >= 400 && apiErr.StatusCode < 500:
		// The API took the request past authentication.
		w.ab.credentialsAccepted()
	default:
		// A 5xx from something in front of the API, or no answer: the
		// credentials were read, but say nothing of what Tallyfy makes of
		// them.
		w.ab.setUnreadable("")
	}
}

// through makes one API request, op of job: after the rate limiter, inside
// the breaker, within the API timeout, and with a tracer in a span of its
// own (one the breaker refuses has none: it never went).
func (w *Worker) through(ctx context.Context, op apiOp, job Job, req func(context.Context) (*tallyfy.Response, error)) (*tallyfy.Response, error) {
	if err := w.limiter.wait(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.APITimeout)
	defer cancel()
	resp, err := w.breaker.Execute(func() (*tallyfy.Response, error) {
		if w.tracer != nil {
			return w.traced(ctx, op, job, req)
		}
		return req(ctx)
	})
	if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
		w.limiter.answered(errors.Is(err, tallyfy.ErrRateLimited))
	}
	return resp, err
}
