package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const dlqUsage = `Usage: tallyfy-deleter dlq <command> [flags]

Commands:
  ls      list dead letters, oldest first, without changing anything
  replay  re-publish dead letters as jobs, removing each once its re-publish is confirmed

Run 'tallyfy-deleter dlq <command> --help' for its flags.
`

const dlqLsHelp = `
Lists dead letters, oldest first: SEQ (to use with --seq), REASON, STATUS
(Tallyfy's HTTP status), ORG, RUN, ATTEMPTS, WHEN (UTC) and ERROR (cut to 60
characters; --json has it whole, with every header and the body). Reading
changes nothing.
`

const dlqReplayHelp = `
Re-publishes each selected dead letter's body, unchanged, to the jobs
subject (Nats-Msg-Id: replay-<seq>), and removes the dead letter once the
jobs stream has confirmed it. A dead letter whose re-publish fails is kept.
The selection flags combine (--reason and --org and --seq); with none,
replay refuses unless --all is given. Only dead letters that exist when
replay starts are considered, so a job that fails again is not replayed
twice in one run. Exit status 1 if any dead letter could not be replayed
or removed.
`

// maxErrorCell is how much of a dead letter's error the table shows.
const maxErrorCell = 60

// replayConcurrency is how many dead letters are replayed at once when no
// --rate limits them.
const replayConcurrency = 4

func cmdDLQ(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return 2
	}
	switch args[0] {
	case "ls", "list":
		return cmdDLQList(args[1:], getenv, stdout, stderr)
	case "replay":
		return cmdDLQReplay(args[1:], getenv, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, dlqUsage)
		return 0
	}
	fmt.Fprintf(stderr, "tallyfy-deleter dlq: unknown command %q\n\n%s", args[0], dlqUsage)
	return 2
}

// dlqFilter selects dead letters. Its conditions combine; the zero value
// selects every dead letter.
type dlqFilter struct {
	reason string
	org    string
	seqs   []uint64 // nil: any
	limit  int      // 0: no limit
}

func (f dlqFilter) empty() bool { return f.reason == "" && f.org == "" && f.seqs == nil }

// dlqFlags are the selection flags of ls and replay, as given.
type dlqFlags struct {
	reason, org, seq string
	limit            int
}

func addDLQFlags(s *settings.Set, fl *dlqFlags, defaultLimit string) {
	s.Str(&fl.reason, "", "reason", "", "only dead letters of this reason (not_archived, forbidden, ...)")
	s.Str(&fl.org, "", "org", "", "only dead letters of this organization")
	s.Str(&fl.seq, "", "seq", "", "only these dead letters: comma list of sequence numbers (the SEQ column)")
	s.Num(&fl.limit, "", "limit", defaultLimit, "at most this many dead letters, oldest first; 0 for all")
}

func (fl dlqFlags) filter() (dlqFilter, error) {
	var f dlqFilter
	var errs []error
	if fl.reason != "" && !tallyfy.ValidID(fl.reason) {
		errs = append(errs, fmt.Errorf("--reason %q is not a reason such as not_archived", fl.reason))
	}
	f.reason = fl.reason
	if fl.org != "" && !tallyfy.ValidID(fl.org) {
		errs = append(errs, fmt.Errorf("--org %q is not 1 to 64 letters, digits, '-' or '_'", fl.org))
	}
	f.org = fl.org
	if fl.seq != "" {
		f.seqs = []uint64{}
		for _, p := range strings.Split(fl.seq, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			n, err := strconv.ParseUint(p, 10, 64)
			if err != nil || n == 0 {
				errs = append(errs, fmt.Errorf("--seq: %q is not a sequence number", p))
				continue
			}
			f.seqs = append(f.seqs, n)
		}
	}
	if f.limit = fl.limit; f.limit < 0 {
		errs = append(errs, fmt.Errorf("--limit must be at least 0, not %d", f.limit))
	}
	return f, errors.Join(errs...)
}

// deadLetter is one message of the dead-letter stream, as `dlq ls --json`
// prints it.
type deadLetter struct {
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
	Body             string              `json:"body"`
	// BodyBase64 is set when the body is not UTF-8 (an invalid job), since
	// Body then cannot hold it exactly.
	BodyBase64 string `json:"body_base64,omitempty"`

	data []byte
}

