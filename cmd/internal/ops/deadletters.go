package ops

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Filter selects dead letters. Its conditions combine; the zero value
// selects every dead letter.
type Filter struct {
	Reason string
	Org    string
	Seqs   []uint64 // nil: any
	Limit  int      // 0: no limit
}

// Narrowed says whether a reason, an organization or sequence numbers
// narrow the selection; without, it is every dead letter (up to Limit).
func (f Filter) Narrowed() bool { return f.Reason != "" || f.Org != "" || f.Seqs != nil }

// DeadLetter is one message of the dead-letter stream, as `dlq ls --json`
// prints it.
type DeadLetter struct {
	Seq              uint64              `json:"seq"`
	Subject          string              `json:"subject"`
	Reason           string              `json:"reason"`
	Status           int                 `json:"status,omitempty"`
	OrgID            string              `json:"org_id,omitempty"`
	RunID            string              `json:"run_id,omitempty"`
	Attempts         int                 `json:"attempts,omitempty"`
	JobSeq           uint64              `json:"job_seq,omitempty"`
	Worker           string              `json:"worker,omitempty"`
	TallyfyRequestID string              `json:"tallyfy_request_id,omitempty"`
	Error            string              `json:"error,omitempty"`
	Time             time.Time           `json:"time"`
	Headers          map[string][]string `json:"headers"`
	// Body is the job's bytes, unchanged: what a replay publishes.
	Body string `json:"body"`
	// BodyBase64 is set when the body is not UTF-8 (an invalid job), since
	// Body then cannot hold it exactly in JSON.
	BodyBase64 string `json:"body_base64,omitempty"`
}

func newDeadLetter(seq uint64, subject string, h nats.Header, data []byte, at time.Time, prefix string) DeadLetter {
	d := DeadLetter{
		Seq: seq, Subject: subject, Time: at.UTC(),
		Reason:           h.Get(worker.HeaderReason),
		OrgID:            h.Get(worker.HeaderOrgID),
		RunID:            h.Get(worker.HeaderRunID),
		Worker:           h.Get(worker.HeaderWorker),
		TallyfyRequestID: h.Get(worker.HeaderRequestID),
		Error:            h.Get(worker.HeaderError),
		Headers:          map[string][]string(h),
		Body:             string(data),
	}
	if d.Headers == nil {
		d.Headers = map[string][]string{}
	}
	if d.Reason == "" {
		d.Reason = strings.TrimPrefix(subject, prefix+".")
	}
	d.Status, _ = strconv.Atoi(h.Get(worker.HeaderStatus))
	d.Attempts, _ = strconv.Atoi(h.Get(worker.HeaderAttempts))
	d.JobSeq, _ = strconv.ParseUint(h.Get(worker.HeaderJobSeq), 10, 64)
	if d.OrgID == "" || d.RunID == "" {
		// Only the IDs the job body holds validly: DecodeJob keeps those
		// even when it rejects the job.
		job, _ := worker.DecodeJob(data, "")
		if d.OrgID == "" {
			d.OrgID = job.OrgID
		}
		if d.RunID == "" {
			d.RunID = job.RunID
		}
	}
	if !utf8.Valid(data) {
		d.BodyBase64 = base64.StdEncoding.EncodeToString(data)
	}
	return d
}

// Scan is what ScanDeadLetters found.
type Scan struct {
	// Exists is false when the dead-letter stream is not created yet.
	Exists  bool
	Letters []DeadLetter
	// Matching is how many dead letters match, when known (the count of
	// the subject filter, when no Org or Seqs narrows it); -1 otherwise.
	Matching int
	More     bool     // the limit left some out
	Missing  []uint64 // Seqs that are no dead letter
}

// ScanDeadLetters reads the dead letters f selects, oldest first, without
// consuming or changing anything. It considers only those stored when it
// starts: a job that a replay sends back to the dead-letter stream is not
// picked up again.
func ScanDeadLetters(ctx context.Context, js jetstream.JetStream, n worker.Streams, f Filter) (*Scan, error) {
	sc := &scanner{n: n, f: f, res: &Scan{Matching: -1}}
	cctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	defer cancel()
	stream, err := js.Stream(cctx, n.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return sc.res, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", n.DLQStream, err)
	}
	sc.res.Exists = true
	if f.Seqs != nil {
		err = sc.bySeq(ctx, stream)
	} else {
		err = sc.bySubject(ctx, cctx, stream)
	}
	if err != nil {
		return nil, err
	}
	return sc.res, nil
}

// scanner is one ScanDeadLetters.
type scanner struct {
	n   worker.Streams
	f   Filter
	res *Scan
}

// keep adds d to the result if the filter selects it and the limit allows.
func (sc *scanner) keep(d DeadLetter) bool {
	f, res := sc.f, sc.res
	if f.Reason != "" && d.Reason != f.Reason {
		return false
	}
	if f.Org != "" && d.OrgID != f.Org {
		return false
	}
	if f.Limit > 0 && len(res.Letters) == f.Limit {
		res.More = true
		return false
	}
	res.Letters = append(res.Letters, d)
	return true
}

// bySeq reads the dead letters of the filter's sequence numbers, in their
// order.
func (sc *scanner) bySeq(ctx context.Context, stream jetstream.Stream) error {
	for _, seq := range sc.f.Seqs {
		gctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
		m, err := stream.GetMsg(gctx, seq)
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			sc.res.Missing = append(sc.res.Missing, seq)
			continue
		}
		if err != nil {
			return fmt.Errorf("dead letter %d: %w", seq, err)
		}
		sc.keep(newDeadLetter(m.Sequence, m.Subject, m.Header, m.Data, m.Time, sc.n.DLQSubject))
	}
	return nil
}

// bySubject reads the dead letters of the filter's reason (or all) with
// an ordered consumer, up to the last stored when it starts. cctx bounds
// the set-up calls; ctx, the reading.
func (sc *scanner) bySubject(ctx, cctx context.Context, stream jetstream.Stream) error {
	n, res := sc.n, sc.res
	filter := n.DLQSubject + ".>"
	if sc.f.Reason != "" {
		filter = n.DLQSubject + "." + sc.f.Reason
	}
	info, err := stream.Info(cctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return fmt.Errorf("stream %s: %w", n.DLQStream, err)
	}
	var count uint64
	for _, c := range info.State.Subjects {
		count += c
	}
	if sc.f.Org == "" {
		res.Matching = int(count)
	}
	if count == 0 {
		return nil
	}
	last := info.State.LastSeq
	cons, err := stream.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
	}
	defer it.Stop()
	w := newWaiter(ctx, cons, it)
	defer w.stop()
	var seen uint64
	for {
		m, err := w.next(seen)
		if errors.Is(err, errScanEnd) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
		}
		if meta.Sequence.Stream > last {
			return nil
		}
		seen = meta.Sequence.Stream
		if !sc.keep(newDeadLetter(meta.Sequence.Stream, m.Subject(), m.Headers(), m.Data(), meta.Timestamp, n.DLQSubject)) && res.More {
			return nil
		}
		if meta.NumPending == 0 || meta.Sequence.Stream == last {
			return nil
		}
	}
}
