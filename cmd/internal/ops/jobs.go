package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// ErrNoJobsStream means the jobs stream does not exist: no worker has
// created it yet, and there is nowhere to publish jobs to.
var ErrNoJobsStream = errors.New("the jobs stream does not exist")

// noJobsStreamError is ErrNoJobsStream for one stream, saying what to do.
type noJobsStreamError struct{ name string }

func (e *noJobsStreamError) Error() string {
	return "the jobs stream " + e.name + " does not exist: start a worker (it creates the streams), or create it"
}

func (e *noJobsStreamError) Is(target error) bool { return target == ErrNoJobsStream }

func noJobsStream(name string) error { return &noJobsStreamError{name: name} }

// Jobs is the jobs stream, looked up, for Enqueue to publish to.
type Jobs struct {
	js      jetstream.JetStream
	subject string
	stream  string
	// DuplicateWindow is how long the stream remembers a Nats-Msg-Id: a
	// job enqueued again within it is a duplicate, not stored twice.
	DuplicateWindow time.Duration
}

// OpenJobs looks up the jobs stream n names. A stream that does not exist
// is ErrNoJobsStream.
func OpenJobs(ctx context.Context, js jetstream.JetStream, n worker.Streams) (*Jobs, error) {
	sctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	stream, err := js.Stream(sctx, n.JobsStream)
	cancel()
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, noJobsStream(n.JobsStream)
	}
	if err != nil {
		return nil, fmt.Errorf("jobs stream %s: %w", n.JobsStream, err)
	}
	return &Jobs{js: js, subject: n.JobsSubject, stream: n.JobsStream, DuplicateWindow: stream.CachedInfo().Config.Duplicates}, nil
}
