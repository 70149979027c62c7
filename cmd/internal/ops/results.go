package ops

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// ErrNoResultsStream means the results stream does not exist: no worker
// has created it yet, or the tool is looking for it under another name.
var ErrNoResultsStream = errors.New("the results stream does not exist")

// noResultsStreamError is ErrNoResultsStream for one stream, saying what
// to do.
type noResultsStreamError struct{ name string }

func (e *noResultsStreamError) Error() string {
	return "the results stream " + e.name + " does not exist: start a worker (it creates the streams), or point DELETER_RESULTS_STREAM (--results-stream) at the stream the workers write to"
}

func (e *noResultsStreamError) Is(target error) bool { return target == ErrNoResultsStream }

// ClockSlack is how far an event's `at` (the worker's clock, when the job
// finished) may be ahead of the time the stream stored it: a worker whose
// clock runs ahead of the server's. A scan with a Since starts reading this
// much before it, by the stored time, so that no event whose `at` is inside
// the window is missed. An Until does not stop the scan early: in a stream
// that sources the results stream (a longer-kept copy), an event is stored
// when it is copied, which can be long after its `at`.
const ClockSlack = 10 * time.Minute

// ResultsQuery selects result events. Its conditions combine; the zero
// value selects every event the results stream keeps.
type ResultsQuery struct {
	RequestID string
	Org       string
	Run       string
	// Outcome is one of worker.Outcomes; the stream is read on that
	// outcome's subject only.
	Outcome string
	// Since (included) and Until (excluded) bound the event's At (the
	// stored time, for an event without one); zero is no bound.
	Since, Until time.Time
}

// Match says whether q selects ev; ScanResults has already checked the
// outcome, by subject.
func (q ResultsQuery) Match(ev *ResultEvent) bool {
	switch {
	case q.RequestID != "" && ev.RequestID != q.RequestID,
		q.Org != "" && ev.OrgID != q.Org,
		q.Run != "" && ev.RunID != q.Run,
		!q.Since.IsZero() && ev.At.Before(q.Since),
		!q.Until.IsZero() && !ev.At.Before(q.Until):
		return false
	}
	return true
}

// ResultEvent is one result event as the results stream keeps it.
type ResultEvent struct {
	// Seq is the event's sequence in the results stream.
	Seq uint64
	// Stored is when the stream stored it.
	Stored time.Time
	// Result is the event decoded. Outcome is the subject's last token when
	// the event names none; At is Stored when the event has none.
	worker.Result
	// Raw is the event's JSON as stored, on one line (compacted if it was
	// not). It is not shared: it may be kept.
	Raw []byte
}

// DecodeResult decodes one stored event into ev.Result; subjectOutcome is
// the last token of its subject, stored the time the stream stored it.
// It reports false for a body that is not a JSON object of an event's
// shape (not JSON, or a field of the wrong type): such an event is counted,
// not shown. Unknown fields are ignored.
func DecodeResult(ev *ResultEvent, data []byte, subjectOutcome string, stored time.Time) bool {
	ev.Stored, ev.Result, ev.Raw = stored, worker.Result{}, nil
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return false
	}
	if err := json.Unmarshal(data, &ev.Result); err != nil {
		return false
	}
	if bytes.ContainsAny(data, "\r\n") {
		var b bytes.Buffer
		if json.Compact(&b, data) == nil {
			data = b.Bytes()
		}
	}
	ev.Raw = data
	if ev.Outcome == "" {
		ev.Outcome = worker.Outcome(subjectOutcome)
	}
	if ev.At.IsZero() {
		ev.At = stored
	}
	return true
}

// ResultsScan is what ScanResults read.
type ResultsScan struct {
	Stream string
	// MaxAge is how long the stream keeps events (0: no limit): nothing
	// older can be found.
	MaxAge time.Duration
	// Oldest is when the oldest event the stream keeps was stored (zero
	// when it keeps none).
	Oldest time.Time
	// Read is how many events were read: those of the outcome's subject,
	// from the start of the time window on; Matched how many of them the
	// query selected.
	Read, Matched int
	// Invalid is how many of those read are not a JSON object of an
	// event's shape; InvalidSeqs are the sequences of the first
	// maxInvalidSeqs of them.
	Invalid     int
	InvalidSeqs []uint64
}

// maxInvalidSeqs bounds ResultsScan.InvalidSeqs.
const maxInvalidSeqs = 10

