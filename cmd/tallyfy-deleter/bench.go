package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/service"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
	"github.com/tallyfy-deleter/tallyfy-deleter/testutil/servers"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// The bench measures the worker where its cost shows: in a process of its
// own. The bench process hosts the embedded JetStream server and the fake
// Tallyfy API; each measured loop (the real worker, then a bare loop for
// comparison) runs in a child process, this same binary re-executed as
// `bench --child worker|bare`, so that its CPU time, peak RSS and
// allocations are the loop's alone and not the servers'.
//
// One run: fresh streams, N jobs published up front (the backlog), N
// archived runs in the fake, then the child works until the results stream
// holds N events; then its stdin is closed, it shuts down and reports.
// Throughput and latencies come from the events themselves (`at`) and the
// jobs' publish times as stored by the stream, not from the child.

const (
	benchOrg = "bench"
	// benchTokenEnv hands the fake API's token to the child: an argument
	// would show in ps.
	benchTokenEnv = "TALLYFY_DELETER_BENCH_TOKEN"
	// benchStall ends a run whose results stop coming.
	benchStall = time.Minute
)

type loopKind string

const (
	loopWorker loopKind = "worker"
	loopBare   loopKind = "bare"
)

// benchRow is one line of the table and one object of --json.
type benchRow struct {
	APILatency   string   `json:"api_latency"`
	APILatencyMS float64  `json:"api_latency_ms"`
	Concurrency  int      `json:"concurrency"`
	Loop         loopKind `json:"loop"`
	Jobs         int      `json:"jobs"`
	JobsPerSec   float64  `json:"jobs_per_sec"`
	P50MS        float64  `json:"p50_ms"`
	P99MS        float64  `json:"p99_ms"`
	CPUPer10k    float64  `json:"cpu_s_per_10k_jobs"`
	PeakRSSMiB   float64  `json:"peak_rss_mib"`
	AllocsPerJob float64  `json:"allocs_per_job"`
	// AllocBytesPerJob is the heap bytes those allocations took.
	AllocBytesPerJob float64 `json:"alloc_bytes_per_job"`
	// NATSInPerJob and NATSOutPerJob are the messages the NATS server took
	// in (pull requests, publishes, acks) and sent out (jobs, publish acks,
	// ack confirmations) per job while the loop ran: its round trips.
	NATSInPerJob  float64 `json:"nats_in_per_job"`
	NATSOutPerJob float64 `json:"nats_out_per_job"`
	// OtherCPU is the CPU, in cores, that the rest of the machine used while
	// the loop ran: neither the bench process nor its child. Above a few
	// tenths, other work competed with the run and the numbers are noisy.
	// -1 where it cannot be known (no /proc/stat).
	OtherCPU float64 `json:"other_cpu_cores"`
	// Runs is how many runs the row is the median of (--repeat).
	Runs int `json:"runs"`
	// WorkerVsBare is the worker's jobs/s over the bare loop's in the same
	// setting; on worker rows only.
	WorkerVsBare float64 `json:"worker_bare_ratio,omitempty"`
	// OfIdeal is jobs/s over concurrency / API latency, when the latency
	// is not zero.
	OfIdeal float64 `json:"of_ideal,omitempty"`
	// RSSVsSmallest is peak RSS over that of the smallest backlog; --memory
	// only.
	RSSVsSmallest float64 `json:"rss_vs_smallest_backlog,omitempty"`

	latency time.Duration
}

type benchOptions struct {
	jobs        int
	concurrency []int
	latencies   []time.Duration
	json        bool
	memory      bool
	memoryJobs  []int
	profileDir  string
	repeat      int
}

const benchUsage = `Usage: tallyfy-deleter bench [flags]

Measures the worker against a bare loop (pull, DELETE, publish the result,
ack: the confirmations the worker makes, and nothing else) on an embedded
JetStream server (file storage) and a fake Tallyfy API answering after
--api-latency. Each loop runs in a child process, so CPU, peak RSS and
allocations are the loop's own. One run per latency, concurrency and loop.

With --memory, runs only the worker with backlogs of 1,000 and 100,000
jobs (--memory-jobs) at concurrency 64 and API latency 0 unless those flags
are given, and compares peak RSS: it should follow the jobs in flight, not
the backlog.

A run lasts at least jobs × latency / concurrency: with the defaults, the
row at concurrency 1 and 50ms takes over 8 minutes per loop.

Flags:
`

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--child" || strings.HasPrefix(args[0], "--child=")) {
		return benchChild(args, stdout, stderr)
	}
	opts, err := parseBenchFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// A failed or interrupted bench still shows the rows it finished: a
	// full run takes long.
	rows, err := bench(ctx, opts, stderr)
	if err == nil || len(rows) > 0 {
		if opts.json {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rows); err != nil {
				fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n", err)
				return 1
			}
		} else {
			printBenchTable(stdout, rows, opts.memory)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tallyfy-deleter bench: %v\n", err)
		return 1
	}
	return 0
}

