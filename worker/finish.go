package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// Result is the event published once per job on
// <results subject>.<outcome>.
type Result struct {
	OrgID     string  `json:"org_id,omitempty"`
	RunID     string  `json:"run_id,omitempty"`
	RequestID string  `json:"request_id,omitempty"`
	Outcome   Outcome `json:"outcome"`
	Reason    Reason  `json:"reason,omitempty"`
	Status    int     `json:"status,omitempty"`
	// Error says what went wrong, for dead-lettered jobs.
	Error string `json:"error,omitempty"`
	// TallyfyRequestID is Tallyfy's X-Request-Id, for its support.
	TallyfyRequestID string `json:"tallyfy_request_id,omitempty"`
	// Archived says that a worker archived the run before deleting it (see
	// Config.ArchiveFirst), at ArchivedAt (RFC 3339).
	Archived   bool      `json:"archived,omitempty"`
	ArchivedAt string    `json:"archived_at,omitempty"`
	Attempts   int       `json:"attempts"`
	JobSeq     uint64    `json:"job_seq"`
	Worker     string    `json:"worker"`
	At         time.Time `json:"at"`
	// TraceID is the W3C trace-id of the job's trace context (32 hex
	// digits), when it has one: see HeaderTraceparent.
	TraceID string `json:"trace_id,omitempty"`
}

// Dead-letter headers: the public contract of the README.
const (
	HeaderReason    = "Tallyfy-Dlq-Reason"
	HeaderStatus    = "Tallyfy-Status"
	HeaderError     = "Tallyfy-Error"
	HeaderRequestID = "Tallyfy-Request-Id"
	HeaderAttempts  = "Tallyfy-Attempts"
	HeaderJobSeq    = "Tallyfy-Job-Seq"
	HeaderOrgID     = "Tallyfy-Org-Id"
	HeaderRunID     = "Tallyfy-Run-Id"
	HeaderWorker    = "Tallyfy-Worker"
	// HeaderArchiveFirst on a job asks for its run to be archived first
	// (with Config.ArchiveFirst ArchiveJob).
	HeaderArchiveFirst = "Tallyfy-Archive-First"
	// HeaderArchivedAt says when a worker archived the job's run: on a
	// dead letter, and on a copy a worker handed back (see returnJob).
	HeaderArchivedAt = "Tallyfy-Archived-At"
)

// maxErrorHeader bounds Tallyfy-Error.
const maxErrorHeader = 1024

// publishRetries are the pauses between tries of one publish; the job's
// ack wait is kept alive meanwhile by the heartbeat.
var publishRetries = []time.Duration{200 * time.Millisecond, time.Second, 3 * time.Second}

// finish gives t's job the outcome d. Its dead letter, if it has one, is
// published and confirmed here; its result event is published without
// waiting, and the pending record returned for a confirmer (see confirm) to
// ack the job once JetStream has confirmed the event, while the slot goes
// on to its next job. It returns nil when the job is done with here: its
// record could not be published, and it was nak'd with a delay (see
// recordFailed). Never acked without its record, never lost.
func (w *Worker) finish(t *task, job Job, d Decision, resp *tallyfy.Response, cause error) *pending {
	res := w.result(t, job, d, resp, cause)
	if res.Outcome == OutcomeDeadLettered {
		if err := w.publish(t.hard, w.deadLetter(t.th, t.msg.Data(), res)); err != nil {
			w.recordFailed(t, job, &recordError{kind: kindDeadLetter, err: err})
			return nil
		}
	}
	m, err := w.resultMsg(t.th, res)
	if err != nil {
		w.recordFailed(t, job, &recordError{kind: kindResult, err: err})
		return nil
	}
	p := &pending{t: t, job: job, d: d, res: res, msg: m}
	// Refused at once (the connection closed, too many publishes
	// pending): the confirmer publishes it again, waiting.
	p.ack, _ = w.js.PublishMsgAsync(m)
	return p
}

// recordFailed hands back a job whose record JetStream did not confirm.
func (w *Worker) recordFailed(t *task, job Job, err *recordError) {
	t.traceLeft("nak", 0, err)
	w.cfg.Metrics.PublishFailed(err.kind)
	w.publishFailed(t, job, err)
}

