package ops

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// storeResult stores r as the worker publishes a result event, and
// returns its sequence in the results stream.
func storeResult(t *testing.T, js jetstream.JetStream, r worker.Result) uint64 {
	t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(worker.DefaultResultsSubject + "." + string(r.Outcome))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(r.JobSeq, 10))
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("storing a result event: %v", err)
	}
	if ack.Duplicate {
		t.Fatalf("result event of job %d dropped as a duplicate", r.JobSeq)
	}
	return ack.Sequence
}

// storeRaw stores body on the subject of outcome, as something other than
// the worker might.
func storeRaw(t *testing.T, js jetstream.JetStream, outcome, body string) uint64 {
	t.Helper()
	ack, err := js.Publish(context.Background(), worker.DefaultResultsSubject+"."+outcome, []byte(body))
	if err != nil {
		t.Fatalf("storing an event: %v", err)
	}
	return ack.Sequence
}

// scanResults runs ScanResults and returns the sequences of the events it
// selected, with the scan.
func scanResults(t *testing.T, js jetstream.JetStream, q ResultsQuery) ([]uint64, *ResultsScan) {
	t.Helper()
	var seqs []uint64
	scan, err := ScanResults(context.Background(), js, names, q, ScanOptions{OnEvent: func(ev *ResultEvent) error {
		seqs = append(seqs, ev.Seq)
		return nil
	}})
	if err != nil {
		t.Fatalf("ScanResults(%+v): %v", q, err)
	}
	if scan.Matched != len(seqs) {
		t.Errorf("Matched %d, but %d events were handed over", scan.Matched, len(seqs))
	}
	return seqs, scan
}

// consumers is how many consumers the results stream has.
func consumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	s, err := js.Stream(context.Background(), worker.DefaultResultsStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Consumers
}

var day = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

func TestResultsScanFilters(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	// Seconds apart, close to the time they are stored, as the worker's
	// events are.
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	const step = time.Second
	events := []worker.Result{
		{OrgID: "acme", RunID: "r1", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeleted, Status: 204, JobSeq: 1, At: base.Add(1 * step)},
		{OrgID: "acme", RunID: "r2", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonNotArchived, Status: 422, JobSeq: 2, At: base.Add(2 * step)},
		{OrgID: "beta", RunID: "r1", RequestID: "gdpr-7", Outcome: worker.OutcomeNotFound, Status: 404, JobSeq: 3, At: base.Add(3 * step)},
		{OrgID: "acme", RunID: "r3", Outcome: worker.OutcomeDryRun, JobSeq: 4, At: base.Add(4 * step)},
		{OrgID: "acme", RunID: "r2", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeleted, Status: 204, JobSeq: 5, At: base.Add(5 * step)},
	}
	seq := make([]uint64, len(events))
	for i, r := range events {
		seq[i] = storeResult(t, js, r)
	}
	tests := []struct {
		name string
		q    ResultsQuery
		want []uint64
	}{
		{"everything", ResultsQuery{}, seq},
		{"request", ResultsQuery{RequestID: "gdpr-1142"}, []uint64{seq[0], seq[1], seq[4]}},
		{"org", ResultsQuery{Org: "beta"}, []uint64{seq[2]}},
		{"run of any org", ResultsQuery{Run: "r1"}, []uint64{seq[0], seq[2]}},
		{"org and run", ResultsQuery{Org: "acme", Run: "r2"}, []uint64{seq[1], seq[4]}},
		{"outcome", ResultsQuery{Outcome: "deleted"}, []uint64{seq[0], seq[4]}},
		{"outcome and request", ResultsQuery{Outcome: "dead_lettered", RequestID: "gdpr-1142"}, []uint64{seq[1]}},
		{"since includes its instant", ResultsQuery{Since: base.Add(3 * step)}, []uint64{seq[2], seq[3], seq[4]}},
		{"until excludes its instant", ResultsQuery{Until: base.Add(3 * step)}, []uint64{seq[0], seq[1]}},
		{"since and until", ResultsQuery{Since: base.Add(2 * step), Until: base.Add(4*step + time.Millisecond)}, []uint64{seq[1], seq[2], seq[3]}},
		{"a request no event has", ResultsQuery{RequestID: "gdpr-1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, scan := scanResults(t, js, tt.q)
			if !slices.Equal(got, tt.want) {
				t.Errorf("selected %v, want %v", got, tt.want)
			}
			if scan.Invalid != 0 || scan.Stream != worker.DefaultResultsStream || scan.MaxAge != worker.DefaultResultsMaxAge || scan.Oldest.IsZero() {
				t.Errorf("scan %+v", scan)
			}
		})
	}
	if n := consumers(t, js); n != 0 {
		t.Errorf("the scans left %d consumers on the results stream", n)
	}
}

