package ops

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// enqueueWindow is how many publishes may wait for their ack at once:
// enough to keep the server busy, few enough that an interrupt loses
// nothing.
const enqueueWindow = 256

// MaxPublishFailures stops an enqueue that fails to publish so often that
// something is wrong with the stream, not the lines.
const MaxPublishFailures = 100

// ErrTooManyFailures is why an enqueue stopped after MaxPublishFailures
// failed publishes.
var ErrTooManyFailures = errors.New("too many publishes failed")

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// EnqueueOptions are what Enqueue does with the lines it reads.
type EnqueueOptions struct {
	// Jobs is where valid jobs are published. Nil only validates the lines
	// (enqueue --check), and needs no NATS.
	Jobs *Jobs
	// DefaultOrg is the organization of jobs that name none (TALLYFY_ORG_ID).
	DefaultOrg string
	// OnLine, if set, hears what became of each line once that is known: a
	// published line once its ack has come. Calls never overlap.
	OnLine func(LineReport)
}

// LineStatus is what became of one line.
type LineStatus int

const (
	LineSkipped   LineStatus = iota // blank, a '#' comment or a CSV header
	LineRejected                    // not a valid job; nothing published
	LineValid                       // a valid job, and no Jobs to publish it to
	LinePublished                   // published and stored
	LineDuplicate                   // published, and already stored within the duplicate window
	LineFailed                      // a valid job whose publish failed
)

// LineReport is what became of one line.
type LineReport struct {
	N      int // from 1: the line (or argument) number
	Status LineStatus
	Job    worker.Job // when the line is a valid job
	Err    error      // why, when LineRejected or LineFailed
}

// EnqueueResult counts the lines. Valid is every valid job, published or
// not; the others count publishes.
type EnqueueResult struct {
	Valid, Rejected               int
	Published, Duplicates, Failed int
}

// StoppedError says why Enqueue stopped before the end of its source:
// ctx was cancelled (Err is ctx.Err()), MaxPublishFailures publishes
// failed (ErrTooManyFailures), or reading the source failed (its error).
// At is the first line (or argument) not read.
type StoppedError struct {
	At  int
	Err error
}

func (e *StoppedError) Error() string {
	return fmt.Sprintf("stopped at line %d: %v", e.At, e.Err)
}

func (e *StoppedError) Unwrap() error { return e.Err }

// Enqueue reads src to its end, validates each line as the worker would
// (parseJobLine), and publishes the valid jobs to opts.Jobs as canonical
// JSON with Nats-Msg-Id enqueueMsgID, so that a job enqueued twice within
// the stream's duplicate window is stored once. A line that is not a valid
// job is reported and not published. Publishes are asynchronous, a few
// hundred awaiting their acks at most; Enqueue returns once every ack has
// come or failed. It returns a *StoppedError if it stopped before the end
// of src; the result counts what it did until then.
func Enqueue(ctx context.Context, src Source, opts EnqueueOptions) (EnqueueResult, error) {
	run := &enqueueRun{onLine: opts.OnLine}
	var pub *publisher
	if opts.Jobs != nil {
		pub = newPublisher(opts.Jobs, run.report)
	}
	lines := readLines(ctx.Done(), src)
	var stop error
	for n := 1; ; n++ {
		if pub != nil && run.failures() >= MaxPublishFailures {
			stop = &StoppedError{At: n, Err: ErrTooManyFailures}
			break
		}
		var in sourceLine
		select {
		case in = <-lines:
		case <-ctx.Done():
			stop = &StoppedError{At: n, Err: ctx.Err()}
		}
		if stop != nil || in.err == io.EOF {
			break
		}
		if in.err != nil {
			stop = &StoppedError{At: n, Err: in.err}
			break
		}
		if n == 1 {
			in.line = bytes.TrimPrefix(in.line, utf8BOM)
		}
		job, skip, err := parseSourceLine(in, opts.DefaultOrg)
		switch {
		case skip:
			run.report(LineReport{N: n, Status: LineSkipped})
		case err != nil:
			run.report(LineReport{N: n, Status: LineRejected, Err: err})
		case pub == nil:
			run.report(LineReport{N: n, Status: LineValid, Job: job})
		default:
			run.countValid()
			pub.publish(n, job)
		}
	}
	if pub != nil {
		pub.finish()
	}
	return run.res, stop
}

// enqueueRun is one Enqueue's counts and its report callback.
type enqueueRun struct {
	onLine func(LineReport)
	mu     sync.Mutex
	res    EnqueueResult
}

func (r *enqueueRun) report(rep LineReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch rep.Status {
	case LineRejected:
		r.res.Rejected++
	case LineValid:
		r.res.Valid++
	case LinePublished:
		r.res.Published++
	case LineDuplicate:
		r.res.Duplicates++
	case LineFailed:
		r.res.Failed++
	}
	if r.onLine != nil {
		r.onLine(rep)
	}
}

// countValid counts a valid job handed to the publisher, whose report
// comes with its ack.
func (r *enqueueRun) countValid() {
	r.mu.Lock()
	r.res.Valid++
	r.mu.Unlock()
}