func newDeadLetter(seq uint64, subject string, h nats.Header, data []byte, at time.Time, prefix string) deadLetter {
	d := deadLetter{
		Seq: seq, Subject: subject, Time: at.UTC(),
		Reason:           h.Get(worker.HeaderReason),
		OrgID:            h.Get(worker.HeaderOrgID),
		RunID:            h.Get(worker.HeaderRunID),
		Worker:           h.Get(worker.HeaderWorker),
		TallyfyRequestID: h.Get(worker.HeaderRequestID),
		Error:            h.Get(worker.HeaderError),
		Headers:          map[string][]string(h),
		Body:             string(data),
		data:             data,
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

// dlqScan is what scanDeadLetters found.
type dlqScan struct {
	exists  bool
	letters []deadLetter
	// matching is how many dead letters match, when known (the count of
	// the subject filter, when no --org or --seq narrows it); -1 otherwise.
	matching int
	more     bool     // the limit left some out
	missing  []uint64 // --seq numbers that are no dead letter
}

// scanDeadLetters reads the dead letters f selects, oldest first, without
// consuming or changing anything. It considers only those stored when it
// starts: a job that a replay sends back to the dead-letter stream is not
// picked up again.
func scanDeadLetters(ctx context.Context, js jetstream.JetStream, n worker.Config, f dlqFilter) (*dlqScan, error) {
	res := &dlqScan{matching: -1}
	cctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	defer cancel()
	stream, err := js.Stream(cctx, n.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return res, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", n.DLQStream, err)
	}
	res.exists = true
	keep := func(d deadLetter) bool {
		if f.reason != "" && d.Reason != f.reason {
			return false
		}
		if f.org != "" && d.OrgID != f.org {
			return false
		}
		if f.limit > 0 && len(res.letters) == f.limit {
			res.more = true
			return false
		}
		res.letters = append(res.letters, d)
		return true
	}

	if f.seqs != nil {
		for _, seq := range f.seqs {
			gctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
			m, err := stream.GetMsg(gctx, seq)
			cancel()
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				res.missing = append(res.missing, seq)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("dead letter %d: %w", seq, err)
			}
			keep(newDeadLetter(m.Sequence, m.Subject, m.Header, m.Data, m.Time, n.DLQSubject))
		}
		return res, nil
	}

	filter := n.DLQSubject + ".>"
	if f.reason != "" {
		filter = n.DLQSubject + "." + f.reason
	}
	info, err := stream.Info(cctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", n.DLQStream, err)
	}
	var count uint64
	for _, c := range info.State.Subjects {
		count += c
	}
	if f.org == "" {
		res.matching = int(count)
	}
	if count == 0 {
		return res, nil
	}
	last := info.State.LastSeq
	cons, err := stream.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
	}
	defer it.Stop()
	for {
		m, err := nextDeadLetter(ctx, cons, it)
		if errors.Is(err, errNoMoreDeadLetters) {
			return res, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("reading stream %s: %w", n.DLQStream, err)
		}
		if meta.Sequence.Stream > last {
			return res, nil
		}
		if !keep(newDeadLetter(meta.Sequence.Stream, m.Subject(), m.Headers(), m.Data(), meta.Timestamp, n.DLQSubject)) && res.more {
			return res, nil
		}
		if meta.NumPending == 0 || meta.Sequence.Stream == last {
			return res, nil
		}
	}
}

var errNoMoreDeadLetters = errors.New("no more dead letters")

// nextDeadLetter waits for the next message of the scan. When none comes
// for a while, it asks the server whether any is left: those counted at
// the start may have been deleted since (by a replay running meanwhile).
func nextDeadLetter(ctx context.Context, cons jetstream.Consumer, it jetstream.MessagesContext) (jetstream.Msg, error) {
	deadline := time.Now().Add(cli.ToolTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := it.Next(jetstream.NextContext(cctx))
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || time.Now().After(deadline) {
			return m, err
		}
		ictx, icancel := context.WithTimeout(ctx, cli.ToolTimeout)
		info, err := cons.Info(ictx)
		icancel()
		if err != nil {
			return nil, err
		}
		if info.NumPending == 0 {
			return nil, errNoMoreDeadLetters
		}
	}
}