// acked says that a job whose record is confirmed was acked: err says why
// its ack was not confirmed, if it was not.
func (w *Worker) acked(t *task, job Job, d Decision, res Result, err error) {
	if err != nil {
		// The outcome is recorded; a redelivery finds the run gone and its
		// event is dropped as a duplicate.
		w.cfg.Metrics.PublishFailed(kindAck)
		w.jobLog(w.log.Warn(), t, job).Err(err).Msg("ack not confirmed; a redelivery will be de-duplicated")
	}
	w.cfg.Metrics.JobFinished(d.Outcome, d.Reason, time.Since(t.meta.Timestamp))

	ev := w.log.Info()
	if d.Outcome == OutcomeDeadLettered {
		ev = w.log.Warn()
	}
	ev = w.jobLog(ev, t, job).Str("outcome", string(d.Outcome))
	if d.Reason != "" {
		ev = ev.Str("reason", string(d.Reason))
	}
	if res.Status != 0 {
		ev = ev.Int("status", res.Status)
	}
	if res.TallyfyRequestID != "" {
		ev = ev.Str("tallyfy_request_id", res.TallyfyRequestID)
	}
	if res.Archived {
		ev = ev.Bool("archived", true)
	}
	if res.Error != "" {
		ev = ev.Str("error", res.Error)
	}
	t.traceFinished(res)
	ev.Msg("job finished")
}

// result is the record of t's job ending as d says; resp and cause are
// what its last call, if any, gave.
func (w *Worker) result(t *task, job Job, d Decision, resp *tallyfy.Response, cause error) Result {
	res := Result{
		OrgID:     job.OrgID,
		RunID:     job.RunID,
		RequestID: job.RequestID,
		Outcome:   d.Outcome,
		Reason:    d.Reason,
		Status:    d.Status,
		Attempts:  t.attempts(),
		JobSeq:    t.seq,
		Worker:    w.cfg.WorkerID,
		At:        time.Now().UTC(),
	}
	if resp != nil {
		res.Status = resp.StatusCode
		res.TallyfyRequestID = resp.RequestID
	}
	if t.archivedAt != "" {
		res.Archived, res.ArchivedAt = true, t.archivedAt
	}
	if t.tc.HasTraceID() {
		res.TraceID = t.tc.TraceID().String()
	}
	var apiErr *tallyfy.APIError
	if errors.As(cause, &apiErr) {
		res.TallyfyRequestID = apiErr.RequestID
	}
	if d.Outcome == OutcomeDeadLettered && cause != nil {
		res.Error = tallyfy.OneLine(cause.Error(), maxErrorHeader)
	}
	return res
}

// record publishes the dead letter, then the result event, both confirmed,
// for the sweeper; both carry the trace context ctx carries. Its error says
// which of the two JetStream did not confirm.
func (w *Worker) record(ctx context.Context, res Result, data []byte) *recordError {
	th := traceHeadersOf(ctx)
	if res.Outcome == OutcomeDeadLettered {
		if err := w.publish(ctx, w.deadLetter(th, data, res)); err != nil {
			return &recordError{kind: kindDeadLetter, err: err}
		}
	}
	m, err := w.resultMsg(th, res)
	if err != nil {
		return &recordError{kind: kindResult, err: err}
	}
	if err := w.publish(ctx, m); err != nil {
		return &recordError{kind: kindResult, err: err}
	}
	return nil
}

// resultMsg is the result event of res, on <results subject>.<outcome>,
// with the job's trace context th; its message ID is the job's, so that a
// redelivery's event is a duplicate.
func (w *Worker) resultMsg(th traceHeaders, res Result) (*nats.Msg, error) {
	body, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(w.cfg.ResultsSubject + "." + string(res.Outcome))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(res.JobSeq, 10))
	th.set(m.Header)
	return m, nil
}

// What JetStream did not confirm, as Observer.PublishFailed names it: one
// of the two parts of a job's record, or the ack that follows them.
const (
	kindDeadLetter = "dead_letter"
	kindResult     = "result"
	kindAck        = "ack"
)

// recordError is a part of a job's record that could not be published.
type recordError struct {
	kind string // kindDeadLetter or kindResult
	err  error
}

func (e *recordError) Error() string {
	if e.kind == kindDeadLetter {
		return "dead letter: " + e.err.Error()
	}
	return "result event: " + e.err.Error()
}

func (e *recordError) Unwrap() error { return e.err }