func parseBenchFlags(args []string, stderr io.Writer) (benchOptions, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	var opts benchOptions
	fs.IntVar(&opts.jobs, "jobs", 10000, "jobs per run (the backlog published before the loop starts)")
	conc := fs.String("concurrency", "1,16,64,256", "jobs in flight, a comma list: one run per value")
	lat := fs.String("api-latency", "0,50ms", "the fake API's answer delay, a comma list: one run per value")
	fs.BoolVar(&opts.json, "json", false, "print the rows as a JSON array instead of a table")
	fs.BoolVar(&opts.memory, "memory", false, "compare the worker's peak RSS with a small and a large backlog")
	memJobs := fs.String("memory-jobs", "1000,100000", "backlogs compared by --memory")
	fs.IntVar(&opts.repeat, "repeat", 1, "measure each setting this many times, alternating the loops (and which goes first), and report the medians")
	fs.StringVar(&opts.profileDir, "cpuprofile-dir", "", "write a CPU profile of each child (worker and bare) to this directory")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opts.memory {
		if !set["concurrency"] {
			*conc = "64"
		}
		if !set["api-latency"] {
			*lat = "0"
		}
	}
	var err error
	if opts.concurrency, err = parseInts(*conc, 1, 10000); err != nil {
		return opts, fmt.Errorf("--concurrency: %w", err)
	}
	if opts.memoryJobs, err = parseInts(*memJobs, 1, 10_000_000); err != nil {
		return opts, fmt.Errorf("--memory-jobs: %w", err)
	}
	if opts.repeat < 1 {
		return opts, fmt.Errorf("--repeat must be at least 1, not %d", opts.repeat)
	}
	if opts.jobs < 1 {
		return opts, fmt.Errorf("--jobs must be at least 1, not %d", opts.jobs)
	}
	for _, s := range strings.Split(*lat, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil || d < 0 {
			return opts, fmt.Errorf("--api-latency: %q is not a duration such as 0, 5ms or 50ms", s)
		}
		opts.latencies = append(opts.latencies, d)
	}
	return opts, nil
}

func parseInts(s string, lo, hi int) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("%q is not a whole number from %d to %d", part, lo, hi)
		}
		out = append(out, n)
	}
	return out, nil
}

// bencher holds what every run shares: the servers and the parent's
// connection.
type bencher struct {
	exe    string
	srv    *servers.NATS
	api    *servers.FakeTallyfy
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    worker.Config
	stderr io.Writer
	// runs numbers the runs, so each publishes run IDs of its own.
	runs       int
	profileDir string
}

// bench runs every setting on one pair of servers. On error it returns the
// rows finished before it, with the error.
func bench(ctx context.Context, opts benchOptions, stderr io.Writer) ([]benchRow, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary to run the children: %w", err)
	}
	dir, err := os.MkdirTemp("", "tallyfy-deleter-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := servers.StartNATS(servers.NATSOptions{StoreDir: dir})
	if err != nil {
		return nil, fmt.Errorf("starting the embedded NATS server: %w", err)
	}
	defer srv.Shutdown()
	api := servers.StartFakeTallyfy()
	defer api.Close()
	api.RecordRequests(false)

	nc, err := nats.Connect(srv.URL(), nats.Name("tallyfy-deleter bench"))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	if opts.profileDir != "" {
		if err := os.MkdirAll(opts.profileDir, 0o755); err != nil {
			return nil, err
		}
	}
	b := &bencher{exe: exe, srv: srv, api: api, nc: nc, js: js, stderr: stderr, profileDir: opts.profileDir,
		cfg: worker.Config{DefaultOrg: benchOrg}}

	if opts.memory {
		return b.memory(ctx, opts)
	}
	var rows []benchRow
	for _, lat := range opts.latencies {
		api.SetLatency(lat)
		for _, c := range opts.concurrency {
			// Alternating the loops, and which goes first, spreads what the
			// rest of the machine does over both.
			var bares, workers []benchRow
			for i := range opts.repeat {
				order := []loopKind{loopBare, loopWorker}
				if i%2 == 1 {
					order = []loopKind{loopWorker, loopBare}
				}
				for _, loop := range order {
					r, err := b.run(ctx, loop, lat, c, opts.jobs)
					if err != nil {
						return rows, err
					}
					if loop == loopBare {
						bares = append(bares, r)
					} else {
						workers = append(workers, r)
					}
				}
			}
			bare, w := medianRow(bares), medianRow(workers)
			if bare.JobsPerSec > 0 {
				w.WorkerVsBare = w.JobsPerSec / bare.JobsPerSec
			}
			rows = append(rows, bare, w)
		}
	}
	return rows, nil
}

