package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

func TestParseJobLine(t *testing.T) {
	tests := []struct {
		name, line string
		want       worker.Job
		skip       bool
		wantErr    string
	}{
		{"CSV", "org1,r1,q1", worker.Job{OrgID: "org1", RunID: "r1", RequestID: "q1"}, false, ""},
		{"CSV without request", " org1 , r1 ", worker.Job{OrgID: "org1", RunID: "r1"}, false, ""},
		{"CSV with the default org", ",r1", worker.Job{OrgID: "dflt", RunID: "r1"}, false, ""},
		{"CSV quoted", `"org1","r1"`, worker.Job{OrgID: "org1", RunID: "r1"}, false, ""},
		{"JSON", `{"run_id":"r1","request_id":"q"}`, worker.Job{OrgID: "dflt", RunID: "r1", RequestID: "q"}, false, ""},
		{"blank", "   \r\n", worker.Job{}, true, ""},
		{"comment", "# org1,r1", worker.Job{}, true, ""},
		{"CSV header", "ORG_ID, run_id, Request_ID", worker.Job{}, true, ""},
		{"short CSV header", "org_id,run_id", worker.Job{}, true, ""},
		{"bad run in CSV", "org1,a/b", worker.Job{}, false, "run_id is not 1 to 64"},
		{"one column", "org1", worker.Job{}, false, "1 CSV fields"},
		{"four columns", "org1,r1,q1,x", worker.Job{}, false, "4 CSV fields"},
		{"broken quoting", `org1,"r1`, worker.Job{}, false, "neither a JSON object nor a CSV line"},
		{"broken JSON", `{"run_id":`, worker.Job{}, false, "not valid JSON"},
		{"too long", strings.Repeat("x", worker.MaxJobSize+1), worker.Job{}, false, "longer than 65536 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			job, skip, err := parseJobLine([]byte(tc.line), "dflt")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || skip != tc.skip || job != tc.want {
				t.Errorf("got %+v, skip %v, %v; want %+v, skip %v", job, skip, err, tc.want, tc.skip)
			}
		})
	}
}

func TestEnqueueMsgID(t *testing.T) {
	a := enqueueMsgID(worker.Job{OrgID: "org1", RunID: "r1"})
	if !regexp.MustCompile(`^enqueue-[0-9a-f]{32}$`).MatchString(a) {
		t.Errorf("%q", a)
	}
	for _, other := range []worker.Job{{OrgID: "org1", RunID: "r2"}, {OrgID: "org1", RunID: "r1", RequestID: "q"}, {OrgID: "org1r", RunID: "1"}} {
		if enqueueMsgID(other) == a {
			t.Errorf("%+v has the same ID as org1/r1", other)
		}
	}
	if enqueueMsgID(worker.Job{OrgID: "org1", RunID: "r1"}) != a {
		t.Error("the same job, another ID")
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", worker.MaxJobSize+10)
	lr := NewLineReader(strings.NewReader("a\r\n" + long + "\nb\n\nlast"))
	var got []string
	for {
		line, tooLong, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if tooLong {
			got = append(got, "TOO LONG")
			continue
		}
		got = append(got, string(line))
	}
	if want := []string{"a\r\n", "TOO LONG", "b\n", "\n", "last"}; fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
		t.Errorf("lines %q, want %q", got, want)
	}
}

func TestCountLines(t *testing.T) {
	tests := []struct {
		content string
		want    int
	}{
		{"", 0},
		{"a\n", 1},
		{"a\nb", 2},
		{"a\n\nb\n", 3},
		{strings.Repeat("x", 100<<10) + "\n" + "y", 2}, // a line longer than the buffer
	}
	for _, tc := range tests {
		p := filepath.Join(t.TempDir(), "jobs")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		n, err := CountLines(f)
		if err != nil || n != tc.want {
			t.Errorf("%.10q: %d lines, %v; want %d", tc.content, n, err, tc.want)
		}
		// Rewound: the whole file can be read again.
		if b, _ := io.ReadAll(f); string(b) != tc.content {
			t.Errorf("%.10q: not rewound", tc.content)
		}
		f.Close()
	}
}

// reports collects what Enqueue says of each line.
type reports map[int]LineReport

func (r reports) add(l LineReport) { r[l.N] = l }

func TestEnqueueCheckOnly(t *testing.T) {
	got := reports{}
	lines := Args([]string{"org_id,run_id", "org1,r1", "org1,a/b", "", `{"run_id":"r2"}`, ",r3"})
	res, err := Enqueue(context.Background(), lines, EnqueueOptions{DefaultOrg: "org9", OnLine: got.add})
	if err != nil {
		t.Fatal(err)
	}
	if res != (EnqueueResult{Valid: 3, Rejected: 1}) {
		t.Errorf("%+v", res)
	}
	if len(got) != 6 || got[1].Status != LineSkipped || got[2].Status != LineValid || got[3].Status != LineRejected ||
		got[3].Err == nil || got[4].Status != LineSkipped || got[6].Job != (worker.Job{OrgID: "org9", RunID: "r3"}) {
		t.Errorf("reports %+v", got)
	}
}