func cmdDLQList(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var fl dlqFlags
	var jsonOut bool
	s := settings.ToolSettings(&cfg)
	addDLQFlags(s, &fl, "100")
	s.Bool(&jsonOut, "", "json", "false", "print one JSON object per dead letter, with every header and the body")
	rest, code, ok := s.Command("dlq ls", args, getenv, stdout, stderr, dlqLsHelp)
	if !ok {
		return code
	}
	f, err := fl.filter()
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("takes no arguments, got %q", rest)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter dlq ls: %v\n", err)
		return 2
	}

	sess, ok := openDLQ(&cfg, "dlq ls", f, stderr)
	if !ok {
		return 1
	}
	defer sess.done()
	errw, scan := sess.errw, sess.scan
	if !scan.exists {
		fmt.Fprintf(errw, "tallyfy-deleter dlq ls: the dead-letter stream %s is not created yet: no dead letters\n", cfg.Names.DLQStream)
		return 0
	}
	for _, seq := range scan.missing {
		fmt.Fprintf(errw, "tallyfy-deleter dlq ls: no dead letter %d\n", seq)
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		for _, d := range scan.letters {
			if err := enc.Encode(d); err != nil {
				fmt.Fprintf(errw, "tallyfy-deleter dlq ls: %v\n", err)
				return 1
			}
		}
	} else if len(scan.letters) > 0 {
		printDeadLetters(stdout, scan.letters)
	}
	switch {
	case len(scan.letters) == 0:
		fmt.Fprintln(errw, "no dead letters match")
	case scan.more && scan.matching >= 0:
		fmt.Fprintf(errw, "%d of %d dead letters shown (--limit 0 for all)\n", len(scan.letters), scan.matching)
	case scan.more:
		fmt.Fprintf(errw, "the first %d dead letters shown; more match (--limit 0 for all)\n", len(scan.letters))
	}
	return 0
}

func printDeadLetters(w io.Writer, letters []deadLetter) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tREASON\tSTATUS\tORG\tRUN\tATTEMPTS\tWHEN\tERROR")
	for _, d := range letters {
		status, attempts := "-", "-"
		if d.Status != 0 {
			status = strconv.Itoa(d.Status)
		}
		if d.Attempts != 0 {
			attempts = strconv.Itoa(d.Attempts)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Seq, cli.Cell(d.Reason), status, cli.Cell(d.OrgID), cli.Cell(d.RunID),
			attempts, d.Time.Format(time.RFC3339), cli.Cell(truncate(d.Error, maxErrorCell)))
	}
	tw.Flush()
}

// truncate cuts s to at most n runes, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// dlqSession is what both dead-letter tools start from: a connection, a
// context the first SIGINT or SIGTERM cancels, and the dead letters that
// the selection flags pick.
type dlqSession struct {
	js   jetstream.JetStream
	ctx  context.Context
	errw io.Writer
	scan *dlqScan
	done func()
}

// openDLQ connects and scans. On failure it has reported why.
func openDLQ(cfg *settings.Tool, tool string, f dlqFilter, stderr io.Writer) (*dlqSession, bool) {
	errw := cli.NewSyncWriter(stderr)
	js, disconnect, err := cli.ToolConnect(cfg.NATSURL, cfg.NATSCreds, tool, errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter %s: %v\n", tool, err)
		return nil, false
	}
	ctx, stop := cli.Interruptible(errw)
	done := func() { stop(); disconnect() }
	scan, err := scanDeadLetters(ctx, js, cfg.Names, f)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter %s: %v\n", tool, err)
		done()
		return nil, false
	}
	return &dlqSession{js: js, ctx: ctx, errw: errw, scan: scan, done: done}, true
}