// memory runs the worker alone with each backlog of --memory-jobs.
func (b *bencher) memory(ctx context.Context, opts benchOptions) ([]benchRow, error) {
	var rows []benchRow
	for _, lat := range opts.latencies {
		b.api.SetLatency(lat)
		for _, c := range opts.concurrency {
			var first benchRow
			for i, n := range opts.memoryJobs {
				r, err := b.run(ctx, loopWorker, lat, c, n)
				if err != nil {
					return rows, err
				}
				if i == 0 {
					first = r
				} else if first.PeakRSSMiB > 0 {
					r.RSSVsSmallest = r.PeakRSSMiB / first.PeakRSSMiB
				}
				rows = append(rows, r)
			}
		}
	}
	return rows, nil
}

// run measures one loop at one setting.
func (b *bencher) run(ctx context.Context, loop loopKind, lat time.Duration, c, n int) (benchRow, error) {
	b.runs++
	what := fmt.Sprintf("%s, latency %s, concurrency %d, %d jobs", loop, lat, c, n)
	row := benchRow{APILatency: lat.String(), APILatencyMS: ms(lat), Concurrency: c, Loop: loop, Jobs: n, latency: lat}
	fail := func(err error) (benchRow, error) { return row, fmt.Errorf("%s: %w", what, err) }

	if err := b.resetStreams(ctx); err != nil {
		return fail(err)
	}
	if err := b.publishJobs(ctx, n); err != nil {
		return fail(err)
	}
	firstSeq, published, err := b.publishTimes(ctx, n)
	if err != nil {
		return fail(err)
	}
	if _, err := b.js.CreateOrUpdateConsumer(ctx, worker.DefaultJobsStream, b.cfg.ConsumerConfig()); err != nil {
		return fail(fmt.Errorf("creating the consumer: %w", err))
	}

	// The first DELETE to arrive marks the first job taken.
	watchCtx, stopWatch := context.WithCancel(ctx)
	firstTaken := make(chan time.Time, 1)
	before := b.api.RequestCount()
	var watch sync.WaitGroup
	watch.Go(func() {
		if b.api.WaitRequests(watchCtx, int(before)+1) == nil {
			firstTaken <- time.Now()
		}
	})
	defer func() { stopWatch(); watch.Wait() }()

	varzBefore, err := b.srv.Server().Varz(nil)
	if err != nil {
		return fail(err)
	}
	ownBefore := b.nc.Stats()
	busyBefore, selfBefore, began := machineBusy(), selfCPU(), time.Now()
	child, err := b.startChild(loop, c)
	if err != nil {
		return fail(err)
	}
	rep, err := child.waitResults(ctx, b, n, what)
	if err != nil {
		return fail(err)
	}
	varzAfter, err := b.srv.Server().Varz(nil)
	if err != nil {
		return fail(err)
	}
	ownAfter := b.nc.Stats()
	row.OtherCPU = -1
	if busyAfter := machineBusy(); busyBefore >= 0 && busyAfter >= 0 {
		ours := selfCPU() - selfBefore + rep.cpu
		row.OtherCPU = max(0, (busyAfter-busyBefore-ours).Seconds()/time.Since(began).Seconds())
	}
	row.Runs = 1
	// Less the bench's own polling of the results stream.
	in := varzAfter.InMsgs - varzBefore.InMsgs - int64(ownAfter.OutMsgs-ownBefore.OutMsgs)
	out := varzAfter.OutMsgs - varzBefore.OutMsgs - int64(ownAfter.InMsgs-ownBefore.InMsgs)
	row.NATSInPerJob = float64(in) / float64(n)
	row.NATSOutPerJob = float64(out) / float64(n)
	stopWatch()
	watch.Wait()

	events, err := b.readResults(ctx, n)
	if err != nil {
		return fail(err)
	}
	lats := make([]time.Duration, 0, n)
	var last time.Time
	first := events[0].At
	notDeleted := 0
	for _, e := range events {
		i := int(e.JobSeq) - int(firstSeq)
		if i < 0 || i >= len(published) {
			return fail(fmt.Errorf("a result names job %d, not one of this run's", e.JobSeq))
		}
		lats = append(lats, e.At.Sub(published[i]))
		if e.At.After(last) {
			last = e.At
		}
		if e.At.Before(first) {
			first = e.At
		}
		if e.Outcome != worker.OutcomeDeleted {
			notDeleted++
		}
	}
	if notDeleted > 0 {
		return fail(fmt.Errorf("%d of %d jobs were not deleted; the numbers would not compare", notDeleted, n))
	}
	select {
	case t := <-firstTaken:
		first = t
	default: // no DELETE seen (cannot happen with a result): keep the first event
	}
	if span := last.Sub(first); span > 0 {
		row.JobsPerSec = float64(n) / span.Seconds()
	}
	slices.Sort(lats)
	row.P50MS = ms(percentile(lats, 0.50))
	row.P99MS = ms(percentile(lats, 0.99))
	if lat > 0 {
		row.OfIdeal = row.JobsPerSec / (float64(c) / lat.Seconds())
	}
	row.CPUPer10k = rep.cpu.Seconds() / float64(n) * 10000
	row.PeakRSSMiB = float64(rep.maxRSSKiB) / 1024
	row.AllocsPerJob = float64(rep.Mallocs) / float64(n)
	row.AllocBytesPerJob = float64(rep.TotalAlloc) / float64(n)
	return row, nil
}