func (r *enqueueRun) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.res.Failed
}

func parseSourceLine(in sourceLine, defaultOrg string) (worker.Job, bool, error) {
	if in.tooLong {
		return worker.Job{}, false, errTooLong()
	}
	return parseJobLine(in.line, defaultOrg)
}

func errTooLong() error { return fmt.Errorf("longer than %d bytes", worker.MaxJobSize) }

// parseJobLine reads one line (or argument): a JSON object or a CSV line
// org_id,run_id[,request_id] (an empty org_id means defaultOrg). skip is
// true for blank lines, comments and a CSV header. A job is validated by
// the worker's own rules, so that what it would dead-letter as invalid_job
// is refused here instead.
func parseJobLine(line []byte, defaultOrg string) (job worker.Job, skip bool, err error) {
	if len(line) > worker.MaxJobSize {
		return job, false, errTooLong()
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] == '#' {
		return job, true, nil
	}
	if line[0] == '{' {
		job, err = worker.DecodeJob(line, defaultOrg)
		return job, false, err
	}
	r := csv.NewReader(bytes.NewReader(line))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	rec, err := r.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return job, false, fmt.Errorf("neither a JSON object nor a CSV line: %v", err)
	}
	for i := range rec {
		rec[i] = strings.TrimSpace(rec[i])
	}
	if isCSVHeader(rec) {
		return job, true, nil
	}
	if len(rec) < 2 || len(rec) > 3 {
		return job, false, fmt.Errorf("%d CSV fields: want org_id,run_id[,request_id]", len(rec))
	}
	requestID := ""
	if len(rec) == 3 {
		requestID = rec[2]
	}
	job, err = jobOf(rec[0], rec[1], requestID, defaultOrg)
	return job, false, err
}

// jobOf is the job of these fields ("" leaves a field out), validated
// exactly as the worker validates a job body: written as one and decoded.
func jobOf(org, run, requestID, defaultOrg string) (worker.Job, error) {
	fields := map[string]string{"run_id": run}
	if org != "" {
		fields["org_id"] = org
	}
	if requestID != "" {
		fields["request_id"] = requestID
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return worker.Job{}, err
	}
	return worker.DecodeJob(body, defaultOrg)
}

func isCSVHeader(rec []string) bool {
	want := []string{"org_id", "run_id", "request_id"}
	if len(rec) < 2 || len(rec) > 3 {
		return false
	}
	for i, f := range rec {
		if !strings.EqualFold(f, want[i]) {
			return false
		}
	}
	return true
}

// enqueueMsgID is the Nats-Msg-Id of a job: the same job enqueued twice
// within the jobs stream's duplicate window is stored once.
func enqueueMsgID(j worker.Job) string {
	sum := sha256.Sum256([]byte(j.OrgID + "\x00" + j.RunID + "\x00" + j.RequestID))
	return "enqueue-" + hex.EncodeToString(sum[:])[:32]
}

// publisher publishes jobs asynchronously, at most enqueueWindow waiting
// for their acks, and reports what the acks say.
type publisher struct {
	jobs    *Jobs
	report  func(LineReport)
	pending chan pendingPublish
	done    chan struct{}
}

type pendingPublish struct {
	n   int
	job worker.Job
	fut jetstream.PubAckFuture
	err error
}

func newPublisher(jobs *Jobs, report func(LineReport)) *publisher {
	p := &publisher{jobs: jobs, report: report, pending: make(chan pendingPublish, enqueueWindow), done: make(chan struct{})}
	go p.collect()
	return p
}

// publish sends one job; its ack is awaited by collect. It blocks while
// the window is full.
func (p *publisher) publish(n int, job worker.Job) {
	body, err := json.Marshal(job)
	if err != nil {
		p.pending <- pendingPublish{n: n, job: job, err: err}
		return
	}
	m := nats.NewMsg(p.jobs.subject)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, enqueueMsgID(job))
	fut, err := p.jobs.js.PublishMsgAsync(m, jetstream.WithExpectStream(p.jobs.stream))
	p.pending <- pendingPublish{n: n, job: job, fut: fut, err: err}
}

// collect waits for the acks in publishing order. Every future ends with an
// ack or an error: the JetStream context gives up on an ack after its
// publish-async timeout (cli.ToolConnect sets one), and on a lost
// connection at once.
func (p *publisher) collect() {
	defer close(p.done)
	for pp := range p.pending {
		rep := LineReport{N: pp.n, Job: pp.job, Status: LinePublished, Err: pp.err}
		if rep.Err == nil {
			select {
			case ack := <-pp.fut.Ok():
				if ack.Duplicate {
					rep.Status = LineDuplicate
				}
			case rep.Err = <-pp.fut.Err():
			}
		}
		if rep.Err != nil {
			rep.Status = LineFailed
		}
		p.report(rep)
	}
}

// finish waits for the acks of everything published.
func (p *publisher) finish() {
	close(p.pending)
	<-p.done
}
