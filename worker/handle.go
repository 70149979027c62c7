package worker

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// task is one message in the worker's hands.
type task struct {
	// hard is cancelled when shutdown's grace period is over. Once the job
	// is decoded it carries the job's trace context too (see beginTrace).
	hard context.Context
	msg  jetstream.Msg
	meta *jetstream.MsgMetadata
	// seq is the job's identity: its stream sequence, or that of the job
	// it is a handed-back copy of.
	seq uint64
	// priorAttempts are real attempts at the job before this copy.
	priorAttempts int
	// tried: this delivery is a real attempt, see reachedTallyfy.
	tried bool
	// archivedAt is when a worker archived the job's run (RFC 3339): in
	// this delivery (archivedHere), or an earlier one of the job, as the
	// copy's Tallyfy-Archived-At header says (see returnJob).
	archivedAt   string
	archivedHere bool
	start        time.Time
	lastTouch    atomic.Int64 // unix nanos of the last ack-wait reset
	// tc is the trace context carried on for the job: its span's, or the
	// one its headers hold; invalid when it has neither.
	tc trace.SpanContext
	th traceHeaders // tc as headers
	// span is the job's span; nil without a tracer.
	span trace.Span
}

// take puts a pulled message in the worker's hands: from now on its ack
// wait is kept alive, whether it waits for a slot or is in one. It is nil
// for a message that is no JetStream job (it is handed back).
func (w *Worker) take(hard context.Context, msg jetstream.Msg) *task {
	meta, err := msg.Metadata()
	if err != nil {
		w.log.Error().Err(err).Str("subject", msg.Subject()).Msg("message without JetStream metadata; handing it back")
		_ = msg.Nak()
		return nil
	}
	t := &task{hard: hard, msg: msg, meta: meta, seq: meta.Sequence.Stream, start: time.Now()}
	t.adoptIdentity()
	t.lastTouch.Store(t.start.UnixNano())
	w.tracked.Store(t, struct{}{})
	return t
}

// handle gives one job its outcome, or hands it back. A job whose outcome
// waits for its result event's confirmation is returned, to be confirmed
// (see confirm); nil means the job is done with.
func (w *Worker) handle(stopping context.Context, t *task) *pending {
	job, err := DecodeJob(t.msg.Data(), w.cfg.DefaultOrg)
	w.beginTrace(t, job)
	hard, msg, meta := t.hard, t.msg, t.meta
	if stopping.Err() != nil {
		// Pulled as shutdown began: another worker takes it now.
		w.giveBack(t, job)
		return nil
	}
	if err == nil && !w.allowAll && !w.allowed[job.OrgID] {
		err = fmt.Errorf("%w: %s is not an allowed organization", ErrOrgNotAllowed, job.OrgID)
	}
	a := Attempt{Err: err, Delivered: int(meta.NumDelivered), DryRun: err == nil && w.cfg.DryRun,
		MayArchive: err == nil && w.mayArchive(job, msg.Headers()), Archived: t.archivedAt != ""}
	callable := err == nil && !a.DryRun
	archiving := false
	for {
		var resp *tallyfy.Response
		if callable {
			if archiving {
				resp, a.BreakerTripped, a.Err = w.archive(hard, job)
			} else {
				resp, a.BreakerTripped, a.Err = w.call(hard, job)
			}
			t.tried = t.tried || reachedTallyfy(a.Err)
			a.Archiving = archiving
			if archiving && a.Err == nil {
				// Archived: now the delete.
				t.archivedAt, t.archivedHere = time.Now().UTC().Format(time.RFC3339), true
				a.Archived, archiving = true, false
				w.jobLog(w.log.Info(), t, job).Msg("run was not archived: archived it, deleting it now")
				continue
			}
		}
		d := w.policy.Route(a)
		switch d.Action {
		case ActFinish:
			return w.finish(t, job, d, resp, a.Err)
		case ActArchive:
			archiving = true
		case ActRetry:
			if t.archivedHere {
				w.retryArchived(t, job, a.Err)
				return nil
			}
			w.retry(t, job, d, a.Err)
			return nil
		case ActGiveBack:
			w.giveBack(t, job)
			return nil
		case ActHandBack:
			if d.Delay > 0 {
				// Rejected credentials: the next probe waits this long.
				w.gate.pause(time.Now().Add(d.Delay))
			}
			w.handBack(t, job, a.Err)
			return nil
		case ActWaitRateLimit:
			if !w.waitRateLimit(stopping, t, job, d) {
				w.giveBack(t, job)
				return nil
			}
			if cannot, _ := w.ab.state(); cannot != Able {
				// Became unable while waiting: the pool may not be.
				w.handBack(t, job, nil)
				return nil
			}
		}
	}
}

// mayArchive says whether Config.ArchiveFirst lets the worker archive
// job's run: always, or when the job asks for it in its body or with the
// Tallyfy-Archive-First header.
func (w *Worker) mayArchive(job Job, h nats.Header) bool {
	switch w.cfg.ArchiveFirst {
	case ArchiveAlways:
		return true
	case ArchiveJob:
		return job.ArchiveFirst || strings.EqualFold(strings.TrimSpace(h.Get(HeaderArchiveFirst)), "true")
	}
	return false
}

// attempts counts the job's real attempts before this copy, and every
// delivery of this one.
func (t *task) attempts() int { return t.priorAttempts + int(t.meta.NumDelivered) }

// adoptIdentity makes a handed-back copy (see returnJob) report as the job
// it copies: the same job_seq, so the same result and dead-letter IDs, and
// its real attempts counted on.
func (t *task) adoptIdentity() {
	h := t.msg.Headers()
	t.seq, t.priorAttempts = identity(h, t.seq)
	if t.seq != t.meta.Sequence.Stream {
		// Trusted only on a copy a worker made.
		t.archivedAt = tallyfy.OneLine(h.Get(HeaderArchivedAt), 64)
	}
}

// identity is the job sequence of the message at seq, and the real
// attempts at the job before it: its own sequence and none, or those of
// the job it is a handed-back copy of.
func identity(h nats.Header, seq uint64) (uint64, int) {
	orig, err := strconv.ParseUint(h.Get(HeaderJobSeq), 10, 64)
	if err != nil || orig == 0 || orig >= seq {
		return seq, 0
	}
	n, err := strconv.Atoi(h.Get(HeaderAttempts))
	if err != nil || n < 0 || n > 1<<20 {
		return seq, 0
	}
	return orig, n
}

// waitRateLimit keeps a job in hand for a 429's Retry-After, pulling
// nothing meanwhile; every worker of the pool shares Tallyfy's limit, so
// handing the job on would not help. It ends early when the worker becomes
// unable to call Tallyfy (the caller then hands the job back), and returns
// false when shutdown begins first.
func (w *Worker) waitRateLimit(stopping context.Context, t *task, job Job, d Decision) bool {
	until := time.Now().Add(d.Delay)
	w.gate.pause(until)
	w.jobLog(w.log.Warn(), t, job).Int("status", d.Status).Dur("retry_after_ms", d.Delay).Msg("rate limited by Tallyfy; pausing pulls and retrying this job after Retry-After")
	for {
		changed := w.gate.changes()
		if cannot, _ := w.ab.state(); cannot != Able {
			return true
		}
		left := time.Until(until)
		if left <= 0 {
			return true
		}
		timer := time.NewTimer(left)
		select {
		case <-stopping.Done():
			timer.Stop()
			return false
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}
