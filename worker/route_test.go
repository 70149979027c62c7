package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func TestRoute(t *testing.T) {
	p := worker.Policy{
		MaxDeliver:        3,
		Backoff:           []time.Duration{time.Second, 5 * time.Second},
		CredentialsPause:  30 * time.Second,
		DefaultRetryAfter: 2 * time.Second,
		MaxRetryAfter:     time.Minute,
	}
	api := func(status int) error { return &tallyfy.APIError{StatusCode: status, Message: "x"} }
	transport := &url.Error{Op: "Delete", URL: "http://x", Err: errors.New("connection refused")}
	_, unreadable := tallyfy.FileTokenSource(filepath.Join(t.TempDir(), "missing")).Token()
	if !errors.Is(unreadable, tallyfy.ErrCredentialsUnreadable) {
		t.Fatalf("a missing token file gave %v, not ErrCredentialsUnreadable", unreadable)
	}
	tests := []struct {
		name      string
		err       error
		delivered int
		tripped   bool
		want      worker.Decision
	}{
		{"deleted", nil, 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeleted}},
		{"404", api(404), 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeNotFound, Status: 404}},
		{"422", api(422), 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonNotArchived, Status: 422}},
		{"403", api(403), 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonForbidden, Status: 403}},
		{"400", api(400), 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonRejected, Status: 400}},
		{"410", api(410), 2, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonRejected, Status: 410}},
		{"401", api(401), 3, false, worker.Decision{Action: worker.ActHandBack, Status: 401, Delay: 30 * time.Second}},
		{"401 from token endpoint", &tallyfy.TokenError{StatusCode: 401}, 1, false, worker.Decision{Action: worker.ActHandBack, Status: 401, Delay: 30 * time.Second}},
		{"token file unreadable, last delivery", unreadable, 3, false, worker.Decision{Action: worker.ActHandBack}},
		{"token endpoint unreachable", &tallyfy.TokenError{Message: "dial tcp: connection refused"}, 1, false, worker.Decision{Action: worker.ActRetry, Delay: time.Second}},
		{"429 with Retry-After", &tallyfy.APIError{StatusCode: 429, RetryAfter: 7 * time.Second}, 3, false, worker.Decision{Action: worker.ActWaitRateLimit, Status: 429, Delay: 7 * time.Second}},
		{"429 without", api(429), 1, false, worker.Decision{Action: worker.ActWaitRateLimit, Status: 429, Delay: 2 * time.Second}},
		{"429 asking too much", &tallyfy.APIError{StatusCode: 429, RetryAfter: time.Hour}, 1, false, worker.Decision{Action: worker.ActWaitRateLimit, Status: 429, Delay: time.Minute}},
		{"500 first delivery", api(500), 1, false, worker.Decision{Action: worker.ActRetry, Status: 500, Delay: time.Second}},
		{"503 second delivery", api(503), 2, false, worker.Decision{Action: worker.ActRetry, Status: 503, Delay: 5 * time.Second}},
		{"500 last delivery", api(500), 3, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonRetriesExhausted, Status: 500}},
		{"500 that tripped the breaker", api(500), 3, true, worker.Decision{Action: worker.ActHandBack, Status: 500}},
		{"408", api(408), 1, false, worker.Decision{Action: worker.ActRetry, Status: 408, Delay: time.Second}},
		{"302 not followed", api(302), 1, false, worker.Decision{Action: worker.ActRetry, Status: 302, Delay: time.Second}},
		{"transport error", transport, 1, false, worker.Decision{Action: worker.ActRetry, Delay: time.Second}},
		{"transport error, last delivery", transport, 3, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonRetriesExhausted}},
		{"timeout", fmt.Errorf("tallyfy: %w", context.DeadlineExceeded), 1, false, worker.Decision{Action: worker.ActRetry, Delay: time.Second}},
		{"breaker open", gobreaker.ErrOpenState, 3, false, worker.Decision{Action: worker.ActHandBack}},
		{"breaker probing", gobreaker.ErrTooManyRequests, 3, false, worker.Decision{Action: worker.ActHandBack}},
		{"shutdown", fmt.Errorf("tallyfy: %w", context.Canceled), 1, false, worker.Decision{Action: worker.ActGiveBack}},
		{"invalid job", fmt.Errorf("%w: run_id", worker.ErrInvalidJob), 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonInvalidJob}},
		{"org not allowed", fmt.Errorf("%w: x", worker.ErrOrgNotAllowed), 1, false, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonOrgNotAllowed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Route(worker.Attempt{Err: tc.err, Delivered: tc.delivered, BreakerTripped: tc.tripped})
			if got != tc.want {
				t.Errorf("Route = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRouteDryRun: dry run ends a valid, allowed job dry_run; one that is
// not still ends as it would without dry run.
func TestRouteDryRun(t *testing.T) {
	p := worker.Policy{MaxDeliver: 3, Backoff: []time.Duration{time.Second}}
	tests := []struct {
		name string
		err  error
		want worker.Decision
	}{
		{"valid and allowed", nil, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDryRun}},
		{"invalid job", fmt.Errorf("%w: run_id", worker.ErrInvalidJob), worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonInvalidJob}},
		{"org not allowed", fmt.Errorf("%w: x", worker.ErrOrgNotAllowed), worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonOrgNotAllowed}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Route(worker.Attempt{Err: tc.err, Delivered: 1, DryRun: true}); got != tc.want {
				t.Errorf("Route = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRouteArchiveFirst: a run that is not archived is archived first when
// the job may have it archived, once; the archive's own answers route like
// the delete's.
func TestRouteArchiveFirst(t *testing.T) {
	p := worker.Policy{MaxDeliver: 3, Backoff: []time.Duration{time.Second}}
	api := func(status int) error { return &tallyfy.APIError{StatusCode: status, Message: "x"} }
	stillExists := fmt.Errorf("%w (%w)", worker.ErrStillExists, api(404))
	notArchived := worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonNotArchived, Status: 422}
	tests := []struct {
		name string
		a    worker.Attempt
		want worker.Decision
	}{
		{"422, may archive", worker.Attempt{Err: api(422), MayArchive: true}, worker.Decision{Action: worker.ActArchive, Status: 422}},
		{"422, may not", worker.Attempt{Err: api(422)}, notArchived},
		{"422 after archiving it", worker.Attempt{Err: api(422), MayArchive: true, Archived: true}, notArchived},
		{"404 but it exists, may archive", worker.Attempt{Err: stillExists, MayArchive: true}, worker.Decision{Action: worker.ActArchive, Status: 404}},
		{"404 but it exists, may not", worker.Attempt{Err: stillExists}, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonNotArchived, Status: 404}},
		{"archive 403", worker.Attempt{Err: api(403), MayArchive: true, Archiving: true}, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonForbidden, Status: 403}},
		{"archive 404", worker.Attempt{Err: api(404), MayArchive: true, Archiving: true}, worker.Decision{Action: worker.ActFinish, Outcome: worker.OutcomeNotFound, Status: 404}},
		{"archive 422: not again", worker.Attempt{Err: api(422), MayArchive: true, Archiving: true}, notArchived},
		{"archive 503", worker.Attempt{Err: api(503), MayArchive: true, Archiving: true, Delivered: 1}, worker.Decision{Action: worker.ActRetry, Status: 503, Delay: time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Route(tc.a); got != tc.want {
				t.Errorf("Route = %+v, want %+v", got, tc.want)
			}
		})
	}
}
