package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/ops"
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

With --archive-first, only not_archived dead letters are replayed, each
with the header Tallyfy-Archive-First: true (the body is still the job's
bytes): workers whose DELETER_ARCHIVE_FIRST is job (or always) archive the
run, then delete it. With DELETER_ARCHIVE_FIRST=never (the default) they
dead-letter it not_archived again.
`

// maxErrorCell is how much of a dead letter's error the table shows.
const maxErrorCell = 60

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

func (fl dlqFlags) filter() (ops.Filter, error) {
	var f ops.Filter
	var errs []error
	if fl.reason != "" && !tallyfy.ValidID(fl.reason) {
		errs = append(errs, fmt.Errorf("--reason %q is not a reason such as not_archived", fl.reason))
	}
	f.Reason = fl.reason
	if fl.org != "" && !tallyfy.ValidID(fl.org) {
		errs = append(errs, fmt.Errorf("--org %q is not 1 to 64 letters, digits, '-' or '_'", fl.org))
	}
	f.Org = fl.org
	if fl.seq != "" {
		f.Seqs = []uint64{}
		for _, p := range strings.Split(fl.seq, ",") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			n, err := strconv.ParseUint(p, 10, 64)
			if err != nil || n == 0 {
				errs = append(errs, fmt.Errorf("--seq: %q is not a sequence number", p))
				continue
			}
			f.Seqs = append(f.Seqs, n)
		}
	}
	if f.Limit = fl.limit; f.Limit < 0 {
		errs = append(errs, fmt.Errorf("--limit must be at least 0, not %d", f.Limit))
	}
	return f, errors.Join(errs...)
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
	if !scan.Exists {
		fmt.Fprintf(errw, "tallyfy-deleter dlq ls: the dead-letter stream %s is not created yet: no dead letters\n", cfg.Names.DLQStream)
		return 0
	}
	for _, seq := range scan.Missing {
		fmt.Fprintf(errw, "tallyfy-deleter dlq ls: no dead letter %d\n", seq)
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		for _, d := range scan.Letters {
			if err := enc.Encode(d); err != nil {
				fmt.Fprintf(errw, "tallyfy-deleter dlq ls: %v\n", err)
				return 1
			}
		}
	} else if len(scan.Letters) > 0 {
		printDeadLetters(stdout, scan.Letters)
	}
	switch {
	case len(scan.Letters) == 0:
		fmt.Fprintln(errw, "no dead letters match")
	case scan.More && scan.Matching >= 0:
		fmt.Fprintf(errw, "%d of %d dead letters shown (--limit 0 for all)\n", len(scan.Letters), scan.Matching)
	case scan.More:
		fmt.Fprintf(errw, "the first %d dead letters shown; more match (--limit 0 for all)\n", len(scan.Letters))
	}
	return 0
}

func printDeadLetters(w io.Writer, letters []ops.DeadLetter) {
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
			attempts, d.Time.Format(time.RFC3339), truncate(cli.Cell(d.Error), maxErrorCell))
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
	scan *ops.Scan
	done func()
}

// openDLQ connects and scans. On failure it has reported why.
func openDLQ(cfg *settings.Tool, tool string, f ops.Filter, stderr io.Writer) (*dlqSession, bool) {
	errw := cli.NewSyncWriter(stderr)
	js, disconnect, err := cli.ToolConnect(&cfg.NATS, tool, errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter %s: %v\n", tool, err)
		return nil, false
	}
	ctx, stop := cli.Interruptible(errw)
	done := func() { stop(); disconnect() }
	scan, err := ops.ScanDeadLetters(ctx, js, cfg.Names, f)
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
	var dryRun, all, archiveFirst bool
	s := settings.ToolSettings(&cfg)
	addDLQFlags(s, &fl, "0")
	s.Bool(&archiveFirst, "", "archive-first", "false", "replay not_archived dead letters asking the worker to archive the run first (header Tallyfy-Archive-First: true)")
	s.Num(&perSecond, "", "rate", "0", "at most this many replays per second; 0 for no limit")
	s.Bool(&dryRun, "", "dry-run", "false", "list what would be replayed and change nothing")
	s.Bool(&all, "", "all", "false", "replay every dead letter when no --reason, --org or --seq narrows the selection")
	rest, code, ok := s.Command("dlq replay", args, getenv, stdout, stderr, dlqReplayHelp)
	if !ok {
		return code
	}
	if archiveFirst {
		if fl.reason != "" && fl.reason != string(worker.ReasonNotArchived) {
			fmt.Fprintf(stderr, "tallyfy-deleter dlq replay: --archive-first replays not_archived dead letters only, not --reason %s\n", fl.reason)
			return 2
		}
		fl.reason = string(worker.ReasonNotArchived)
	}
	f, err := fl.filter()
	if perSecond < 0 {
		err = errors.Join(err, fmt.Errorf("--rate must be at least 0, not %d", perSecond))
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("takes no arguments, got %q", rest)
	}
	if err == nil && !f.Narrowed() && !all {
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
	for _, seq := range scan.Missing {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: no dead letter %d (already replayed?)\n", seq)
	}
	if len(scan.Letters) == 0 {
		fmt.Fprintln(stdout, "replay: no dead letters match; nothing to do")
		return 0
	}
	if dryRun {
		printDeadLetters(stdout, scan.Letters)
		fmt.Fprintf(errw, "dry run: %d dead letters would be replayed to %s; nothing changed\n", len(scan.Letters), cfg.Names.JobsSubject)
		return 0
	}
	return replayLetters(ctx, js, &cfg, scan.Letters, ops.ReplayOptions{PerSecond: perSecond, ArchiveFirst: archiveFirst}, stdout, errw)
}

// replayLetters replays letters and prints the summary; it returns the
// exit status.
func replayLetters(ctx context.Context, js jetstream.JetStream, cfg *settings.Tool, letters []ops.DeadLetter, opts ops.ReplayOptions, stdout, errw io.Writer) int {
	r, err := ops.NewReplayer(ctx, js, cfg.Names)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: %v\n", err)
		return 1
	}

	prog := cli.NewProgress(errw, "replay", len(letters))
	opts.OnLetter = func(rep ops.ReplayReport) {
		d := rep.Letter
		if rep.Err != nil {
			prog.Logf("dead letter %d (%s %s/%s): not replayed, kept: %v", d.Seq, d.Reason, cli.Cell(d.OrgID), cli.Cell(d.RunID), rep.Err)
		}
		if rep.RemoveErr != nil {
			prog.Logf("dead letter %d: replayed as job %d, but not removed: %v (replaying it again within the jobs stream's duplicate window publishes nothing twice)", d.Seq, rep.JobSeq, rep.RemoveErr)
		}
		prog.Add(1)
	}
	res := r.Replay(ctx, letters, opts)
	prog.Done()
	if res.NotStarted > 0 {
		fmt.Fprintf(errw, "tallyfy-deleter dlq replay: interrupted: %d dead letters were not replayed and are kept\n", res.NotStarted)
	}
	fmt.Fprintf(stdout, "replay: %d replayed, %d duplicates, %d failed", res.Replayed, res.Duplicates, res.Failed)
	if res.NotRemoved > 0 {
		fmt.Fprintf(stdout, ", %d replayed but not removed", res.NotRemoved)
	}
	fmt.Fprintln(stdout)
	if res.Duplicates > 0 {
		fmt.Fprintln(errw, "tallyfy-deleter dlq replay: duplicates had been replayed before (within the jobs stream's duplicate window) and were not published again; their dead letters are removed")
	}
	if res.Failed > 0 || res.NotRemoved > 0 || res.NotStarted > 0 {
		return 1
	}
	return 0
}