func TestEnqueuePublishes(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	jobs, err := OpenJobs(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	if jobs.DuplicateWindow <= 0 {
		t.Errorf("duplicate window %s", jobs.DuplicateWindow)
	}
	// A byte-order mark before the first line is not part of it.
	src := NewLineReader(strings.NewReader("\xEF\xBB\xBForg1,r1\norg1,r2\nbad\norg1,r1\n"))
	got := reports{}
	res, err := Enqueue(ctx, src, EnqueueOptions{Jobs: jobs, OnLine: got.add})
	if err != nil {
		t.Fatal(err)
	}
	if res != (EnqueueResult{Valid: 3, Rejected: 1, Published: 2, Duplicates: 1}) {
		t.Errorf("%+v", res)
	}
	if got[1].Status != LinePublished || got[3].Status != LineRejected || got[4].Status != LineDuplicate {
		t.Errorf("reports %+v", got)
	}
	if n := msgs(t, js, worker.DefaultJobsStream); n != 2 {
		t.Errorf("jobs stream holds %d, want 2", n)
	}
	s, err := js.Stream(ctx, worker.DefaultJobsStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := worker.Job{OrgID: "org1", RunID: "r1"}
	if string(m.Data) != `{"org_id":"org1","run_id":"r1"}` || m.Header.Get(jetstream.MsgIDHeader) != enqueueMsgID(want) {
		t.Errorf("stored %s %v", m.Data, m.Header)
	}
}

func TestEnqueueGivesUpAfterTooManyFailures(t *testing.T) {
	js := newJetStream(t)
	provision(t, js)
	ctx := context.Background()
	jobs, err := OpenJobs(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	// A subject no stream listens on: every publish fails at once.
	jobs.subject = "nowhere.jobs"
	var lines []string
	for i := range MaxPublishFailures + enqueueWindow + 50 {
		lines = append(lines, fmt.Sprintf("org1,r%d", i))
	}
	res, err := Enqueue(ctx, Args(lines), EnqueueOptions{Jobs: jobs})
	var st *StoppedError
	if !errors.As(err, &st) || !errors.Is(err, ErrTooManyFailures) {
		t.Fatalf("got %v, want a StoppedError of ErrTooManyFailures", err)
	}
	if res.Failed < MaxPublishFailures || res.Published != 0 || st.At > len(lines) || st.At != res.Valid+1 {
		t.Errorf("%+v, stopped at %d", res, st.At)
	}
}

// blockingSource gives its lines, then waits for ever, as a terminal does.
type blockingSource struct {
	lines []string
	block chan struct{}
}

func (b *blockingSource) Next() ([]byte, bool, error) {
	if len(b.lines) == 0 {
		<-b.block
		return nil, false, io.EOF
	}
	l := b.lines[0]
	b.lines = b.lines[1:]
	return []byte(l), false, nil
}

func TestEnqueueInterrupted(t *testing.T) {
	src := &blockingSource{lines: []string{"org1,r1", "org1,r2"}, block: make(chan struct{})}
	defer close(src.block)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := Enqueue(ctx, src, EnqueueOptions{OnLine: func(l LineReport) {
		if l.N == 2 {
			cancel()
		}
	}})
	var st *StoppedError
	if !errors.As(err, &st) || !errors.Is(err, context.Canceled) || st.At != 3 {
		t.Fatalf("got %v, want a StoppedError of context.Canceled at 3", err)
	}
	if res.Valid != 2 {
		t.Errorf("%+v", res)
	}
}

type failingSource struct{ n int }

var errDisk = errors.New("disk on fire")

func (f *failingSource) Next() ([]byte, bool, error) {
	if f.n++; f.n > 1 {
		return nil, false, errDisk
	}
	return []byte("org1,r1"), false, nil
}

func TestEnqueueReadError(t *testing.T) {
	res, err := Enqueue(context.Background(), &failingSource{}, EnqueueOptions{})
	var st *StoppedError
	if !errors.As(err, &st) || !errors.Is(err, errDisk) || st.At != 2 || res.Valid != 1 {
		t.Errorf("%+v, %v", res, err)
	}
}

func TestOpenJobsWithoutStream(t *testing.T) {
	js := newJetStream(t)
	if _, err := OpenJobs(context.Background(), js, names); !errors.Is(err, ErrNoJobsStream) {
		t.Errorf("got %v, want ErrNoJobsStream", err)
	}
}