// medianRow is rs's median, metric by metric.
func medianRow(rs []benchRow) benchRow {
	out := rs[0]
	out.Runs = len(rs)
	for _, f := range []func(*benchRow) *float64{
		func(r *benchRow) *float64 { return &r.JobsPerSec },
		func(r *benchRow) *float64 { return &r.P50MS },
		func(r *benchRow) *float64 { return &r.P99MS },
		func(r *benchRow) *float64 { return &r.CPUPer10k },
		func(r *benchRow) *float64 { return &r.PeakRSSMiB },
		func(r *benchRow) *float64 { return &r.AllocsPerJob },
		func(r *benchRow) *float64 { return &r.AllocBytesPerJob },
		func(r *benchRow) *float64 { return &r.NATSInPerJob },
		func(r *benchRow) *float64 { return &r.NATSOutPerJob },
		func(r *benchRow) *float64 { return &r.OtherCPU },
		func(r *benchRow) *float64 { return &r.OfIdeal },
	} {
		vs := make([]float64, len(rs))
		for i := range rs {
			vs[i] = *f(&rs[i])
		}
		slices.Sort(vs)
		m := vs[len(vs)/2]
		if len(vs)%2 == 0 {
			m = (vs[len(vs)/2-1] + m) / 2
		}
		*f(&out) = m
	}
	return out
}

// machineBusy is the CPU time all processes have used, from /proc/stat
// (tick-based, so approximate); -1 without it.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "cpu" {
		return -1
	}
	var ticks int64
	// user nice system idle iowait irq softirq steal: user, nice and
	// system are what processes use. Interrupts are left out because the
	// kernel's loopback networking for the bench's own traffic lands there,
	// charged to no process; steal because a virtual machine's own wake-ups
	// cause much of it.
	for _, v := range f[1:4] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return -1
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux the bench runs on.
	return time.Duration(ticks) * (time.Second / 100)
}

