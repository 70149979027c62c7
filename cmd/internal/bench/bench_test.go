package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain makes this test binary a child when Run re-executes it as
// `bench --child ...`, as the bench subcommand does for the real binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "bench" && IsChild(os.Args[2:]) {
		os.Exit(Child(os.Args[2:], "test", os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestBenchRunAndReport runs a tiny bench, both loops in child processes,
// and checks its rows, then the JSON and the table the report makes of
// those same rows.
func TestBenchRunAndReport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two child processes against embedded servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rows, err := Run(ctx, Options{Jobs: 200, Concurrency: []int{4}, Latencies: []time.Duration{0}, Repeat: 1}, &progress)
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if len(rows) != 2 || rows[0].Loop != LoopBare || rows[1].Loop != LoopWorker {
		t.Fatalf("rows %+v, want a bare row then a worker row", rows)
	}
	t.Run("rows", func(t *testing.T) { checkRows(t, rows) })
	t.Run("json", func(t *testing.T) { checkJSON(t, rows) })
	t.Run("table", func(t *testing.T) {
		var out bytes.Buffer
		WriteTable(&out, rows, false)
		for _, want := range []string{"worker/bare", "bare  ", "worker  ", "target: latency 0, concurrency 4: worker/bare"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("table lacks %q:\n%s", want, out.String())
			}
		}
	})
}

// TestBenchTrace runs a tiny bench with Trace: a third loop, the worker
// exporting its spans to the bench's OTLP sink, compared with the two
// others in the same round.
func TestBenchTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three child processes against embedded servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress bytes.Buffer
	rows, err := Run(ctx, Options{Jobs: 200, Concurrency: []int{4}, Latencies: []time.Duration{0}, Repeat: 1, Trace: true}, &progress)
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if len(rows) != 3 || rows[0].Loop != LoopBare || rows[1].Loop != LoopWorker || rows[2].Loop != LoopWorkerTraced {
		t.Fatalf("rows %+v, want bare, worker, worker+trace", rows)
	}
	checkRows(t, rows[:2])
	tr := rows[2]
	// A job span and a request span are a few hundred bytes of protobuf.
	if tr.OTLPBytesPerJob < 100 || tr.VsUntraced <= 0 || tr.CPUVsUntraced <= 0 || tr.WorkerVsBare <= 0 || tr.JobsPerSec <= 0 {
		t.Errorf("worker+trace row: numbers that make no sense: %+v", tr)
	}
	if rows[1].OTLPBytesPerJob != 0 {
		t.Errorf("the untraced worker exported %v bytes per job", rows[1].OTLPBytesPerJob)
	}
	var out bytes.Buffer
	WriteTable(&out, rows, false)
	for _, want := range []string{"worker+trace  ", "tracing: latency 0s, concurrency 4: worker+trace at"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func checkRows(t *testing.T, rows []Row) {
	for _, r := range rows {
		if r.Jobs != 200 || r.Concurrency != 4 || r.APILatency != "0s" || r.Runs != 1 {
			t.Errorf("%s row: jobs %d, concurrency %d, latency %q, runs %d", r.Loop, r.Jobs, r.Concurrency, r.APILatency, r.Runs)
		}
		if r.JobsPerSec < 10 || r.P50MS <= 0 || r.P99MS < r.P50MS || r.CPUPer10k <= 0 || r.PeakRSSMiB < 1 ||
			r.AllocsPerJob < 10 || r.AllocBytesPerJob <= 0 {
			t.Errorf("%s row: numbers that make no sense: %+v", r.Loop, r)
		}
		// Every job is at least a publish and an ack in, and the job, the
		// publish ack and the ack confirmation out.
		if r.NATSInPerJob < 2 || r.NATSInPerJob > 10 || r.NATSOutPerJob < 3 || r.NATSOutPerJob > 10 {
			t.Errorf("%s row: NATS messages per job %.1f+%.1f", r.Loop, r.NATSInPerJob, r.NATSOutPerJob)
		}
		if r.OfIdeal != 0 || r.RSSVsSmallest != 0 {
			t.Errorf("%s row: of ideal %v, RSS ratio %v at latency 0 without Memory", r.Loop, r.OfIdeal, r.RSSVsSmallest)
		}
	}
	bare, w := rows[0], rows[1]
	if bare.WorkerVsBare != 0 || w.WorkerVsBare != w.JobsPerSec/bare.JobsPerSec {
		t.Errorf("worker/bare: %v on the bare row, %v on the worker row, want 0 and %v",
			bare.WorkerVsBare, w.WorkerVsBare, w.JobsPerSec/bare.JobsPerSec)
	}
	if bare.CPUVsBare != 0 || w.CPUVsBare != w.CPUPer10k/bare.CPUPer10k {
		t.Errorf("CPU ratio: %v on the bare row, %v on the worker row, want 0 and %v",
			bare.CPUVsBare, w.CPUVsBare, w.CPUPer10k/bare.CPUPer10k)
	}
}

// checkJSON: WriteJSON's array has one object per row with the keys that
// --json documents, holding the rows' values.
func checkJSON(t *testing.T, rows []Row) {
	var out bytes.Buffer
	if err := WriteJSON(&out, rows); err != nil {
		t.Fatal(err)
	}
	var objs []map[string]any
	if err := json.Unmarshal(out.Bytes(), &objs); err != nil {
		t.Fatalf("not a JSON array of objects: %v\n%s", err, out.String())
	}
	if len(objs) != len(rows) {
		t.Fatalf("%d objects for %d rows:\n%s", len(objs), len(rows), out.String())
	}
	always := []string{"api_latency", "api_latency_ms", "concurrency", "loop", "jobs", "jobs_per_sec", "p50_ms", "p99_ms",
		"cpu_s_per_10k_jobs", "peak_rss_mib", "allocs_per_job", "alloc_bytes_per_job", "gcs_per_10k_jobs", "nats_in_per_job",
		"nats_out_per_job", "other_cpu_cores", "runs"}
	for i, o := range objs {
		keys := make([]string, 0, len(o))
		for k := range o {
			keys = append(keys, k)
		}
		want := slices.Clone(always)
		if rows[i].Loop == LoopWorker {
			want = append(want, "worker_bare_ratio", "cpu_bare_ratio") // of_ideal and the RSS ratio: omitted when zero
		}
		slices.Sort(keys)
		slices.Sort(want)
		if !slices.Equal(keys, want) {
			t.Errorf("object %d has keys %q, want %q", i, keys, want)
		}
		r := rows[i]
		for k, v := range map[string]any{"loop": string(r.Loop), "jobs": float64(r.Jobs), "concurrency": float64(r.Concurrency),
			"api_latency": r.APILatency, "jobs_per_sec": r.JobsPerSec, "p99_ms": r.P99MS, "peak_rss_mib": r.PeakRSSMiB, "runs": float64(r.Runs)} {
			if o[k] != v {
				t.Errorf("object %d: %s is %v, the row's is %v", i, k, o[k], v)
			}
		}
	}
	if got, want := objs[1]["worker_bare_ratio"], rows[1].WorkerVsBare; got != want {
		t.Errorf("worker object: worker_bare_ratio %v, want %v", got, want)
	}
}

// TestBenchRunRefusesOptions: options Run cannot measure with are refused
// before any server starts.
func TestBenchRunRefusesOptions(t *testing.T) {
	good := Options{Jobs: 10, Concurrency: []int{1}, Latencies: []time.Duration{0}, Repeat: 1}
	tests := []struct {
		name   string
		change func(*Options)
		want   string
	}{
		{"no jobs", func(o *Options) { o.Jobs = 0 }, "Jobs"},
		{"no repeat", func(o *Options) { o.Repeat = 0 }, "Repeat"},
		{"no concurrency", func(o *Options) { o.Concurrency = nil }, "Concurrency"},
		{"concurrency zero", func(o *Options) { o.Concurrency = []int{4, 0} }, "Concurrency"},
		{"no latencies", func(o *Options) { o.Latencies = nil }, "Latencies"},
		{"negative latency", func(o *Options) { o.Latencies = []time.Duration{-time.Millisecond} }, "Latencies"},
		{"memory without backlogs", func(o *Options) { o.Memory = true }, "MemoryJobs"},
		{"memory backlog zero", func(o *Options) { o.Memory, o.MemoryJobs = true, []int{0} }, "MemoryJobs"},
		{"memory with trace", func(o *Options) { o.Memory, o.MemoryJobs, o.Trace = true, []int{10}, true }, "Trace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.change(&o)
			rows, err := Run(context.Background(), o, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) || rows != nil {
				t.Errorf("rows %v, error %v, want an error naming %s", rows, err, tc.want)
			}
		})
	}
}