// TestResultsScanDecodes: the event is decoded as the worker wrote it, its
// raw JSON kept, unknown fields ignored, and anything that is not an event
// counted as invalid rather than failing the scan.
func TestResultsScanDecodes(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	want := worker.Result{
		OrgID: "acme", RunID: "r1", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonNotArchived,
		Status: 422, Error: "tallyfy: 422 Unprocessable Entity: Process isn't archived yet", TallyfyRequestID: "9c1f",
		Attempts: 1, JobSeq: 42, Worker: "deleter-7d9f-abc", At: day.Add(123 * time.Millisecond),
	}
	s1 := storeResult(t, js, want)
	bad := []uint64{
		storeRaw(t, js, "deleted", `not json`),
		storeRaw(t, js, "deleted", `null`),
		storeRaw(t, js, "deleted", `[1,2]`),
		storeRaw(t, js, "deleted", `{"run_id":"r2","status":"204"}`),
		storeRaw(t, js, "deleted", `{"run_id":"r2"`),
		storeRaw(t, js, "deleted", ``),
	}
	s2 := storeRaw(t, js, "not_found", "{\n  \"run_id\": \"r3\",\n  \"archived\": true,\n  \"future_field\": {\"x\": [1]}\n}\n")

	var got []*ResultEvent
	scan, err := ScanResults(context.Background(), js, names, ResultsQuery{}, ScanOptions{OnEvent: func(ev *ResultEvent) error {
		got = append(got, ev)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if scan.Read != 8 || scan.Matched != 2 || scan.Invalid != len(bad) || !slices.Equal(scan.InvalidSeqs, bad) {
		t.Errorf("read %d, matched %d, invalid %d %v; want 8, 2, %d %v", scan.Read, scan.Matched, scan.Invalid, scan.InvalidSeqs, len(bad), bad)
	}
	if len(got) != 2 {
		t.Fatalf("%d events", len(got))
	}
	e1, e2 := got[0], got[1]
	if e1.Seq != s1 || e1.Result != want || e1.Stored.IsZero() {
		t.Errorf("event %d: %+v\nwant %+v", e1.Seq, e1.Result, want)
	}
	if body, _ := json.Marshal(want); string(e1.Raw) != string(body) {
		t.Errorf("raw %s, want the event as stored %s", e1.Raw, body)
	}
	// No outcome, no at: the subject's outcome and the stored time.
	if e2.Seq != s2 || e2.RunID != "r3" || !e2.Archived || e2.Outcome != worker.OutcomeNotFound || !e2.At.Equal(e2.Stored) {
		t.Errorf("event %d: %+v", e2.Seq, e2)
	}
	if want := `{"run_id":"r3","archived":true,"future_field":{"x":[1]}}`; string(e2.Raw) != want {
		t.Errorf("raw %q, want it on one line: %q", e2.Raw, want)
	}
}

func TestResultsScanWithoutStream(t *testing.T) {
	js := newJetStream(t)
	_, err := ScanResults(context.Background(), js, names, ResultsQuery{}, ScanOptions{})
	if !errors.Is(err, ErrNoResultsStream) {
		t.Fatalf("got %v, want ErrNoResultsStream", err)
	}
	if !strings.Contains(err.Error(), worker.DefaultResultsStream) || !strings.Contains(err.Error(), "start a worker") {
		t.Errorf("the error does not name the stream or say what to do: %v", err)
	}
}

func TestResultsScanOfEmptyStream(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	for _, q := range []ResultsQuery{{}, {Since: time.Now().Add(-time.Hour)}, {Outcome: "deleted"}} {
		seqs, scan := scanResults(t, js, q)
		if len(seqs) != 0 || scan.Read != 0 || !scan.Oldest.IsZero() {
			t.Errorf("%+v: %v, %+v", q, seqs, scan)
		}
	}
	// Events, but none of the outcome asked for: the scan ends at once.
	storeResult(t, js, worker.Result{RunID: "r1", Outcome: worker.OutcomeDeleted, JobSeq: 1})
	start := time.Now()
	if seqs, scan := scanResults(t, js, ResultsQuery{Outcome: "dry_run"}); len(seqs) != 0 || scan.Read != 0 {
		t.Errorf("dry_run: %v, %+v", seqs, scan)
	}
	if d := time.Since(start); d > scanIdle {
		t.Errorf("a scan with nothing to read took %s", d)
	}
	if n := consumers(t, js); n != 0 {
		t.Errorf("the scans left %d consumers", n)
	}
}

// TestResultsScanReadsFromTheServerTimes: Since decides where the server
// starts, by the stored time less ClockSlack, not only which events are
// shown: a scan from tomorrow reads nothing of today. Until only selects.
func TestResultsScanReadsFromTheServerTimes(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	before := time.Now()
	for i := range 5 {
		// A worker whose clock is 5 minutes behind the server's: `at` is
		// earlier than the stored time, within ClockSlack.
		storeResult(t, js, worker.Result{RunID: "r" + strconv.Itoa(i), Outcome: worker.OutcomeDeleted, JobSeq: uint64(i + 1), At: before.Add(-5 * time.Minute)})
	}
	tests := []struct {
		name          string
		q             ResultsQuery
		read, matched int
	}{
		{"since tomorrow: the server starts after the last", ResultsQuery{Since: before.Add(24 * time.Hour)}, 0, 0},
		{"until last week: read, not shown", ResultsQuery{Until: before.Add(-7 * 24 * time.Hour)}, 5, 0},
		{"since their at, behind the stored time", ResultsQuery{Since: before.Add(-6 * time.Minute)}, 5, 5},
		{"since after their at, within the slack: read, not shown", ResultsQuery{Since: before.Add(-4 * time.Minute)}, 5, 0},
		{"until just after their at", ResultsQuery{Until: before.Add(-5*time.Minute + time.Millisecond)}, 5, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seqs, scan := scanResults(t, js, tt.q)
			if scan.Read != tt.read || len(seqs) != tt.matched {
				t.Errorf("read %d, matched %d; want %d, %d", scan.Read, len(seqs), tt.read, tt.matched)
			}
		})
	}
}

// TestResultsScanSnapshot: events stored while a scan runs are not read
// (the scan ends), an error from OnEvent ends the scan, and neither leaves
// a consumer behind.
func TestResultsScanSnapshot(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	for i := range 3 {
		storeResult(t, js, worker.Result{RunID: "r" + strconv.Itoa(i), Outcome: worker.OutcomeDeleted, JobSeq: uint64(i + 1)})
	}
	var progress [][2]int
	next := uint64(100)
	scan, err := ScanResults(context.Background(), js, names, ResultsQuery{}, ScanOptions{
		OnEvent: func(ev *ResultEvent) error {
			next++
			storeResult(t, js, worker.Result{RunID: "new", Outcome: worker.OutcomeDeleted, JobSeq: next})
			return nil
		},
		OnProgress: func(read, total int) { progress = append(progress, [2]int{read, total}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if scan.Read != 3 || scan.Matched != 3 {
		t.Errorf("read %d, matched %d; want the 3 stored when the scan started", scan.Read, scan.Matched)
	}
	if len(progress) == 0 || progress[len(progress)-1] != [2]int{3, 3} {
		t.Errorf("progress %v, want it to end at 3 of 3", progress)
	}

	// The same on one outcome's subject, whose last event is not the
	// stream's last: the scan ends at the stream's last sequence of when it
	// started.
	storeResult(t, js, worker.Result{RunID: "dry", Outcome: worker.OutcomeDryRun, JobSeq: 99})
	published := 0
	scan, err = ScanResults(context.Background(), js, names, ResultsQuery{Outcome: "deleted"}, ScanOptions{OnEvent: func(ev *ResultEvent) error {
		if published < 10 {
			published++
			next++
			storeResult(t, js, worker.Result{RunID: "new", Outcome: worker.OutcomeDeleted, JobSeq: next})
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if scan.Read != 6 {
		t.Errorf("read %d deleted events, want the 6 stored when the scan started", scan.Read)
	}

	stop := errors.New("stdout closed")
	calls := 0
	_, err = ScanResults(context.Background(), js, names, ResultsQuery{}, ScanOptions{OnEvent: func(*ResultEvent) error {
		calls++
		return stop
	}})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("got %v after %d calls, want the callback's error after 1", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	_, err = ScanResults(ctx, js, names, ResultsQuery{}, ScanOptions{OnEvent: func(*ResultEvent) error {
		cancel()
		return nil
	}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled scan: got %v, want context.Canceled", err)
	}
	if n := consumers(t, js); n != 0 {
		t.Errorf("the scans left %d consumers", n)
	}
}

func TestResultsSummary(t *testing.T) {
	ev := func(seq, job uint64, req, org, run string, o worker.Outcome, reason worker.Reason) *ResultEvent {
		return &ResultEvent{Seq: seq, Result: worker.Result{
			RequestID: req, OrgID: org, RunID: run, Outcome: o, Reason: reason, JobSeq: job, At: day.Add(time.Duration(seq) * time.Minute),
		}}
	}
	const (
		del = worker.OutcomeDeleted
		nf  = worker.OutcomeNotFound
		dl  = worker.OutcomeDeadLettered
		dry = worker.OutcomeDryRun
	)
	tests := []struct {
		name   string
		events []*ResultEvent
		want   []RequestSummary // ByReason: only the reasons that are not 0
	}{
		{
			name:   "deleted and not found are both gone",
			events: []*ResultEvent{ev(1, 1, "q", "o", "r1", del, ""), ev(2, 2, "q", "o", "r2", nf, "")},
			want:   []RequestSummary{{RequestID: "q", Jobs: 2, Deleted: 1, NotFound: 1, Complete: true}},
		},
		{
			name:   "a dead letter makes it incomplete",
			events: []*ResultEvent{ev(1, 1, "q", "o", "r1", del, ""), ev(2, 2, "q", "o", "r2", dl, worker.ReasonNotArchived), ev(3, 3, "q", "o", "r3", dl, worker.ReasonForbidden)},
			want: []RequestSummary{{RequestID: "q", Jobs: 3, Deleted: 1, DeadLettered: 2,
				ByReason: map[string]int{"not_archived": 1, "forbidden": 1}}},
		},
		{
			name:   "a dry run is not a deletion",
			events: []*ResultEvent{ev(1, 1, "q", "o", "r1", dry, "")},
			want:   []RequestSummary{{RequestID: "q", Jobs: 1, DryRun: 1}},
		},
		{
			name:   "the last event of a job wins",
			events: []*ResultEvent{ev(1, 7, "q", "o", "r1", dl, worker.ReasonRetriesExhausted), ev(2, 7, "q", "o", "r1", nf, "")},
			want:   []RequestSummary{{RequestID: "q", Jobs: 1, NotFound: 1, Complete: true}},
		},
		{
			name:   "the last event wins the other way round too",
			events: []*ResultEvent{ev(1, 7, "q", "o", "r1", del, ""), ev(2, 7, "q", "o", "r1", dl, worker.ReasonRejected)},
			want:   []RequestSummary{{RequestID: "q", Jobs: 1, DeadLettered: 1, ByReason: map[string]int{"rejected": 1}}},
		},
		{
			name: "a replayed dead letter whose new job deleted the run is resolved",
			events: []*ResultEvent{ev(1, 1, "q", "o", "r1", del, ""), ev(2, 2, "q", "o", "r2", dl, worker.ReasonNotArchived),
				ev(3, 9, "q", "o", "r2", del, "")},
			want: []RequestSummary{{RequestID: "q", Jobs: 3, Deleted: 2, DeadLettered: 1, ByReason: map[string]int{"not_archived": 1},
				Resolved: 1, Complete: true}},
		},
		{
			name:   "the same run in another org or request resolves nothing",
			events: []*ResultEvent{ev(1, 1, "q", "o", "r1", dl, worker.ReasonForbidden), ev(2, 2, "q", "other", "r1", del, ""), ev(3, 3, "p", "o", "r1", del, "")},
			want: []RequestSummary{
				{RequestID: "q", Jobs: 2, Deleted: 1, DeadLettered: 1, ByReason: map[string]int{"forbidden": 1}},
				{RequestID: "p", Jobs: 1, Deleted: 1, Complete: true},
			},
		},
		{
			name:   "an invalid job without a run is never resolved",
			events: []*ResultEvent{ev(1, 1, "q", "", "", dl, worker.ReasonInvalidJob), ev(2, 2, "q", "", "", del, "")},
			want:   []RequestSummary{{RequestID: "q", Jobs: 2, Deleted: 1, DeadLettered: 1, ByReason: map[string]int{"invalid_job": 1}}},
		},
		{
			name:   "jobs without a request ID, and events without a job_seq, each a job",
			events: []*ResultEvent{ev(1, 0, "", "o", "r1", del, ""), ev(2, 0, "", "o", "r1", del, "")},
			want:   []RequestSummary{{RequestID: "", Jobs: 2, Deleted: 2, Complete: true}},
		},
		{
			name:   "an outcome this version does not know is not gone",
			events: []*ResultEvent{ev(1, 1, "q", "o", "r1", "archived_only", "")},
			want:   []RequestSummary{{RequestID: "q", Jobs: 1, Other: 1}},
		},
		{
			name:   "requests in the order of their first event",
			events: []*ResultEvent{ev(5, 1, "b", "o", "r1", del, ""), ev(6, 2, "a", "o", "r2", del, ""), ev(7, 3, "b", "o", "r3", del, "")},
			want: []RequestSummary{
				{RequestID: "b", Jobs: 2, Deleted: 2, Complete: true},
				{RequestID: "a", Jobs: 1, Deleted: 1, Complete: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSummary()
			// First and last are those of each job's last event.
			lastOfJob := map[uint64]*ResultEvent{}
			for _, e := range tt.events {
				s.Add(e)
				k := e.JobSeq
				if k == 0 {
					k = 1<<63 + e.Seq
				}
				lastOfJob[k] = e
			}
			first, last := map[string]time.Time{}, map[string]time.Time{}
			for _, e := range lastOfJob {
				if f, ok := first[e.RequestID]; !ok || e.At.Before(f) {
					first[e.RequestID] = e.At
				}
				if e.At.After(last[e.RequestID]) {
					last[e.RequestID] = e.At
				}
			}
			got := s.Requests()
			if len(got) != len(tt.want) {
				t.Fatalf("%d requests, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, w := range tt.want {
				g := got[i]
				reasons := map[string]int{}
				for k, v := range g.ByReason {
					if v != 0 {
						reasons[k] = v
					}
				}
				for _, r := range worker.Reasons {
					if _, ok := g.ByReason[string(r)]; !ok {
						t.Errorf("%q: ByReason lacks %s", g.RequestID, r)
					}
				}
				if w.ByReason == nil {
					w.ByReason = map[string]int{}
				}
				if !maps.Equal(reasons, w.ByReason) {
					t.Errorf("%q: by reason %v, want %v", g.RequestID, reasons, w.ByReason)
				}
				if !g.First.Equal(first[w.RequestID]) || !g.Last.Equal(last[w.RequestID]) {
					t.Errorf("%q: first %s last %s", g.RequestID, g.First, g.Last)
				}
				g.ByReason, w.ByReason, g.First, g.Last = nil, nil, time.Time{}, time.Time{}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("request %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
}

// TestResultsWaiter: the waiter ends a scan when the server has nothing
// left, but not while events the server has sent are still to be read,
// however long ago its idle deadline passed.
func TestResultsWaiter(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	for i := range 3 {
		storeResult(t, js, worker.Result{RunID: "r" + strconv.Itoa(i), Outcome: worker.OutcomeDeleted, JobSeq: uint64(i + 1)})
	}
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, worker.DefaultResultsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	w := newWaiter(ctx, cons, it)
	defer w.stop()
	seqOf := func(m jetstream.Msg, err error) uint64 {
		t.Helper()
		if err != nil {
			t.Fatalf("next: %v", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		return meta.Sequence.Stream
	}
	if s := seqOf(w.next(0)); s != 1 {
		t.Fatalf("first event %d", s)
	}
	// All three sent to the client: the server has none pending.
	for deadline := time.Now().Add(5 * time.Second); ; {
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.Delivered.Stream == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not send the events: %+v", info)
		}
		runtime.Gosched()
	}
	// The idle deadline passed long ago, as in a scan busy printing.
	w.cancel()
	w.idle, w.cancel = context.WithDeadline(ctx, time.Now().Add(-time.Second))
	w.last = time.Now().Add(-2 * scanIdle)
	if s := seqOf(w.next(1)); s != 2 {
		t.Errorf("after the deadline passed: event %d, want 2", s)
	}
	if s := seqOf(w.next(2)); s != 3 {
		t.Errorf("event %d, want 3", s)
	}
	began := time.Now()
	if _, err := w.next(3); !errors.Is(err, errScanEnd) {
		t.Errorf("got %v, want errScanEnd", err)
	}
	if took := time.Since(began); took > 3*scanIdle {
		t.Errorf("ending took %s", took)
	}
}

// TestResultsScanOfSourcedCopy: the README's advice for an audit longer
// than the results stream keeps events, a stream that sources it with
// limits of its own, is read by the same scan when named as the results
// stream: the copy keeps the events' subjects.
func TestResultsScanOfSourcedCopy(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	base := time.Now().UTC().Truncate(time.Second).Add(-time.Minute)
	events := []worker.Result{
		{OrgID: "acme", RunID: "r1", RequestID: "gdpr-1142", Outcome: worker.OutcomeDeleted, Status: 200, JobSeq: 1, At: base},
		{OrgID: "acme", RunID: "r2", RequestID: "gdpr-1142", Outcome: worker.OutcomeNotFound, Status: 404, JobSeq: 2, At: base.Add(time.Second)},
		{OrgID: "acme", RunID: "r3", RequestID: "gdpr-7", Outcome: worker.OutcomeDeadLettered, Reason: worker.ReasonForbidden, Status: 403, JobSeq: 3, At: base.Add(2 * time.Second)},
	}
	for _, r := range events {
		storeResult(t, js, r)
	}
	ctx := context.Background()
	audit, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       "TALLYFY_RUN_RESULTS_AUDIT",
		Sources:    []*jetstream.StreamSource{{Name: worker.DefaultResultsStream}},
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     7 * 365 * 24 * time.Hour,
		Storage:    jetstream.FileStorage,
		DenyDelete: true,
		DenyPurge:  true,
	})
	if err != nil {
		t.Fatalf("creating the sourced copy: %v", err)
	}
	awaitCond(t, "the copy to hold every event", func() bool {
		info, err := audit.Info(ctx)
		return err == nil && info.State.Msgs == uint64(len(events))
	})
	copyNames := names
	copyNames.ResultsStream = "TALLYFY_RUN_RESULTS_AUDIT"
	sum := NewSummary()
	scan, err := ScanResults(ctx, js, copyNames, ResultsQuery{RequestID: "gdpr-1142"}, ScanOptions{OnEvent: func(ev *ResultEvent) error {
		sum.Add(ev)
		return nil
	}})
	if err != nil {
		t.Fatalf("scanning the copy: %v", err)
	}
	if scan.Read != len(events) || scan.Matched != 2 || scan.MaxAge != 7*365*24*time.Hour {
		t.Errorf("scan of the copy: read %d, matched %d, max age %s; want 3, 2, 61320h", scan.Read, scan.Matched, scan.MaxAge)
	}
	reqs := sum.Requests()
	if len(reqs) != 1 || !reqs[0].Complete || reqs[0].Deleted != 1 || reqs[0].NotFound != 1 {
		t.Errorf("summary of gdpr-1142 from the copy: %+v", reqs)
	}
	byOutcome, err := ScanResults(ctx, js, copyNames, ResultsQuery{Outcome: string(worker.OutcomeDeadLettered)}, ScanOptions{})
	if err != nil {
		t.Fatalf("scanning the copy by outcome: %v", err)
	}
	if byOutcome.Matched != 1 {
		t.Errorf("the copy's dead_lettered events: %d, want 1", byOutcome.Matched)
	}
}