// selfCPU is the bench process's own CPU time (the servers), children not
// included.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// resetStreams deletes and recreates the three streams, so that a run finds
// no job, event or consumer state of the one before.
func (b *bencher) resetStreams(ctx context.Context) error {
	jobs, results, dlq := b.cfg.StreamConfigs()
	for _, sc := range []jetstream.StreamConfig{jobs, results, dlq} {
		if err := b.js.DeleteStream(ctx, sc.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("deleting stream %s: %w", sc.Name, err)
		}
		if _, err := b.js.CreateStream(ctx, sc); err != nil {
			return fmt.Errorf("creating stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// publishJobs publishes n jobs naming runs of their own, and adds those runs
// to the fake, archived.
func (b *bencher) publishJobs(ctx context.Context, n int) error {
	subject := b.cfg.ConsumerConfig().FilterSubject
	runs := make([]string, n)
	for i := range n {
		runs[i] = fmt.Sprintf("b%d-%d", b.runs, i)
		body := fmt.Appendf(nil, `{"org_id":%q,"run_id":%q,"request_id":"bench-%d"}`, benchOrg, runs[i], i)
		if _, err := b.js.PublishAsync(subject, body); err != nil {
			return fmt.Errorf("publishing job %d: %w", i, err)
		}
	}
	select {
	case <-b.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%d job publishes still unconfirmed after 2 minutes", b.js.PublishAsyncPending())
	}
	s, err := b.js.Stream(ctx, worker.DefaultJobsStream)
	if err != nil {
		return err
	}
	if got := s.CachedInfo().State.Msgs; got != uint64(n) {
		return fmt.Errorf("the jobs stream holds %d jobs, not %d: some publishes failed", got, n)
	}
	b.api.AddRuns(benchOrg, runs, true)
	return nil
}

// publishTimes reads the jobs' publish times as the stream stored them.
// A work-queue stream takes no ack-less reader, so a temporary consumer
// pulls every job without acking it and is then deleted: the jobs stay.
func (b *bencher) publishTimes(ctx context.Context, n int) (uint64, []time.Time, error) {
	stream := worker.DefaultJobsStream
	cons, err := b.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           time.Hour,
		MaxAckPending:     -1,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return 0, nil, fmt.Errorf("creating the reader of publish times: %w", err)
	}
	defer func() {
		if err := b.js.DeleteConsumer(context.WithoutCancel(ctx), stream, cons.CachedInfo().Name); err != nil {
			fmt.Fprintf(b.stderr, "bench: deleting the reader of publish times: %v\n", err)
		}
	}()
	times := make([]time.Time, n)
	var firstSeq uint64
	for got := 0; got < n; {
		batch, err := cons.Fetch(min(n-got, 5000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return 0, nil, err
		}
		before := got
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return 0, nil, err
			}
			if firstSeq == 0 {
				firstSeq = meta.Sequence.Stream
			}
			i := int(meta.Sequence.Stream - firstSeq)
			if i < 0 || i >= n {
				return 0, nil, fmt.Errorf("job sequence %d out of range", meta.Sequence.Stream)
			}
			times[i] = meta.Timestamp
			got++
		}
		if got == before {
			return 0, nil, fmt.Errorf("reading publish times: %d of %d: %v", got, n, batch.Error())
		}
	}
	return firstSeq, times, nil
}

// benchEvent is the part of a result event the bench reads.
type benchEvent struct {
	Outcome worker.Outcome `json:"outcome"`
	JobSeq  uint64         `json:"job_seq"`
	At      time.Time      `json:"at"`
}

// readResults reads the run's n events with an ordered consumer, after the
// run, so that reading costs the measured loop nothing.
func (b *bencher) readResults(ctx context.Context, n int) ([]benchEvent, error) {
	_, results, _ := b.cfg.StreamConfigs()
	cons, err := b.js.OrderedConsumer(ctx, results.Name, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]benchEvent, 0, n)
	for len(out) < n {
		batch, err := cons.Fetch(min(n-len(out), 5000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, err
		}
		before := len(out)
		for m := range batch.Messages() {
			var e benchEvent
			if err := json.Unmarshal(m.Data(), &e); err != nil {
				return nil, fmt.Errorf("result event %q: %w", m.Data(), err)
			}
			out = append(out, e)
		}
		if len(out) == before {
			return nil, fmt.Errorf("reading results: %d of %d: %v", len(out), n, batch.Error())
		}
	}
	return out, nil
}

// benchChildProc is a started child and what it reports.
type benchChildProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout bytes.Buffer
	stderr bytes.Buffer
	exited chan error // receives cmd.Wait's error, once
}

func (b *bencher) startChild(loop loopKind, c int) (*benchChildProc, error) {
	args := []string{"bench", "--child", string(loop), "--nats-url", b.srv.URL(), "--api-url", b.api.URL(),
		"--concurrency", strconv.Itoa(c)}
	if b.profileDir != "" {
		name := fmt.Sprintf("run%02d-%s-c%d.pprof", b.runs, loop, c)
		args = append(args, "--cpuprofile", filepath.Join(b.profileDir, name))
	}
	p := &benchChildProc{exited: make(chan error, 1)}
	p.cmd = exec.Command(b.exe, args...)
	p.cmd.Env = append(os.Environ(), benchTokenEnv+"="+b.api.Token())
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the child: %w", err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

// childReport is what the parent learns from a child that has exited.
type childReport struct {
	childStats
	cpu       time.Duration
	maxRSSKiB int64
}

// waitResults waits until the results stream holds n events, then stops
// the child and collects its report. The child is always waited for.
func (p *benchChildProc) waitResults(ctx context.Context, b *bencher, n int, what string) (childReport, error) {
	var rep childReport
	_, results, _ := b.cfg.StreamConfigs()
	stream, err := b.js.Stream(ctx, results.Name)
	if err != nil {
		p.kill()
		return rep, err
	}
	prog := cli.NewProgress(b.stderr, "bench: "+what, n)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var done uint64
	lastProgress := time.Now()
	for done < uint64(n) {
		select {
		case <-ctx.Done():
			p.kill()
			return rep, ctx.Err()
		case err := <-p.exited:
			p.exited <- err
			p.kill()
			return rep, fmt.Errorf("the child exited after %d of %d results (%v):\n%s", done, n, err, p.stderr.String())
		case <-tick.C:
		}
		info, err := stream.Info(ctx)
		if err != nil {
			p.kill()
			return rep, err
		}
		if got := info.State.Msgs; got > done {
			prog.Add(int(got - done))
			done = got
			lastProgress = time.Now()
		} else if time.Since(lastProgress) > benchStall {
			p.kill()
			return rep, fmt.Errorf("no result for %s after %d of %d:\n%s", benchStall, done, n, p.stderr.String())
		}
	}
	prog.Done()

	// Closing stdin is the child's signal to stop.
	p.stdin.Close()
	var exitErr error
	select {
	case exitErr = <-p.exited:
	case <-time.After(time.Minute):
		p.kill()
		return rep, fmt.Errorf("the child did not stop within a minute of being told to:\n%s", p.stderr.String())
	}
	if exitErr != nil {
		return rep, fmt.Errorf("the child failed (%v):\n%s", exitErr, p.stderr.String())
	}
	if err := json.Unmarshal(p.stdout.Bytes(), &rep.childStats); err != nil {
		return rep, fmt.Errorf("the child's report %q: %w", p.stdout.String(), err)
	}
	ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return rep, errors.New("no resource usage for the child on this system")
	}
	rep.cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
	rep.maxRSSKiB = rep.PeakRSS
	if rep.maxRSSKiB == 0 {
		// No /proc: maxrss (KiB on Linux, bytes on macOS) is an upper bound.
		rep.maxRSSKiB = ru.Maxrss
	}
	return rep, nil
}

// kill ends the child and waits for it.
func (p *benchChildProc) kill() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	err := <-p.exited
	p.exited <- err
}

