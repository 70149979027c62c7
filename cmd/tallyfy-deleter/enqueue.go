package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const enqueueHelp = `
Arguments: [JOB ...]

A JOB is a JSON object, {"org_id":"acme","run_id":"r1","request_id":"gdpr-1"},
or a CSV line, org_id,run_id[,request_id] (an empty org_id means
TALLYFY_ORG_ID). Jobs come from the arguments, from --file, or (with
neither) from standard input, one per line. Blank lines, '#' comments and
CSV header lines are skipped.

Every job is checked as the worker would check it; a bad one is reported
as "line N: reason" and not published. Each job's Nats-Msg-Id derives from
its org_id, run_id and request_id, so enqueueing the same file again within
the jobs stream's duplicate window publishes nothing twice.

Exit status 1 if any line was rejected or not published.
`

// enqueueWindow is how many publishes may wait for their ack at once:
// enough to keep the server busy, few enough that an interrupt loses
// nothing.
const enqueueWindow = 256

// maxPublishFailures stops an enqueue that fails to publish so often that
// something is wrong with the stream, not the lines.
const maxPublishFailures = 100

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func cmdEnqueue(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var defaultOrg, file string
	var check bool
	s := settings.ToolSettings(&cfg)
	s.Str(&defaultOrg, "TALLYFY_ORG_ID", "tallyfy-org-id", "", "organization of jobs that name none")
	s.Str(&file, "", "file", "", "read jobs from this file, one per line ('-': standard input)")
	s.Bool(&check, "", "check", "false", "only validate: report bad lines, publish nothing")
	rest, code, ok := s.Command("enqueue", args, getenv, stdout, stderr, enqueueHelp)
	if !ok {
		return code
	}
	var errs []error
	if defaultOrg != "" && !tallyfy.ValidID(defaultOrg) {
		errs = append(errs, fmt.Errorf("TALLYFY_ORG_ID %q is not 1 to 64 letters, digits, '-' or '_'", defaultOrg))
	}
	if file != "" && len(rest) > 0 {
		errs = append(errs, errors.New("give jobs as arguments or with --file, not both"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter enqueue: %v\n", err)
		return 2
	}

	errw := cli.NewSyncWriter(stderr)
	src, err := openJobSource(rest, file, stdin, errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: %v\n", err)
		return 1
	}
	defer src.close()
	ctx, stop := cli.Interruptible(errw)
	defer stop()

	var pub *enqueuer
	if !check {
		js, disconnect, err := cli.ToolConnect(cfg.NATSURL, cfg.NATSCreds, "enqueue", errw)
		if err != nil {
			fmt.Fprintf(errw, "tallyfy-deleter enqueue: %v\n", err)
			return 1
		}
		defer disconnect()
		sctx, cancel := context.WithTimeout(ctx, cli.ToolTimeout)
		stream, err := js.Stream(sctx, cfg.Names.JobsStream)
		cancel()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			fmt.Fprintf(errw, "tallyfy-deleter enqueue: the jobs stream %s does not exist: start a worker (it creates the streams), or create it\n", cfg.Names.JobsStream)
			return 1
		}
		if err != nil {
			fmt.Fprintf(errw, "tallyfy-deleter enqueue: jobs stream %s: %v\n", cfg.Names.JobsStream, err)
			return 1
		}
		pub = &enqueuer{js: js, subject: cfg.Names.JobsSubject, stream: cfg.Names.JobsStream, window: stream.CachedInfo().Config.Duplicates}
	}

	prog := cli.NewProgress(errw, "enqueue", src.total)
	if pub != nil {
		pub.start(prog)
	}
	var valid, rejected int
	var stopped string
	lines := src.lines(ctx.Done())
	for n := 1; ; n++ {
		if pub != nil && pub.failed.Load() >= maxPublishFailures {
			stopped = fmt.Sprintf("%d publishes failed, giving up: %s %d and later were not read", maxPublishFailures, src.unit, n)
			break
		}
		var in sourceLine
		select {
		case in = <-lines:
		case <-ctx.Done():
			stopped = fmt.Sprintf("interrupted: %s %d and later were not read", src.unit, n)
		}
		if stopped != "" || in.err == io.EOF {
			break
		}
		if in.err != nil {
			stopped = fmt.Sprintf("reading %s %d: %v", src.unit, n, in.err)
			break
		}
		if n == 1 {
			in.line = bytes.TrimPrefix(in.line, utf8BOM)
		}
		job, skip, err := parseJobLine(in.line, in.tooLong, defaultOrg)
		switch {
		case skip:
			prog.Add(1)
		case err != nil:
			rejected++
			prog.Logf("%s %d: %v", src.unit, n, err)
			prog.Add(1)
		case check:
			valid++
			prog.Add(1)
		default:
			valid++
			pub.publish(fmt.Sprintf("%s %d", src.unit, n), job)
		}
	}
	if pub != nil {
		pub.finish()
	}
	prog.Done()
	if stopped != "" {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: %s\n", stopped)
	}

	if check {
		fmt.Fprintf(stdout, "enqueue --check: %d valid, %d rejected; nothing published\n", valid, rejected)
		if rejected > 0 || stopped != "" {
			return 1
		}
		return 0
	}
	failed := int(pub.failed.Load())
	fmt.Fprintf(stdout, "enqueue: %d published, %d duplicates, %d rejected", pub.published, pub.duplicates, rejected)
	if failed > 0 {
		fmt.Fprintf(stdout, ", %d failed", failed)
	}
	fmt.Fprintln(stdout)
	if pub.duplicates > 0 {
		fmt.Fprintf(errw, "tallyfy-deleter enqueue: duplicates are jobs (same org_id, run_id and request_id) already published within the jobs stream's duplicate window (%s); they were not published again\n", pub.window)
	}
	if rejected > 0 || failed > 0 || stopped != "" {
		return 1
	}
	return 0
}

// parseJobLine reads one line (or argument): a JSON object or a CSV line.
// skip is true for blank lines, comments and a CSV header. A job is
// validated by the worker's own rules, so that what it would dead-letter as
// invalid_job is refused here instead.
func parseJobLine(line []byte, tooLong bool, defaultOrg string) (job worker.Job, skip bool, err error) {
	if tooLong || len(line) > worker.MaxJobSize {
		return job, false, fmt.Errorf("longer than %d bytes", worker.MaxJobSize)
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
	fields := map[string]string{"run_id": rec[1]}
	if rec[0] != "" {
		fields["org_id"] = rec[0]
	}
	if len(rec) == 3 && rec[2] != "" {
		fields["request_id"] = rec[2]
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return job, false, err
	}
	job, err = worker.DecodeJob(body, defaultOrg)
	return job, false, err
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

// enqueuer publishes jobs asynchronously, at most enqueueWindow waiting for
// their acks, and counts what the acks say.
type enqueuer struct {
	js      jetstream.JetStream
	subject string
	stream  string
	window  time.Duration // the stream's duplicate window, for the summary

	prog    *cli.Progress
	pending chan pendingPublish
	done    chan struct{}
	failed  atomic.Int64
	// Written by collect only; read after finish.
	published, duplicates int
}

type pendingPublish struct {
	where string
	fut   jetstream.PubAckFuture
	err   error
}

func (e *enqueuer) start(prog *cli.Progress) {
	e.prog = prog
	e.pending = make(chan pendingPublish, enqueueWindow)
	e.done = make(chan struct{})
	go e.collect()
}

// publish sends one job; its ack is awaited by collect. It blocks while
// the window is full.
func (e *enqueuer) publish(where string, job worker.Job) {
	body, err := json.Marshal(job)
	if err != nil {
		e.pending <- pendingPublish{where: where, err: err}
		return
	}
	m := nats.NewMsg(e.subject)
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, enqueueMsgID(job))
	fut, err := e.js.PublishMsgAsync(m, jetstream.WithExpectStream(e.stream))
	e.pending <- pendingPublish{where: where, fut: fut, err: err}
}

// collect waits for the acks in publishing order. Every future ends with an
// ack or an error: the JetStream context gives up on an ack after
// cli.ToolTimeout, and on a lost connection at once.
func (e *enqueuer) collect() {
	defer close(e.done)
	for p := range e.pending {
		err := p.err
		if err == nil {
			select {
			case ack := <-p.fut.Ok():
				if ack.Duplicate {
					e.duplicates++
				} else {
					e.published++
				}
			case err = <-p.fut.Err():
			}
		}
		if err != nil {
			e.failed.Add(1)
			e.prog.Logf("%s: not published: %v", p.where, err)
		}
		e.prog.Add(1)
	}
}

// finish waits for the acks of everything published.
func (e *enqueuer) finish() {
	close(e.pending)
	<-e.done
}

// jobSource yields the lines to enqueue: arguments, a file or stdin.
type jobSource struct {
	unit  string // how a position is called in messages: "line" or "argument"
	total int    // 0 when unknown
	next  func() (line []byte, tooLong bool, err error)
	close func()
}

type sourceLine struct {
	line    []byte
	tooLong bool
	err     error // io.EOF at the end
}

// lines reads the source in a goroutine of its own, so that an interrupt
// is not held up by a read waiting for a terminal or a pipe. The goroutine
// ends after sending an error (io.EOF at the end) or when done is closed;
// a read that never returns is left behind, which only happens when the
// process is about to exit.
func (src *jobSource) lines(done <-chan struct{}) <-chan sourceLine {
	ch := make(chan sourceLine, 64)
	go func() {
		for {
			line, tooLong, err := src.next()
			select {
			case ch <- sourceLine{line: bytes.Clone(line), tooLong: tooLong, err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func openJobSource(args []string, file string, stdin io.Reader, stderr io.Writer) (*jobSource, error) {
	if len(args) > 0 {
		i := 0
		return &jobSource{unit: "argument", total: len(args), close: func() {}, next: func() ([]byte, bool, error) {
			if i == len(args) {
				return nil, false, io.EOF
			}
			i++
			return []byte(args[i-1]), false, nil
		}}, nil
	}
	if file == "" || file == "-" {
		if f, ok := stdin.(*os.File); ok && cli.IsTerminal(f) {
			fmt.Fprintln(stderr, "tallyfy-deleter enqueue: reading jobs from standard input, one per line; end with Ctrl-D")
		}
		lr := newLineReader(stdin)
		return &jobSource{unit: "line", next: lr.next, close: func() {}}, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	total, err := countLines(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	lr := newLineReader(f)
	return &jobSource{unit: "line", total: total, next: lr.next, close: func() { f.Close() }}, nil
}

// countLines counts the lines of a regular file, for the progress bar, and
// rewinds it. Anything else (a pipe, say) cannot be read twice: 0.
func countLines(f *os.File) (int, error) {
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return 0, nil
	}
	br := bufio.NewReaderSize(f, 64<<10)
	n, last := 0, byte('\n')
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			last = chunk[len(chunk)-1]
			n += bytes.Count(chunk, []byte{'\n'})
		}
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, err
		}
	}
	if last != '\n' {
		n++
	}
	_, err := f.Seek(0, io.SeekStart)
	return n, err
}

// lineReader reads lines of up to about worker.MaxJobSize bytes; a longer
// line is reported as too long and skipped, not read into memory.
type lineReader struct{ r *bufio.Reader }

func newLineReader(r io.Reader) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, worker.MaxJobSize+2)} // + "\r\n"
}

// next returns the next line, valid until the next call, or io.EOF.
func (lr *lineReader) next() ([]byte, bool, error) {
	tooLong := false
	for {
		chunk, err := lr.r.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			tooLong = true
			continue
		case err == io.EOF:
			if len(chunk) == 0 && !tooLong {
				return nil, false, io.EOF
			}
		case err != nil:
			return nil, false, err
		}
		if tooLong {
			return nil, true, nil
		}
		return chunk, false, nil
	}
}