// ScanOptions are what ScanResults does with what it reads.
type ScanOptions struct {
	// OnEvent hears each event the query selects, in stream order. The
	// event may be kept. An error ends the scan, and ScanResults returns
	// it.
	OnEvent func(*ResultEvent) error
	// OnProgress, if set, hears now and then how many events have been
	// read, of about total (what the stream held for the scan when it
	// started). Calls never overlap with each other or with OnEvent.
	OnProgress func(read, total int)
}

// readBatch is how many events the client asks for at once.
const readBatch = 1000

// progressEvery is how often, in events read, OnProgress is called.
const progressEvery = 1024

// scanIdle is how long a scan waits for the next event before it asks the
// server whether any is left (events can expire during a scan).
const scanIdle = time.Second

// ScanResults reads the result events of the results stream that n names
// and that q selects, oldest first, without consuming or changing them:
// it reads them with an ordered consumer (ephemeral, in memory, no acks),
// which it deletes when it is done. It reads only the events stored when
// it starts. A stream that does not exist is ErrNoResultsStream.
func ScanResults(ctx context.Context, js jetstream.JetStream, n worker.Streams, q ResultsQuery, opts ScanOptions) (*ResultsScan, error) {
	cctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	defer cancel()
	stream, err := js.Stream(cctx, n.ResultsStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, &noResultsStreamError{name: n.ResultsStream}
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", n.ResultsStream, err)
	}
	info := stream.CachedInfo()
	res := &ResultsScan{Stream: n.ResultsStream, MaxAge: info.Config.MaxAge}
	if info.State.Msgs == 0 {
		return res, nil
	}
	res.Oldest = info.State.FirstTime
	sc := &resultScanner{
		q: q, opts: opts, res: res, last: info.State.LastSeq, prefix: n.ResultsSubject + ".",
	}
	if err := sc.run(ctx, cctx, stream); err != nil {
		return nil, err
	}
	return res, nil
}

// resultScanner is one ScanResults.
type resultScanner struct {
	q      ResultsQuery
	opts   ScanOptions
	res    *ResultsScan
	last   uint64 // the stream's last sequence when the scan started
	prefix string // of the results subjects
}

// run reads the stream. cctx bounds the set-up calls; ctx, the reading.
func (sc *resultScanner) run(ctx, cctx context.Context, stream jetstream.Stream) error {
	name := sc.res.Stream
	filter := sc.prefix + ">"
	if sc.q.Outcome != "" {
		filter = sc.prefix + sc.q.Outcome
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Deleted when the scan ends; this is for a scan that is killed.
		InactiveThreshold: 30 * time.Second,
	}
	if !sc.q.Since.IsZero() {
		start := sc.q.Since.Add(-ClockSlack)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
	}
	cons, err := stream.OrderedConsumer(cctx, cfg)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", name, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(readBatch))
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", name, err)
	}
	ci := cons.CachedInfo()
	defer func() {
		it.Stop()
		if ci == nil {
			return
		}
		// Not on ctx: an interrupted scan cleans up too.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cli.ToolTimeout)
		defer cancel()
		if cur := cons.CachedInfo(); cur != nil {
			ci = cur // the ordered consumer was recreated
		}
		_ = stream.DeleteConsumer(dctx, ci.Name)
	}()
	if ci == nil || ci.NumPending == 0 {
		return nil
	}
	total := int(ci.NumPending)
	w := newWaiter(ctx, cons, it)
	defer w.stop()
	var ev *ResultEvent
	var seq uint64
	for {
		m, err := w.next(seq)
		if errors.Is(err, errScanEnd) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		seq = meta.Sequence.Stream
		if seq > sc.last {
			break
		}
		sc.res.Read++
		if ev == nil {
			ev = &ResultEvent{}
		}
		ev.Seq = seq
		if !DecodeResult(ev, m.Data(), strings.TrimPrefix(m.Subject(), sc.prefix), meta.Timestamp) {
			sc.res.Invalid++
			if len(sc.res.InvalidSeqs) < maxInvalidSeqs {
				sc.res.InvalidSeqs = append(sc.res.InvalidSeqs, seq)
			}
		} else if sc.q.Match(ev) {
			sc.res.Matched++
			if sc.opts.OnEvent != nil {
				if err := sc.opts.OnEvent(ev); err != nil {
					return err
				}
			}
			ev = nil // the callback may keep it
		}
		if sc.opts.OnProgress != nil && sc.res.Read%progressEvery == 0 {
			sc.opts.OnProgress(sc.res.Read, max(total, sc.res.Read))
		}
		if seq == sc.last || meta.NumPending == 0 {
			break
		}
	}
	if sc.opts.OnProgress != nil {
		sc.opts.OnProgress(sc.res.Read, sc.res.Read)
	}
	return nil
}