// printBenchTable writes the rows, a legend and the targets.
func printBenchTable(w io.Writer, rows []benchRow, memory bool) {
	last := "worker/bare"
	if memory {
		last = "RSS vs smallest"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "latency\tconcurrency\tloop\tjobs\tjobs/s\tp50\tp99\tCPU s/10k jobs\tpeak RSS MiB\tallocs/job\tNATS msgs/job\tother load\t%s\t\n", last)
	for _, r := range rows {
		ratio := ""
		switch {
		case memory && r.RSSVsSmallest > 0:
			ratio = fmt.Sprintf("%.2f", r.RSSVsSmallest)
		case !memory && r.WorkerVsBare > 0:
			ratio = fmt.Sprintf("%.2f", r.WorkerVsBare)
		}
		other := "?"
		if r.OtherCPU >= 0 {
			other = fmt.Sprintf("%.2f", r.OtherCPU)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.0f\t%s\t%s\t%.2f\t%.1f\t%.0f\t%.1f+%.1f\t%s\t%s\t\n",
			r.APILatency, r.Concurrency, r.Loop, r.Jobs, r.JobsPerSec, fmtMS(r.P50MS), fmtMS(r.P99MS),
			r.CPUPer10k, r.PeakRSSMiB, r.AllocsPerJob, r.NATSInPerJob, r.NATSOutPerJob, other, ratio)
	}
	tw.Flush()
	fmt.Fprint(w, `
jobs/s: jobs over the time from the first DELETE reaching the API to the last result event.
p50, p99: job latency, from the job's publish time in the stream to its result event's "at". The
  whole backlog is published before the loop starts, so this is mostly time spent queued behind
  other jobs, not the time one job takes.
CPU s/10k jobs, peak RSS, allocs/job: the loop's child process alone (user + system time, maximum
  resident set, heap allocations), from start to exit; the servers run in the bench process.
NATS msgs/job: messages the NATS server received + sent per job while the loop ran (pull
  requests, publishes, acks + jobs delivered, publish acks, ack confirmations): its round trips.
other load: CPU (in cores) the rest of the machine used during the run; above a few tenths,
  other work competed with it: run again on a quiet machine, or with --repeat.
bare: the same confirmations as the worker (pull, DELETE, publish the result and wait for its
  ack, double-ack the job) with no validation, breaker, logging or metrics.
`)
	if len(rows) > 0 && rows[0].Runs > 1 {
		fmt.Fprintf(w, "Each row is the median of %d runs, the loops alternating, each going first in turn.\n", rows[0].Runs)
	}
	fmt.Fprintln(w)
	if memory {
		for _, r := range rows {
			if r.RSSVsSmallest > 0 {
				fmt.Fprintf(w, "target: peak RSS with %d jobs at most 1.2 times that with the smallest backlog: %.2f: %s\n",
					r.Jobs, r.RSSVsSmallest, verdict(r.RSSVsSmallest <= 1.2))
			}
		}
		return
	}
	var bare benchRow
	for _, r := range rows {
		if r.Loop == loopBare {
			bare = r
			continue
		}
		switch {
		case r.latency == 0:
			fmt.Fprintf(w, "target: latency 0, concurrency %d: worker/bare %.2f, at least 0.85: %s\n",
				r.Concurrency, r.WorkerVsBare, verdict(r.WorkerVsBare >= 0.85))
		case r.latency == 50*time.Millisecond && r.Concurrency == 64:
			fmt.Fprintf(w, "target: latency 50ms, concurrency 64: %.0f jobs/s, %.2f of the ideal 1280 (bare loop %.2f), at least 0.9: %s\n",
				r.JobsPerSec, r.OfIdeal, bare.OfIdeal, verdict(r.OfIdeal >= 0.9))
		default:
			fmt.Fprintf(w, "latency %s, concurrency %d: %.2f of the ideal %.0f jobs/s (bare loop %.2f)\n",
				r.APILatency, r.Concurrency, r.OfIdeal, float64(r.Concurrency)/r.latency.Seconds(), bare.OfIdeal)
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func fmtMS(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2fs", v/1000)
	}
	return fmt.Sprintf("%.1fms", v)
}

// --- the child ---

// childStats is what a child writes to stdout as it exits.
type childStats struct {
	// Mallocs counts heap allocations from the child's start to its end:
	// start-up and shutdown take a few thousand, next to about 150 a job.
	Mallocs uint64 `json:"mallocs"`
	// TotalAlloc is the bytes those allocations took.
	TotalAlloc uint64 `json:"total_alloc_bytes"`
	// The child's own view of its resources at exit; the parent reads the
	// kernel's account from the exit status instead.
	UserMS   int64 `json:"user_ms"`
	SystemMS int64 `json:"system_ms"`
	// PeakRSS is the child's own resident high-water mark, VmHWM, in KiB.
	// The rusage maxrss of a child is no good for this on Linux: exec
	// records the high-water mark of the memory it replaces, which for a
	// Go child (started with vfork, CLONE_VM) is the parent's, so maxrss
	// would report the bench process's servers. Zero where there is no
	// /proc.
	PeakRSS int64 `json:"peak_rss_kib"`
	// Jobs is how many jobs the bare loop finished (0 for the worker).
	Jobs int64 `json:"jobs,omitempty"`
}

func benchChild(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench --child", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loop := fs.String("child", "", "worker or bare")
	natsURL := fs.String("nats-url", "", "")
	apiURL := fs.String("api-url", "", "")
	c := fs.Int("concurrency", 1, "")
	cpuProfile := fs.String("cpuprofile", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	token := os.Getenv(benchTokenEnv)
	if token == "" || *natsURL == "" || *apiURL == "" {
		fmt.Fprintln(stderr, "bench --child: needs --nats-url, --api-url and "+benchTokenEnv)
		return 2
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)

	// The end of stdin (the parent closed it, or died) cancels the loop's
	// context, as SIGINT and SIGTERM do: both loops then stop pulling,
	// finish what is in flight and return. This reader belongs to the
	// process: it ends at EOF or with the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	var jobs int64
	var err error
	switch loopKind(*loop) {
	case loopWorker:
		err = benchWorkerChild(ctx, *natsURL, *apiURL, token, *c)
	case loopBare:
		jobs, err = benchBareChild(ctx, *natsURL, *apiURL, token, *c)
	default:
		err = fmt.Errorf("--child %q: want worker or bare", *loop)
	}
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench --child %s: %v\n", *loop, err)
		return 1
	}
	runtime.ReadMemStats(&after)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	st := childStats{
		Mallocs:    after.Mallocs - before.Mallocs,
		TotalAlloc: after.TotalAlloc - before.TotalAlloc,
		UserMS:     syscall.TimevalToNsec(ru.Utime) / 1e6,
		SystemMS:   syscall.TimevalToNsec(ru.Stime) / 1e6,
		PeakRSS:    peakRSSKiB(),
		Jobs:       jobs,
	}
	if err := json.NewEncoder(stdout).Encode(st); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// peakRSSKiB reads VmHWM from /proc/self/status: 0 if it cannot.
func peakRSSKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0
			}
			return n
		}
	}
	return 0
}