func cmdDLQReplay(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var fl dlqFlags
	var perSecond int
	var dryRun, all bool
	s := settings.ToolSettings(&cfg)
	addDLQFlags(s, &fl, "0")
	s.Num(&perSecond, "", "rate", "0", "at most this many replays per second; 0 for no limit")
	s.Bool(&dryRun, "", "dry-run", "false", "list what would be replayed and change nothing")
	s.Bool(&all, "", "all", "false", "replay every dead letter when no --reason, --org or --seq narrows the selection")
	rest, code, ok := s.Command("dlq replay", args, getenv, stdout, stderr, dlqReplayHelp)
	if !ok {
		return code
	}
	f, err := fl.filter()
	if perSecond < 0 {
		err = errors.Join(err, fmt.Errorf("--rate must be at least 0, not %d", perSecond))
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("takes no arguments, got %q", rest)
	}
	if err == nil && f.empty() && !all {
		err = errors.New("nothing selected: give --reason, --org or --seq, or --all to replay every dead letter")
	}
	if err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter dlq replay: %v\n", err)
		return 2
	}

	sess, ok := openDLQ(&cfg, "dlq replay", f, stderr)
	if !ok {
		return 1
	}
	defer sess.done()
	js, ctx, errw, scan := sess.js, sess.ctx, sess.errw, sess.scan
	for _, seq := range scan.missing {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: no dead letter %d (already replayed?)\n", seq)
	}
	if len(scan.letters) == 0 {
		fmt.Fprintln(stdout, "replay: no dead letters match; nothing to do")
		return 0
	}
	if dryRun {
		printDeadLetters(stdout, scan.letters)
		fmt.Fprintf(errw, "dry run: %d dead letters would be replayed to %s; nothing changed\n", len(scan.letters), cfg.Names.JobsSubject)
		return 0
	}

	cctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
	_, jerr := js.Stream(cctx, cfg.Names.JobsStream)
	dlq, qerr := js.Stream(cctx, cfg.Names.DLQStream)
	cancel()
	if errors.Is(jerr, jetstream.ErrStreamNotFound) {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: the jobs stream %s does not exist: start a worker (it creates the streams), or create it\n", cfg.Names.JobsStream)
		return 1
	}
	if err := errors.Join(jerr, qerr); err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: %v\n", err)
		return 1
	}

	r := &replayer{js: js, dlq: dlq, subject: cfg.Names.JobsSubject, stream: cfg.Names.JobsStream}
	r.prog = cli.NewProgress(errw, "replay", len(scan.letters))
	interrupted := r.run(ctx, scan.letters, perSecond)
	r.prog.Done()
	if interrupted > 0 {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: interrupted: %d dead letters were not replayed and are kept\n", interrupted)
	}
	fmt.Fprintf(stdout, "replay: %d replayed, %d duplicates, %d failed", r.replayed, r.duplicates, r.failed)
	if r.notRemoved > 0 {
		fmt.Fprintf(stdout, ", %d replayed but not removed", r.notRemoved)
	}
	fmt.Fprintln(stdout)
	if r.duplicates > 0 {
		fmt.Fprintln(errw, "tallyfy-deleter dlq replay: duplicates had been replayed before (within the jobs stream's duplicate window) and were not published again; their dead letters are removed")
	}
	if r.failed > 0 || r.notRemoved > 0 || interrupted > 0 {
		return 1
	}
	return 0
}

// replayer re-publishes dead letters and removes them.
type replayer struct {
	js      jetstream.JetStream
	dlq     jetstream.Stream
	subject string
	stream  string
	prog    *cli.Progress

	mu                                       sync.Mutex
	replayed, duplicates, failed, notRemoved int
}

// run replays letters, at most perSecond a second (0: no limit), and
// returns how many it did not get to because ctx was cancelled. A replay
// that has begun is finished regardless: it is two short calls, and
// stopping between them would leave a job published twice.
func (r *replayer) run(ctx context.Context, letters []deadLetter, perSecond int) int {
	limiter := rate.NewLimiter(rate.Inf, 1)
	workers := replayConcurrency
	if perSecond > 0 {
		limiter = rate.NewLimiter(rate.Limit(perSecond), 1)
		workers = min(workers, perSecond)
	}
	next := make(chan deadLetter)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for d := range next {
				r.replay(d)
			}
		})
	}
	left := 0
	for i, d := range letters {
		if limiter.Wait(ctx) != nil {
			left = len(letters) - i
			break
		}
		select {
		case next <- d:
		case <-ctx.Done():
			left = len(letters) - i
		}
		if left > 0 {
			break
		}
	}
	close(next)
	wg.Wait()
	return left
}

// replay publishes one dead letter's body to the jobs subject and, once the
// jobs stream has confirmed it, deletes the dead letter. Its Nats-Msg-Id
// makes a second replay of the same dead letter (after a failed delete,
// say) a duplicate within the jobs stream's duplicate window.
func (r *replayer) replay(d deadLetter) {
	defer r.prog.Add(1)
	m := nats.NewMsg(r.subject)
	m.Data = d.data
	m.Header.Set(jetstream.MsgIDHeader, "replay-"+strconv.FormatUint(d.Seq, 10))
	ctx, cancel := context.WithTimeout(context.Background(), cli.ToolTimeout)
	defer cancel()
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithExpectStream(r.stream))
	if err != nil {
		r.count(&r.failed)
		r.prog.Logf("dead letter %d (%s %s/%s): not replayed, kept: %v", d.Seq, d.Reason, cli.Cell(d.OrgID), cli.Cell(d.RunID), err)
		return
	}
	if ack.Duplicate {
		r.count(&r.duplicates)
	} else {
		r.count(&r.replayed)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), cli.ToolTimeout)
	defer dcancel()
	if err := r.dlq.DeleteMsg(dctx, d.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		r.count(&r.notRemoved)
		r.prog.Logf("dead letter %d: replayed as job %d, but not removed: %v (replaying it again within the jobs stream's duplicate window publishes nothing twice)", d.Seq, ack.Sequence, err)
	}
}

func (r *replayer) count(n *int) {
	r.mu.Lock()
	*n++
	r.mu.Unlock()
}