// deadLetter builds the dead letter: the job's bytes, unchanged, so that a
// replay is a re-publish, and the reason in headers, with the job's trace
// context th (which a replay carries on).
func (w *Worker) deadLetter(th traceHeaders, data []byte, res Result) *nats.Msg {
	m := nats.NewMsg(w.cfg.DLQSubject + "." + string(res.Reason))
	m.Data = data
	h := m.Header
	h.Set(jetstream.MsgIDHeader, "dlq-"+strconv.FormatUint(res.JobSeq, 10))
	h.Set(HeaderReason, string(res.Reason))
	if res.Status != 0 {
		h.Set(HeaderStatus, strconv.Itoa(res.Status))
	}
	if res.Error != "" {
		h.Set(HeaderError, res.Error)
	}
	if res.TallyfyRequestID != "" {
		h.Set(HeaderRequestID, tallyfy.OneLine(res.TallyfyRequestID, 256))
	}
	h.Set(HeaderAttempts, strconv.Itoa(res.Attempts))
	h.Set(HeaderJobSeq, strconv.FormatUint(res.JobSeq, 10))
	if res.ArchivedAt != "" {
		h.Set(HeaderArchivedAt, res.ArchivedAt)
	}
	if res.OrgID != "" {
		h.Set(HeaderOrgID, res.OrgID)
	}
	if res.RunID != "" {
		h.Set(HeaderRunID, res.RunID)
	}
	h.Set(HeaderWorker, tallyfy.OneLine(w.cfg.WorkerID, 256))
	th.set(h)
	return m
}

// jsContext bounds one request to JetStream (a publish, an ack, a read)
// by PublishTimeout, on a context that shutdown does not cancel: what the
// request confirms must not be lost to a shutdown that has just begun.
func (w *Worker) jsContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), w.cfg.PublishTimeout)
}

// publish sends m to JetStream and waits for its confirmation, retrying a
// few times, each try bounded by PublishTimeout. For a job's record ctx is
// its hard context, which shutdown cancels only when the grace period is
// over: the record of a job that is done must not be lost to a shutdown
// that has just begun, and a job whose record could not be confirmed by
// then is simply not acked, so it comes back. The sweeper's is the sweep's
// own (see jsContext).
func (w *Worker) publish(ctx context.Context, m *nats.Msg) error {
	var err error
	for i := 0; ; i++ {
		pctx, cancel := context.WithTimeout(ctx, w.cfg.PublishTimeout)
		_, err = w.js.PublishMsg(pctx, m)
		cancel()
		if err == nil || i == len(publishRetries) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(publishRetries[i]):
		}
	}
}

func (w *Worker) publishFailed(t *task, job Job, err error) {
	delay := w.policy.backoff(int(t.meta.NumDelivered))
	w.jobLog(w.log.Error(), t, job).Err(err).Dur("retry_in_ms", delay).Msg("could not publish the job's outcome; handing the job back")
	if err := t.msg.NakWithDelay(delay); err != nil {
		w.jobLog(w.log.Error(), t, job).Err(err).Msg("nak failed; the job returns after the ack wait")
	}
}

// retry hands a job back for a later delivery after a failure that counts.
func (w *Worker) retry(t *task, job Job, d Decision, cause error) {
	ev := w.jobLog(w.log.Warn(), t, job).Err(cause).Dur("retry_in_ms", d.Delay)
	if d.Status != 0 {
		ev = ev.Int("status", d.Status)
	}
	ev.Msg("API call failed; retrying later")
	t.traceLeft("retry", d.Status, cause)
	if err := t.msg.NakWithDelay(d.Delay); err != nil {
		w.jobLog(w.log.Error(), t, job).Err(err).Msg("nak failed; the job returns after the ack wait")
	}
}

// retryArchived retries a job whose run this delivery archived and then
// failed to delete. A nak would lose what was done: the redelivery could
// not tell that a worker archived the run, and neither could its result or
// dead letter. So the job is handed back at once as a copy that carries
// Tallyfy-Archived-At (this delivery counted as a real attempt); the
// copy's own retries back off as usual.
func (w *Worker) retryArchived(t *task, job Job, cause error) {
	ev := w.jobLog(w.log.Warn(), t, job).Err(cause).Str("archived_at", t.archivedAt)
	t.traceLeft("retry", 0, cause)
	ev.Str("as", w.returnOrNak(t, job)).Msg("archived the run, but deleting it failed; retrying now")
}

// giveBack hands a job back as shutdown begins or ends, so that another
// worker takes it now rather than after the ack wait.
func (w *Worker) giveBack(t *task, job Job) {
	ev := w.jobLog(w.log.Info(), t, job).Str("as", w.returnOrNak(t, job))
	t.traceLeft("give_back", 0, nil)
	ev.Msg("shutting down: job handed back")
	w.cfg.Metrics.HandedBack(handedBackShutdown)
}