// benchWorkerChild is `tallyfy-deleter run` itself: the settings below
// read by settings.LoadRun (every other setting at run's default), then
// service.Run until ctx is cancelled, as cmdRun does. Its JSON logs at info
// level go nowhere (but for errors, kept to say why it failed), and it has
// no HTTP listener: nothing scrapes it. Only the concurrency and what points
// it at the bench's servers are set.
func benchWorkerChild(ctx context.Context, natsURL, apiURL, token string, c int) error {
	env := map[string]string{
		"NATS_URL":             natsURL,
		"TALLYFY_API_URL":      apiURL,
		"TALLYFY_ACCESS_TOKEN": token,
		"TALLYFY_ORG_ID":       benchOrg,
		"DELETER_CONCURRENCY":  strconv.Itoa(c),
		"DELETER_WORKER_ID":    "bench-worker",
		"DELETER_HTTP_ADDR":    "off",
		"LOG_LEVEL":            "info",
		"LOG_FORMAT":           "json",
	}
	// Not os.Getenv: settings in the shell that runs the bench must not
	// change what it measures.
	cfg, err := settings.LoadRun(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		return fmt.Errorf("the run settings: %w", err)
	}
	errs := &errorLines{}
	log := cli.NewLogger(errs, cfg.LogLevel, cfg.LogFormat, cfg.WorkerName())
	if code := service.Run(ctx, cfg, version, log); code != 0 {
		return fmt.Errorf("run exited %d: %s", code, errs.String())
	}
	return nil
}

