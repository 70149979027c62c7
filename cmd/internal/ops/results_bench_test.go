package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// benchEvents is a year of history for a busy pool, give or take: the
// contract is that scanning it takes under 5 s on a 2-core machine.
const benchEvents = 100_000

// benchResult is the i-th of a realistic mix of events: mostly deleted,
// some archived first, some not found, some dead-lettered with Tallyfy's
// error, in requests of 50 jobs each.
func benchResult(i int) worker.Result {
	r := worker.Result{
		OrgID: "acme", RunID: fmt.Sprintf("3f2a9c%010d", i), RequestID: "gdpr-" + strconv.Itoa(i/50),
		Outcome: worker.OutcomeDeleted, Status: 204, TallyfyRequestID: "9c1f0b7e-" + strconv.Itoa(i),
		Attempts: 1, JobSeq: uint64(i + 1), Worker: "deleter-7d9f-abc", At: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 5 * time.Minute),
	}
	switch i % 20 {
	case 3:
		r.Archived, r.ArchivedAt = true, r.At.Add(-time.Second).Format(time.RFC3339)
	case 7:
		r.Outcome, r.Status = worker.OutcomeNotFound, 404
	case 13:
		r.Outcome, r.Reason, r.Status = worker.OutcomeDeadLettered, worker.ReasonNotArchived, 422
		r.Error = "tallyfy: 422 Unprocessable Entity: Process isn't archived yet, so it cannot be deleted permanently"
	}
	return r
}

// storeBenchEvents stores benchEvents result events as the worker does
// (its stream configuration, subject and Nats-Msg-Id), and returns the
// JetStream context.
func storeBenchEvents(b *testing.B) jetstream.JetStream {
	b.Helper()
	srv := testutil.JetStream(b)
	_, js := testutil.Connect(b, srv.URL())
	ctx := context.Background()
	var cfg worker.Config
	_, results, _ := cfg.StreamConfigs()
	if _, err := js.CreateStream(ctx, results); err != nil {
		b.Fatal(err)
	}
	for i := range benchEvents {
		r := benchResult(i)
		body, err := json.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg(worker.DefaultResultsSubject + "." + string(r.Outcome))
		m.Data = body
		m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(r.JobSeq, 10))
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
		if i%5000 == 4999 {
			waitPublished(b, js)
		}
	}
	waitPublished(b, js)
	s, err := js.Stream(ctx, worker.DefaultResultsStream)
	if err != nil {
		b.Fatal(err)
	}
	st := s.CachedInfo().State
	if st.Msgs != benchEvents {
		b.Fatalf("the results stream holds %d events, want %d", st.Msgs, benchEvents)
	}
	b.Logf("%d events stored in %d bytes, %d a message", st.Msgs, st.Bytes, st.Bytes/st.Msgs)
	return js
}

func waitPublished(b *testing.B, js jetstream.JetStream) {
	b.Helper()
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("async publishes not confirmed")
	}
}

// BenchmarkScanResults scans 100,000 result events: every event listed,
// one request's events picked out, and the summary of every request. One
// op is one whole scan; events/s is the rate. B/op and allocs/op include
// those of the embedded server, which runs in the same process.
//
//	go test -run XXX -bench ScanResults -benchtime 3x ./cmd/internal/ops/
func BenchmarkScanResults(b *testing.B) {
	js := storeBenchEvents(b)
	ctx := context.Background()
	bench := func(b *testing.B, q ResultsQuery, onEvent func(*ResultEvent) error, wantMatched int) {
		b.ReportAllocs()
		for b.Loop() {
			scan, err := ScanResults(ctx, js, names, q, ScanOptions{OnEvent: onEvent})
			if err != nil {
				b.Fatal(err)
			}
			if scan.Read != benchEvents || scan.Matched != wantMatched || scan.Invalid != 0 {
				b.Fatalf("read %d, matched %d, invalid %d", scan.Read, scan.Matched, scan.Invalid)
			}
		}
		b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	}
	b.Run("all", func(b *testing.B) {
		var kept []*ResultEvent
		bench(b, ResultsQuery{}, func(ev *ResultEvent) error { kept = append(kept, ev); return nil }, benchEvents)
		if len(kept) == 0 {
			b.Fatal("nothing kept")
		}
	})
	b.Run("one-request", func(b *testing.B) {
		bench(b, ResultsQuery{RequestID: "gdpr-1142"}, nil, 50)
	})
	b.Run("summary", func(b *testing.B) {
		var reqs []RequestSummary
		for b.Loop() {
			s := NewSummary()
			scan, err := ScanResults(ctx, js, names, ResultsQuery{}, ScanOptions{OnEvent: func(ev *ResultEvent) error { s.Add(ev); return nil }})
			if err != nil {
				b.Fatal(err)
			}
			if scan.Read != benchEvents {
				b.Fatalf("read %d", scan.Read)
			}
			reqs = s.Requests()
		}
		b.ReportMetric(float64(benchEvents)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		if len(reqs) != benchEvents/50 || reqs[0].Complete {
			b.Fatalf("%d requests, the first %+v", len(reqs), reqs[0])
		}
	})
}

// BenchmarkDecodeResult is the decoding of one event, alone.
func BenchmarkDecodeResult(b *testing.B) {
	body, err := json.Marshal(benchResult(13))
	if err != nil {
		b.Fatal(err)
	}
	var ev ResultEvent
	stored := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if !DecodeResult(&ev, body, "dead_lettered", stored) {
			b.Fatal("not decoded")
		}
	}
}
