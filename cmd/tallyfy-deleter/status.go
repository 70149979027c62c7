package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const statusHelp = `
Shows the jobs backlog (the consumer's pending, ack-pending and redelivered
counts), the dead letters by reason and the result events kept, by outcome.
Streams that do not exist yet are reported as such.
`

// statusReport is what `status --json` prints.
type statusReport struct {
	Jobs        jobsStatus    `json:"jobs"`
	DeadLetters dlqStatus     `json:"dead_letters"`
	Results     resultsStatus `json:"results"`
}

type jobsStatus struct {
	Stream string `json:"stream"`
	Exists bool   `json:"exists"`
	// Messages are the jobs stored: not yet delivered, in progress, or
	// waiting for a retry.
	Messages uint64         `json:"messages"`
	Consumer consumerStatus `json:"consumer"`
}

type consumerStatus struct {
	Name   string `json:"name"`
	Exists bool   `json:"exists"`
	// Backlog is the jobs not yet delivered to any worker.
	Backlog uint64 `json:"backlog"`
	// AckPending is the jobs delivered and not yet finished (in a worker's
	// hands, or waiting for a retry).
	AckPending int `json:"ack_pending"`
	// Redelivered is the jobs delivered more than once, not yet finished.
	Redelivered int `json:"redelivered"`
	// Waiting is the pull requests of workers waiting for jobs.
	Waiting int  `json:"waiting"`
	Paused  bool `json:"paused,omitempty"`
}

type dlqStatus struct {
	Stream   string            `json:"stream"`
	Exists   bool              `json:"exists"`
	Total    uint64            `json:"total"`
	ByReason map[string]uint64 `json:"by_reason"`
}

type resultsStatus struct {
	Stream string `json:"stream"`
	Exists bool   `json:"exists"`
	// MaxAge is how long the stream keeps events: the counts cover that
	// period, not all time.
	MaxAge    string            `json:"max_age,omitempty"`
	Total     uint64            `json:"total"`
	ByOutcome map[string]uint64 `json:"by_outcome"`
}

// Every reason and outcome the worker knows, in the README's order, so
// that the report always shows them, with 0 where there are none.
var (
	knownReasons = []worker.Reason{
		worker.ReasonNotArchived, worker.ReasonForbidden, worker.ReasonRejected, worker.ReasonRetriesExhausted,
		worker.ReasonInvalidJob, worker.ReasonOrgNotAllowed, worker.ReasonMaxDeliveries,
	}
	knownOutcomes = []worker.Outcome{
		worker.OutcomeDeleted, worker.OutcomeNotFound, worker.OutcomeDeadLettered, worker.OutcomeDryRun,
	}
)

func cmdStatus(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var cfg settings.Tool
	var jsonOut bool
	s := settings.ToolSettings(&cfg)
	s.Bool(&jsonOut, "", "json", "false", "print JSON instead of tables")
	rest, code, ok := s.Command("status", args, getenv, stdout, stderr, statusHelp)
	if !ok {
		return code
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "tallyfy-deleter status: takes no arguments, got %q\n", rest)
		return 2
	}
	errw := cli.NewSyncWriter(stderr)
	js, disconnect, err := cli.ToolConnect(cfg.NATSURL, cfg.NATSCreds, "status", errw)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter status: %v\n", err)
		return 1
	}
	defer disconnect()
	ctx, cancel := context.WithTimeout(context.Background(), cli.ToolTimeout)
	defer cancel()
	rep, err := collectStatus(ctx, js, cfg.Names)
	if err != nil {
		fmt.Fprintf(errw, "tallyfy-deleter status: %v\n", err)
		return 1
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(errw, "tallyfy-deleter status: %v\n", err)
			return 1
		}
		return 0
	}
	printStatus(stdout, rep)
	return 0
}

