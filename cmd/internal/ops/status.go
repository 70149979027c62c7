package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// StatusReport is what Status finds, and what `status --json` prints.
type StatusReport struct {
	Jobs        JobsStatus    `json:"jobs"`
	DeadLetters DLQStatus     `json:"dead_letters"`
	Results     ResultsStatus `json:"results"`
}

// JobsStatus is the jobs stream and the pool's consumer.
type JobsStatus struct {
	Stream string `json:"stream"`
	Exists bool   `json:"exists"`
	// Messages are the jobs stored: not yet delivered, in progress, or
	// waiting for a retry.
	Messages uint64         `json:"messages"`
	Consumer ConsumerStatus `json:"consumer"`
}

// ConsumerStatus is the durable consumer the workers share.
type ConsumerStatus struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
	// Backlog is the jobs not yet delivered to any worker.
	Backlog uint64 `json:"backlog"`
	// AckPending is the jobs delivered and not yet finished (in a worker's
	// hands, or waiting for a retry).
	AckPending int `json:"ack_pending"`
	// Redelivered is the jobs delivered more than once, not yet finished.
	Redelivered int `json:"redelivered"`
	// Waiting is the pull requests of workers waiting for jobs.
	Waiting int  `json:"waiting"`
	Paused  bool `json:"paused,omitempty"`
}

// DLQStatus is the dead letters kept, by reason.
type DLQStatus struct {
	Stream   string            `json:"stream"`
	Exists   bool              `json:"exists"`
	Total    uint64            `json:"total"`
	ByReason map[string]uint64 `json:"by_reason"`
}

// ResultsStatus is the result events kept, by outcome.
type ResultsStatus struct {
	Stream string `json:"stream"`
	Exists bool   `json:"exists"`
	// MaxAge is how long the stream keeps events: the counts cover that
	// period, not all time.
	MaxAge    string            `json:"max_age,omitempty"`
	Total     uint64            `json:"total"`
	ByOutcome map[string]uint64 `json:"by_outcome"`
}

// Status reports the jobs backlog, the dead letters by reason and the
// result events by outcome, in the streams n names. A stream or consumer
// that does not exist is reported as such, not as an error. All its calls
// together are bounded by cli.ToolTimeout.
func Status(ctx context.Context, js jetstream.JetStream, n worker.Streams) (*StatusReport, error) {
	ctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	defer cancel()
	rep := &StatusReport{
		Jobs:        JobsStatus{Stream: n.JobsStream, Consumer: ConsumerStatus{Name: n.Consumer}},
		DeadLetters: DLQStatus{Stream: n.DLQStream, ByReason: map[string]uint64{}},
		Results:     ResultsStatus{Stream: n.ResultsStream, ByOutcome: map[string]uint64{}},
	}
	// Every reason and outcome the worker knows, so that the report always
	// has them, with 0 where there are none.
	for _, r := range worker.Reasons {
		rep.DeadLetters.ByReason[string(r)] = 0
	}
	for _, o := range worker.Outcomes {
		rep.Results.ByOutcome[string(o)] = 0
	}

	jobs, err := js.Stream(ctx, n.JobsStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return nil, fmt.Errorf("stream %s: %w", n.JobsStream, err)
	default:
		rep.Jobs.Exists = true
		rep.Jobs.Messages = jobs.CachedInfo().State.Msgs
		cons, err := jobs.Consumer(ctx, n.Consumer)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			return nil, fmt.Errorf("consumer %s: %w", n.Consumer, err)
		default:
			ci := cons.CachedInfo()
			rep.Jobs.Consumer = ConsumerStatus{
				Name: n.Consumer, Exists: true,
				Backlog: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered,
				Waiting: ci.NumWaiting, Paused: ci.Paused,
			}
		}
	}

	rep.DeadLetters.Exists, rep.DeadLetters.Total, _, err = countBySubject(ctx, js, n.DLQStream, n.DLQSubject, rep.DeadLetters.ByReason)
	if err != nil {
		return nil, err
	}
	var info *jetstream.StreamInfo
	rep.Results.Exists, rep.Results.Total, info, err = countBySubject(ctx, js, n.ResultsStream, n.ResultsSubject, rep.Results.ByOutcome)
	if err != nil {
		return nil, err
	}
	if info != nil && info.Config.MaxAge > 0 {
		rep.Results.MaxAge = info.Config.MaxAge.String()
	}
	return rep, nil
}

// countBySubject adds to counts the messages of stream on each subject
// <prefix>.<token>, keyed by token.
func countBySubject(ctx context.Context, js jetstream.JetStream, stream, prefix string, counts map[string]uint64) (bool, uint64, *jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, 0, nil, nil
	}
	if err != nil {
		return false, 0, nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".>"))
	if err != nil {
		return false, 0, nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	for subj, c := range info.State.Subjects {
		counts[strings.TrimPrefix(subj, prefix+".")] += c
	}
	return true, info.State.Msgs, info, nil
}