// handBack gives a job back to the pool because this worker cannot call
// Tallyfy; cause is what the attempt met, if anything. The worker's
// inability was logged at error when it began, so each job is a line at
// info.
func (w *Worker) handBack(t *task, job Job, cause error) {
	why := w.ab.why()
	if why == "" {
		// The breaker refused the call and has closed since.
		why = "circuit breaker refused the call"
	}
	ev := w.log.Info().Str("as", w.returnOrNak(t, job))
	if cause != nil {
		ev = ev.AnErr("cause", cause)
	}
	t.traceLeft("hand_back", 0, nil)
	w.jobLog(ev, t, job).Str("reason", why).Msg("this worker cannot call Tallyfy: job handed back to the pool")
	w.cfg.Metrics.HandedBack(handedBackUnable)
}

// Why a job was handed back, as Observer.HandedBack names it.
const (
	handedBackUnable   = "unable"
	handedBackShutdown = "shutdown"
)

// returnOrNak returns the job as a copy (returnJob) or, when that fails,
// naks it, and says which: "copy" or "nak".
func (w *Worker) returnOrNak(t *task, job Job) string {
	err := w.returnJob(t)
	if err == nil {
		return "copy"
	}
	w.jobLog(w.log.Warn(), t, job).Err(err).Msg("could not hand back a copy of the job; naking it")
	w.nak(t, job)
	return "nak"
}

func (w *Worker) nak(t *task, job Job) {
	if err := t.msg.Nak(); err != nil {
		w.jobLog(w.log.Error(), t, job).Err(err).Msg("nak failed; the job returns after the ack wait")
	}
}

// returnJob gives t's job back to the pool without spending one of its
// attempts. A nak would give it back too, but would spend a delivery: on a
// job's last one it would strand the job, to be dead-lettered
// max_deliveries for a fault that is not its own, and a broken worker's
// probes would eat every job's deliveries. So the job is published again,
// unchanged but for the headers that keep its identity (Tallyfy-Job-Seq)
// and its count of real attempts (Tallyfy-Attempts, counting this delivery
// only if its request reached Tallyfy), and the original is
// acked once the copy is confirmed. The copy's message ID is derived from
// the original's sequence, so a second hand-back of the same message (its
// ack was lost) is de-duplicated.
func (w *Worker) returnJob(t *task) error {
	w.awaitFetchEnd(t.hard)
	ctx, cancel := w.jsContext()
	defer cancel()
	m := nats.NewMsg(w.cfg.JobsSubject)
	m.Data = t.msg.Data()
	for k, v := range t.msg.Headers() {
		// The server's own headers (message ID, expectations) belong to
		// the first publish.
		if !strings.HasPrefix(k, "Nats-") {
			m.Header[k] = v
		}
	}
	m.Header.Set(HeaderJobSeq, strconv.FormatUint(t.seq, 10))
	attempts := t.attempts()
	if !t.tried {
		attempts--
	}
	m.Header.Set(HeaderAttempts, strconv.Itoa(attempts))
	if t.archivedAt != "" {
		m.Header.Set(HeaderArchivedAt, t.archivedAt)
	} else {
		m.Header.Del(HeaderArchivedAt)
	}
	m.Header.Set(jetstream.MsgIDHeader, "handback-"+strconv.FormatUint(t.seq, 10)+"-"+strconv.FormatUint(t.meta.Sequence.Stream, 10))
	if _, err := w.js.PublishMsg(ctx, m, jetstream.WithExpectStream(w.cfg.JobsStream)); err != nil {
		return err
	}
	return t.msg.DoubleAck(ctx)
}

// jobLog adds the fields every job line carries.
func (w *Worker) jobLog(ev *zerolog.Event, t *task, job Job) *zerolog.Event {
	if job.OrgID != "" {
		ev = ev.Str("org_id", job.OrgID)
	}
	if job.RunID != "" {
		ev = ev.Str("run_id", job.RunID)
	}
	if job.RequestID != "" {
		ev = ev.Str("request_id", job.RequestID)
	}
	if t.tc.HasTraceID() {
		id := t.tc.TraceID()
		ev = ev.Hex("trace_id", id[:])
		if t.span != nil {
			sid := t.tc.SpanID()
			ev = ev.Hex("span_id", sid[:])
		}
	}
	return ev.Uint64("job_seq", t.seq).
		Int("attempt", t.attempts()).
		Int64("duration_ms", time.Since(t.start).Milliseconds())
}