// errorLines drops the worker's JSON log lines but those at error level,
// which say why it refused to start or failed. The worker logs from many
// goroutines at once.
type errorLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (e *errorLines) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(`"level":"error"`)) {
		e.mu.Lock()
		e.buf.Write(p)
		e.mu.Unlock()
	}
	return len(p), nil
}

func (e *errorLines) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.buf.String()
}

// benchBareChild is the bare loop. It makes the confirmations the worker
// makes and nothing more:
//
//   - pull: one Fetch at a time for as many jobs as there are free slots
//     (the worker's pull discipline), each job handed to a goroutine of its
//     own, at most c at once;
//   - DELETE with plain net/http (a transport keeping c idle connections),
//     the job decoded with encoding/json and not validated;
//   - publish the result event (worker.Result, encoding/json) with
//     js.PublishMsg and Nats-Msg-Id result-<seq>, waiting for its ack;
//   - msg.DoubleAck.
//
// No breaker, no logs, no metrics, no heartbeat, no retry: an answer other
// than 2xx or 404 naks the job.
func benchBareChild(ctx context.Context, natsURL, apiURL, token string, c int) (int64, error) {
	nc, err := nats.Connect(natsURL, nats.Name("tallyfy-deleter bench bare"))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	cons, err := js.Consumer(ctx, worker.DefaultJobsStream, worker.DefaultConsumer)
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: c, MaxIdleConnsPerHost: c}}
	defer hc.CloseIdleConnections()
	resultsSubject := worker.DefaultResultsSubject

	var done atomic.Int64
	slots := make(chan struct{}, c) // one token per job in flight
	var jobs sync.WaitGroup
	for ctx.Err() == nil {
		// Wait for a free slot, then take every free one.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		n := 1
	more:
		for n < c {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			for range n {
				<-slots
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			jobs.Go(func() {
				defer func() { <-slots }()
				if bareJob(js, hc, apiURL, token, resultsSubject, msg) {
					done.Add(1)
				}
			})
		}
		for range n - got {
			<-slots
		}
	}
	jobs.Wait()
	return done.Load(), nc.Drain()
}

// bareJob is one job of the bare loop; true when it was acked.
func bareJob(js jetstream.JetStream, hc *http.Client, apiURL, token, resultsSubject string, msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Nak()
		return false
	}
	var job worker.Job
	if err := json.Unmarshal(msg.Data(), &job); err != nil {
		_ = msg.Nak()
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), worker.DefaultAPITimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, apiURL+"/organizations/"+job.OrgID+"/runs/"+job.RunID+"/delete", nil)
	if err != nil {
		_ = msg.Nak()
		return false
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Tallyfy-Client", "APIClient")
	resp, err := hc.Do(req)
	if err != nil {
		_ = msg.Nak()
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	res := worker.Result{OrgID: job.OrgID, RunID: job.RunID, RequestID: job.RequestID, Status: resp.StatusCode,
		Attempts: int(meta.NumDelivered), JobSeq: meta.Sequence.Stream, Worker: "bench-bare", At: time.Now().UTC()}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		res.Outcome = worker.OutcomeDeleted
	case resp.StatusCode == http.StatusNotFound:
		res.Outcome = worker.OutcomeNotFound
	default:
		_ = msg.Nak()
		return false
	}
	body, err := json.Marshal(res)
	if err != nil {
		_ = msg.Nak()
		return false
	}
	m := nats.NewMsg(resultsSubject + "." + string(res.Outcome))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, "result-"+strconv.FormatUint(res.JobSeq, 10))
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	if _, err := js.PublishMsg(pctx, m); err != nil {
		_ = msg.Nak()
		return false
	}
	return msg.DoubleAck(pctx) == nil
}
