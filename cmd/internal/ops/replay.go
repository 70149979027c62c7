package ops

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// replayConcurrency is how many dead letters are replayed at once when no
// rate limits them.
const replayConcurrency = 4

// Replayer re-publishes dead letters as jobs and removes them.
type Replayer struct {
	jobs *Jobs
	dlq  jetstream.Stream
}

// NewReplayer looks up the jobs and dead-letter streams n names. A jobs
// stream that does not exist is ErrNoJobsStream.
func NewReplayer(ctx context.Context, js jetstream.JetStream, n worker.Streams) (*Replayer, error) {
	jobs, err := OpenJobs(ctx, js, n)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	defer cancel()
	dlq, err := js.Stream(cctx, n.DLQStream)
	if err != nil {
		return nil, err
	}
	return &Replayer{jobs: jobs, dlq: dlq}, nil
}

// ReplayOptions are how Replay goes about it.
type ReplayOptions struct {
	// PerSecond caps replays per second; 0 is no limit (a few at once).
	PerSecond int
	// ArchiveFirst marks each replayed job with Tallyfy-Archive-First:
	// true, so that a worker whose DELETER_ARCHIVE_FIRST is job archives
	// its run before deleting it. The body stays the job's bytes.
	ArchiveFirst bool
	// OnLetter, if set, hears what became of each dead letter as it is
	// finished. Calls never overlap.
	OnLetter func(ReplayReport)
}

// ReplayReport is what became of one dead letter.
type ReplayReport struct {
	Letter *DeadLetter
	// Err is why the letter was not replayed; it is kept.
	Err error
	// Duplicate says the jobs stream had the replay already, within its
	// duplicate window: an earlier replay published it, and nothing was
	// published again.
	Duplicate bool
	// JobSeq is the job's sequence in the jobs stream, once published.
	JobSeq uint64
	// RemoveErr is why the dead letter, replayed, could not be removed.
	// Replaying it again within the jobs stream's duplicate window
	// publishes nothing twice.
	RemoveErr error
}

// ReplayResult counts what Replay did. NotRemoved letters are counted in
// Replayed or Duplicates too.
type ReplayResult struct {
	Replayed, Duplicates, Failed, NotRemoved int
	// NotStarted is how many letters ctx's cancellation left alone: they
	// are kept.
	NotStarted int
}

// Replay publishes each letter's body, unchanged, to the jobs subject
// (Nats-Msg-Id: replay-<seq>, and the letter's W3C trace context, if it
// carries a valid one, as traceparent and tracestate), and deletes the
// dead letter once the jobs stream has confirmed it. letters are as ScanDeadLetters returns them;
// for a dry run, scan and do not replay. When ctx is cancelled it starts
// no more replays, and finishes those begun: a replay is two short calls,
// and stopping between them would leave a job published twice.
func (r *Replayer) Replay(ctx context.Context, letters []DeadLetter, opts ReplayOptions) ReplayResult {
	rr := &replayRun{Replayer: r, onLetter: opts.OnLetter, archiveFirst: opts.ArchiveFirst}
	limiter := rate.NewLimiter(rate.Inf, 1)
	workers := replayConcurrency
	if opts.PerSecond > 0 {
		limiter = rate.NewLimiter(rate.Limit(opts.PerSecond), 1)
		workers = min(workers, opts.PerSecond)
	}
	next := make(chan *DeadLetter)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for d := range next {
				rr.replay(d)
			}
		})
	}
	left := 0
	for i := range letters {
		if limiter.Wait(ctx) != nil {
			left = len(letters) - i
			break
		}
		select {
		case next <- &letters[i]:
		case <-ctx.Done():
			left = len(letters) - i
		}
		if left > 0 {
			break
		}
	}
	close(next)
	wg.Wait()
	rr.res.NotStarted = left
	return rr.res
}

// replayRun is one Replay's counts and its report callback.
type replayRun struct {
	*Replayer
	onLetter     func(ReplayReport)
	archiveFirst bool

	mu  sync.Mutex
	res ReplayResult
}

// replay publishes one dead letter's body to the jobs subject and, once the
// jobs stream has confirmed it, deletes the dead letter. Its Nats-Msg-Id
// makes a second replay of the same dead letter (after a failed delete,
// say) a duplicate within the jobs stream's duplicate window.
func (r *replayRun) replay(d *DeadLetter) {
	rep := ReplayReport{Letter: d}
	defer r.report(&rep)
	m := nats.NewMsg(r.jobs.subject)
	m.Data = []byte(d.Body)
	m.Header.Set(jetstream.MsgIDHeader, "replay-"+strconv.FormatUint(d.Seq, 10))
	if r.archiveFirst {
		m.Header.Set(worker.HeaderArchiveFirst, "true")
	}
	// The replayed job stays in the trace of the job it replays.
	worker.CopyTraceContext(m.Header, nats.Header(d.Headers))
	ctx, cancel := context.WithTimeout(context.Background(), cli.ToolTimeout)
	defer cancel()
	ack, err := r.jobs.js.PublishMsg(ctx, m, jetstream.WithExpectStream(r.jobs.stream))
	if err != nil {
		rep.Err = err
		return
	}
	rep.Duplicate, rep.JobSeq = ack.Duplicate, ack.Sequence
	dctx, dcancel := context.WithTimeout(context.Background(), cli.ToolTimeout)
	defer dcancel()
	if err := r.dlq.DeleteMsg(dctx, d.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		rep.RemoveErr = err
	}
}

// report counts what became of a dead letter and passes it on.
func (r *replayRun) report(rep *ReplayReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case rep.Err != nil:
		r.res.Failed++
	case rep.Duplicate:
		r.res.Duplicates++
	default:
		r.res.Replayed++
	}
	if rep.RemoveErr != nil {
		r.res.NotRemoved++
	}
	if r.onLetter != nil {
		r.onLetter(*rep)
	}
}