func TestBenchMedianRow(t *testing.T) {
	tests := []struct {
		name string
		jobs []float64
		want float64
	}{
		{"one", []float64{5}, 5},
		{"odd", []float64{9, 1, 5}, 5},
		{"even: the mean of the middle two", []float64{4, 1, 10, 6}, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs := make([]Row, len(tc.jobs))
			for i, v := range tc.jobs {
				rs[i] = Row{Loop: LoopBare, JobsPerSec: v, P99MS: 2 * v, Runs: 1}
			}
			m := medianRow(rs)
			if m.JobsPerSec != tc.want || m.P99MS != 2*tc.want || m.Runs != len(rs) || m.Loop != LoopBare {
				t.Errorf("median %+v, want jobs/s %v, p99 %v, runs %d", m, tc.want, 2*tc.want, len(rs))
			}
		})
	}
}

func TestBenchPercentile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}}
	for _, tc := range tests {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile %v: %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of nothing: %v", got)
	}
}

// TestPairedRatios: worker/bare is the median of each round's ratio, so
// that the machine slowing down between rounds does not move it.
func TestPairedRatios(t *testing.T) {
	// The worker is 0.9 of the loop, using 1.1 times its CPU, in two
	// rounds of three; the machine is twice as fast in the first round,
	// and slows down in the middle of the third. The ratio of the medians
	// would be 5000/9000.
	bares := []Row{{JobsPerSec: 10000, CPUPer10k: 1}, {JobsPerSec: 5000, CPUPer10k: 2}, {JobsPerSec: 9000, CPUPer10k: 1}}
	workers := []Row{{JobsPerSec: 9000, CPUPer10k: 1.1}, {JobsPerSec: 4500, CPUPer10k: 2.2}, {JobsPerSec: 5000, CPUPer10k: 2}}
	thr, cpu := pairedRatios(bares, workers)
	if math.Abs(thr-0.9) > 1e-9 || math.Abs(cpu-1.1) > 1e-9 {
		t.Errorf("pairedRatios = %.3f, %.3f; want 0.9, 1.1", thr, cpu)
	}
	if thr, cpu := pairedRatios(nil, nil); thr != 0 || cpu != 0 {
		t.Errorf("no rounds: %v, %v; want 0, 0", thr, cpu)
	}
}
