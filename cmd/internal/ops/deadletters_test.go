package ops

import (
	"context"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func TestScanWithoutStream(t *testing.T) {
	js := newJetStream(t)
	scan, err := ScanDeadLetters(context.Background(), js, names, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if scan.Exists || len(scan.Letters) != 0 {
		t.Errorf("%+v", scan)
	}
}

func TestScanFilters(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	body := func(org, run string) string { return fmt.Sprintf(`{"org_id":%q,"run_id":%q}`, org, run) }
	s1 := storeDeadLetter(t, js, worker.ReasonNotArchived, "org1", "r1", body("org1", "r1"))
	s2 := storeDeadLetter(t, js, worker.ReasonNotArchived, "org2", "r2", body("org2", "r2"))
	s3 := storeDeadLetter(t, js, worker.ReasonForbidden, "org1", "r3", body("org1", "r3"))
	s4 := storeDeadLetter(t, js, worker.ReasonInvalidJob, "", "", "not json")

	tests := []struct {
		name         string
		filter       Filter
		wantSeqs     []uint64
		wantMatching int
		wantMore     bool
		wantMissing  []uint64
	}{
		{"everything", Filter{}, []uint64{s1, s2, s3, s4}, 4, false, nil},
		{"by reason", Filter{Reason: "not_archived"}, []uint64{s1, s2}, 2, false, nil},
		{"by org", Filter{Org: "org1"}, []uint64{s1, s3}, -1, false, nil},
		{"by reason and org", Filter{Reason: "not_archived", Org: "org2"}, []uint64{s2}, -1, false, nil},
		{"limited", Filter{Limit: 2}, []uint64{s1, s2}, 4, true, nil},
		{"limited by org", Filter{Org: "org1", Limit: 1}, []uint64{s1}, -1, true, nil},
		{"limit not reached", Filter{Reason: "forbidden", Limit: 5}, []uint64{s3}, 1, false, nil},
		{"by seq, in the order given", Filter{Seqs: []uint64{s4, s2, 99}}, []uint64{s4, s2}, -1, false, []uint64{99}},
		{"by seq and reason", Filter{Seqs: []uint64{s1, s3}, Reason: "forbidden"}, []uint64{s3}, -1, false, nil},
		{"no match", Filter{Reason: "rejected"}, nil, 0, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scan, err := ScanDeadLetters(context.Background(), js, names, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, d := range scan.Letters {
				got = append(got, d.Seq)
			}
			if !scan.Exists || fmt.Sprint(got) != fmt.Sprint(tc.wantSeqs) {
				t.Errorf("seqs %v, want %v", got, tc.wantSeqs)
			}
			if scan.Matching != tc.wantMatching || scan.More != tc.wantMore || fmt.Sprint(scan.Missing) != fmt.Sprint(tc.wantMissing) {
				t.Errorf("matching %d, more %v, missing %v; want %d, %v, %v", scan.Matching, scan.More, scan.Missing,
					tc.wantMatching, tc.wantMore, tc.wantMissing)
			}
		})
	}
}

// What a dead letter's headers leave out comes from its subject and body.
func TestScanReadsHeadersSubjectAndBody(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	full := nats.NewMsg(worker.DefaultDLQSubject + ".not_archived")
	full.Data = []byte(`{"org_id":"org1","run_id":"r1"}`)
	for k, v := range map[string]string{
		worker.HeaderReason: "not_archived", worker.HeaderStatus: "422", worker.HeaderAttempts: "3",
		worker.HeaderJobSeq: "42", worker.HeaderWorker: "w-1", worker.HeaderRequestID: "req-9",
		worker.HeaderError: "tallyfy: 422", worker.HeaderOrgID: "org1", worker.HeaderRunID: "r1",
	} {
		full.Header.Set(k, v)
	}
	bare := nats.NewMsg(worker.DefaultDLQSubject + ".invalid_job")
	bare.Data = []byte(`{"org_id":"org2","run_id":"a/b"}`)
	binary := nats.NewMsg(worker.DefaultDLQSubject + ".invalid_job")
	binary.Data = []byte{'{', 0xff, '}'}
	for _, m := range []*nats.Msg{full, bare, binary} {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	scan, err := ScanDeadLetters(ctx, js, names, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(scan.Letters) != 3 {
		t.Fatalf("%d dead letters, want 3", len(scan.Letters))
	}
	d := scan.Letters[0]
	if d.Seq != 1 || d.Subject != "tallyfy.runs.dlq.not_archived" || d.Reason != "not_archived" || d.Status != 422 || d.Attempts != 3 ||
		d.JobSeq != 42 || d.Worker != "w-1" || d.TallyfyRequestID != "req-9" || d.Error != "tallyfy: 422" ||
		d.OrgID != "org1" || d.RunID != "r1" || d.Body != string(full.Data) || d.BodyBase64 != "" ||
		d.Time.IsZero() || d.Time.Location() != time.UTC || d.Headers[worker.HeaderWorker][0] != "w-1" {
		t.Errorf("with every header: %+v", d)
	}
	// No headers: the reason from the subject, the valid org from the body,
	// not the invalid run.
	d = scan.Letters[1]
	if d.Reason != "invalid_job" || d.OrgID != "org2" || d.RunID != "" || d.Status != 0 || d.Headers == nil {
		t.Errorf("without headers: %+v", d)
	}
	d = scan.Letters[2]
	if d.Body != string(binary.Data) || d.BodyBase64 != base64.StdEncoding.EncodeToString(binary.Data) {
		t.Errorf("not UTF-8: body %q, base64 %q", d.Body, d.BodyBase64)
	}
}

func TestFilterNarrowed(t *testing.T) {
	tests := []struct {
		f    Filter
		want bool
	}{
		{Filter{}, false},
		{Filter{Limit: 3}, false},
		{Filter{Reason: "forbidden"}, true},
		{Filter{Org: "org1"}, true},
		{Filter{Seqs: []uint64{}}, true}, // --seq given, even if empty
	}
	for _, tc := range tests {
		if got := tc.f.Narrowed(); got != tc.want {
			t.Errorf("%+v: Narrowed %v, want %v", tc.f, got, tc.want)
		}
	}
}

// A scan that counted dead letters which are deleted before it reads them
// (a replay running meanwhile) ends instead of waiting out its timeout.
func TestDLQScanEndsWhenTheRestIsGone(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	storeDeadLetter(t, js, worker.ReasonNotArchived, "org1", "r1", "{}")
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, worker.DefaultDLQStream, jetstream.OrderedConsumerConfig{})
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
	m, err := w.next(0)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if _, err := w.next(meta.Sequence.Stream); err != errScanEnd {
		t.Errorf("got %v, want errScanEnd", err)
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
}