// RequestSummary is how the jobs of one request ended, as `results
// --summary --json` prints it. A job is one job_seq: when the stream holds
// several events of one job (it should not: they are de-duplicated), the
// last one counts.
type RequestSummary struct {
	// RequestID is the jobs' request_id; "" for jobs that had none.
	RequestID string `json:"request_id"`
	Jobs      int    `json:"jobs"`
	// Deleted and NotFound both mean the run is gone (a redelivered job
	// whose first delivery deleted the run ends not_found).
	Deleted      int `json:"deleted"`
	NotFound     int `json:"not_found"`
	DeadLettered int `json:"dead_lettered"`
	// ByReason is DeadLettered by reason, every known reason present.
	ByReason map[string]int `json:"dead_lettered_by_reason"`
	DryRun   int            `json:"dry_run"`
	// Other is jobs of an outcome this version does not know.
	Other int `json:"other"`
	// Resolved is jobs that did not end with their run gone, but whose run
	// another job of the same request removed: a dead letter replayed
	// (`dlq replay` makes a new job), a dry run done again for real.
	Resolved int `json:"resolved"`
	// Complete says every job ended with its run gone, or is Resolved.
	Complete bool `json:"complete"`
	// First and Last are the earliest and latest `at` of the jobs' last
	// events.
	First time.Time `json:"first_at"`
	Last  time.Time `json:"last_at"`
}

// Summary gathers events into RequestSummary values: Add each event, then
// call Requests. It is not safe for concurrent use.
type Summary struct {
	jobs map[jobKey]jobEnd
}

// jobKey is a job: its job_seq, or for an event without one (which a
// worker never writes) the event's own sequence.
type jobKey struct {
	seq      uint64
	eventSeq bool
}

// jobEnd is the last event of one job, as much of it as Summary needs.
type jobEnd struct {
	request, org, run string
	outcome           worker.Outcome
	reason            worker.Reason
	at                time.Time
}

// NewSummary returns an empty Summary.
func NewSummary() *Summary { return &Summary{jobs: map[jobKey]jobEnd{}} }

// Add counts ev, which replaces any event of the same job added before.
// Events are to be added in stream order.
func (s *Summary) Add(ev *ResultEvent) {
	k := jobKey{seq: ev.JobSeq}
	if ev.JobSeq == 0 {
		k = jobKey{seq: ev.Seq, eventSeq: true}
	}
	s.jobs[k] = jobEnd{
		request: ev.RequestID, org: ev.OrgID, run: ev.RunID,
		outcome: ev.Outcome, reason: ev.Reason, at: ev.At,
	}
}

// Requests returns one summary per request ID, the request with the
// earliest event first.
func (s *Summary) Requests() []RequestSummary {
	type runKey struct{ org, run string }
	byID := map[string]*RequestSummary{}
	gone := map[string]map[runKey]bool{}
	for _, j := range s.jobs {
		r := byID[j.request]
		if r == nil {
			r = &RequestSummary{RequestID: j.request, ByReason: map[string]int{}, First: j.at, Last: j.at}
			for _, reason := range worker.Reasons {
				r.ByReason[string(reason)] = 0
			}
			byID[j.request] = r
			gone[j.request] = map[runKey]bool{}
		}
		r.Jobs++
		if j.at.Before(r.First) {
			r.First = j.at
		}
		if j.at.After(r.Last) {
			r.Last = j.at
		}
		switch j.outcome {
		case worker.OutcomeDeleted:
			r.Deleted++
		case worker.OutcomeNotFound:
			r.NotFound++
		case worker.OutcomeDeadLettered:
			r.DeadLettered++
			r.ByReason[string(j.reason)]++
		case worker.OutcomeDryRun:
			r.DryRun++
		default:
			r.Other++
		}
		if runGone(j.outcome) && j.run != "" {
			gone[j.request][runKey{j.org, j.run}] = true
		}
	}
	outstanding := map[string]int{}
	for _, j := range s.jobs {
		switch {
		case runGone(j.outcome):
		case j.run != "" && gone[j.request][runKey{j.org, j.run}]:
			byID[j.request].Resolved++
		default:
			outstanding[j.request]++
		}
	}
	out := make([]RequestSummary, 0, len(byID))
	for id, r := range byID {
		r.Complete = outstanding[id] == 0
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b RequestSummary) int {
		return cmp.Or(a.First.Compare(b.First), strings.Compare(a.RequestID, b.RequestID))
	})
	return out
}

// runGone says whether a job that ended with o left its run gone.
func runGone(o worker.Outcome) bool {
	return o == worker.OutcomeDeleted || o == worker.OutcomeNotFound
}