func collectStatus(ctx context.Context, js jetstream.JetStream, n worker.Config) (*statusReport, error) {
	rep := &statusReport{
		Jobs:        jobsStatus{Stream: n.JobsStream, Consumer: consumerStatus{Name: n.Consumer}},
		DeadLetters: dlqStatus{Stream: n.DLQStream, ByReason: map[string]uint64{}},
		Results:     resultsStatus{Stream: n.ResultsStream, ByOutcome: map[string]uint64{}},
	}
	for _, r := range knownReasons {
		rep.DeadLetters.ByReason[string(r)] = 0
	}
	for _, o := range knownOutcomes {
		rep.Results.ByOutcome[string(o)] = 0
	}

	jobs, err := js.Stream(ctx, n.JobsStream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
	case err != nil:
		return nil, fmt.Errorf("stream %s: %w", n.JobsStream, err)
	default:
		rep.Jobs.Exists = true
		rep.Jobs.Messages = jobs.CachedInfo().State.Msgs
		cons, err := jobs.Consumer(ctx, n.Consumer)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			return nil, fmt.Errorf("consumer %s: %w", n.Consumer, err)
		default:
			ci := cons.CachedInfo()
			rep.Jobs.Consumer = consumerStatus{
				Name: n.Consumer, Exists: true,
				Backlog: ci.NumPending, AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered,
				Waiting: ci.NumWaiting, Paused: ci.Paused,
			}
		}
	}

	rep.DeadLetters.Exists, rep.DeadLetters.Total, _, err = countBySubject(ctx, js, n.DLQStream, n.DLQSubject, rep.DeadLetters.ByReason)
	if err != nil {
		return nil, err
	}
	var info *jetstream.StreamInfo
	rep.Results.Exists, rep.Results.Total, info, err = countBySubject(ctx, js, n.ResultsStream, n.ResultsSubject, rep.Results.ByOutcome)
	if err != nil {
		return nil, err
	}
	if info != nil && info.Config.MaxAge > 0 {
		rep.Results.MaxAge = info.Config.MaxAge.String()
	}
	return rep, nil
}

// countBySubject adds to counts the messages of stream on each subject
// <prefix>.<token>, keyed by token.
func countBySubject(ctx context.Context, js jetstream.JetStream, stream, prefix string, counts map[string]uint64) (bool, uint64, *jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, 0, nil, nil
	}
	if err != nil {
		return false, 0, nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".>"))
	if err != nil {
		return false, 0, nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	for subj, c := range info.State.Subjects {
		counts[strings.TrimPrefix(subj, prefix+".")] += c
	}
	return true, info.State.Msgs, info, nil
}

func printStatus(w io.Writer, r *statusReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()

	j := r.Jobs
	switch {
	case !j.Exists:
		fmt.Fprintf(tw, "JOBS  stream %s: not created yet (a worker creates it when it starts)\n", j.Stream)
	case !j.Consumer.Exists:
		fmt.Fprintf(tw, "JOBS  stream %s, consumer %s: consumer not created yet (a worker creates it when it starts)\n", j.Stream, j.Consumer.Name)
		fmt.Fprintf(tw, "  in the stream\t%d\n", j.Messages)
	default:
		c := j.Consumer
		paused := ""
		if c.Paused {
			paused = " (paused)"
		}
		fmt.Fprintf(tw, "JOBS  stream %s, consumer %s%s\n", j.Stream, c.Name, paused)
		fmt.Fprintf(tw, "  backlog\t%d\tnot yet delivered to a worker\n", c.Backlog)
		fmt.Fprintf(tw, "  ack pending\t%d\tdelivered, not yet finished (in progress or waiting to retry)\n", c.AckPending)
		fmt.Fprintf(tw, "  redelivered\t%d\tdelivered more than once, not yet finished\n", c.Redelivered)
		fmt.Fprintf(tw, "  waiting pulls\t%d\tworkers waiting for jobs\n", c.Waiting)
		fmt.Fprintf(tw, "  in the stream\t%d\tjobs stored, not yet finished\n", j.Messages)
	}
	fmt.Fprintln(tw)

	d := r.DeadLetters
	if !d.Exists {
		fmt.Fprintf(tw, "DEAD LETTERS  stream %s: not created yet\n", d.Stream)
	} else {
		fmt.Fprintf(tw, "DEAD LETTERS  stream %s, by reason\n", d.Stream)
		printCounts(tw, d.ByReason, reasonNames(), d.Total)
	}
	fmt.Fprintln(tw)

	res := r.Results
	if !res.Exists {
		fmt.Fprintf(tw, "RESULTS  stream %s: not created yet\n", res.Stream)
		return
	}
	kept := ""
	if res.MaxAge != "" {
		kept = ", events of the last " + res.MaxAge
	}
	fmt.Fprintf(tw, "RESULTS  stream %s, by outcome%s\n", res.Stream, kept)
	printCounts(tw, res.ByOutcome, outcomeNames(), res.Total)
}

// printCounts prints counts in the order of known, then any others by
// name.
func printCounts(tw io.Writer, counts map[string]uint64, known []string, total uint64) {
	keys := slices.Clone(known)
	var others []string
	for k := range counts {
		if !slices.Contains(known, k) {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	for _, k := range append(keys, others...) {
		fmt.Fprintf(tw, "  %s\t%d\n", cli.Cell(k), counts[k])
	}
	fmt.Fprintf(tw, "  total\t%d\n", total)
}

func reasonNames() []string {
	out := make([]string, len(knownReasons))
	for i, r := range knownReasons {
		out[i] = string(r)
	}
	return out
}

func outcomeNames() []string {
	out := make([]string, len(knownOutcomes))
	for i, o := range knownOutcomes {
		out[i] = string(o)
	}
	return out
}

// What follows is shared by the operator tools (enqueue, dlq, status).
