package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil/servers"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const (
	org = "bench"
	// tokenEnv hands the fake API's token to the child: an argument
	// would show in ps.
	tokenEnv = "TALLYFY_DELETER_BENCH_TOKEN"
	// stall ends a run whose results stop coming.
	stall = time.Minute
)

// Options is what the bench measures. Zero values are not defaults (the
// bench subcommand's flags hold those): Run refuses options it cannot
// measure with.
type Options struct {
	// Jobs is the backlog published before each run.
	Jobs int
	// Concurrency and Latencies are the settings measured: one run per
	// API latency, concurrency and loop.
	Concurrency []int
	Latencies   []time.Duration
	// Memory runs only the worker, once per backlog of MemoryJobs, instead
	// of both loops with Jobs.
	Memory     bool
	MemoryJobs []int
	// ProfileDir, when not empty, receives a CPU profile of each child.
	ProfileDir string
	// Repeat is how many times each setting is measured; the rows are the
	// medians.
	Repeat int
	// Trace adds a third loop to each round, the worker with tracing on
	// (LoopWorkerTraced), and gives every job a traceparent and a
	// tracestate. Not with Memory.
	Trace bool
}

func (o Options) check() error {
	switch {
	case o.Jobs < 1 && !o.Memory:
		return fmt.Errorf("bench: Jobs must be at least 1, not %d", o.Jobs)
	case o.Repeat < 1:
		return fmt.Errorf("bench: Repeat must be at least 1, not %d", o.Repeat)
	case len(o.Concurrency) == 0 || len(o.Latencies) == 0:
		return errors.New("bench: no Concurrency or no Latencies to measure")
	case o.Memory && len(o.MemoryJobs) == 0:
		return errors.New("bench: Memory without MemoryJobs")
	case o.Memory && o.Trace:
		return errors.New("bench: Memory and Trace do not go together: Memory runs the worker alone")
	case slices.Min(o.Concurrency) < 1:
		return fmt.Errorf("bench: Concurrency %v: each must be at least 1", o.Concurrency)
	case slices.Min(o.Latencies) < 0:
		return fmt.Errorf("bench: Latencies %v: none may be negative", o.Latencies)
	case o.Memory && slices.Min(o.MemoryJobs) < 1:
		return fmt.Errorf("bench: MemoryJobs %v: each must be at least 1", o.MemoryJobs)
	}
	return nil
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
	// sink receives the traced worker's spans; nil without Options.Trace,
	// when the jobs carry no trace context either.
	sink *otlpSink
}

// Run measures every setting on one pair of servers, writing its progress
// to stderr. On error it returns the rows finished before it, with the
// error.
func Run(ctx context.Context, opts Options, stderr io.Writer) ([]Row, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
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
	if opts.ProfileDir != "" {
		if err := os.MkdirAll(opts.ProfileDir, 0o755); err != nil {
			return nil, err
		}
	}
	b := &bencher{exe: exe, srv: srv, api: api, nc: nc, js: js, stderr: stderr, profileDir: opts.ProfileDir,
		cfg: worker.Config{DefaultOrg: org}}
	if opts.Trace {
		if b.sink, err = startOTLPSink(); err != nil {
			return nil, fmt.Errorf("starting the OTLP sink: %w", err)
		}
		defer b.sink.close(context.WithoutCancel(ctx))
	}
	if opts.Memory {
		return b.memory(ctx, opts)
	}
	return b.compare(ctx, opts)
}

// compare runs both loops (all three with opts.Trace) at every setting,
// opts.Repeat times each.
func (b *bencher) compare(ctx context.Context, opts Options) ([]Row, error) {
	loops := []Loop{LoopBare, LoopWorker}
	if opts.Trace {
		loops = append(loops, LoopWorkerTraced)
	}
	var rows []Row
	for _, lat := range opts.Latencies {
		b.api.SetLatency(lat)
		for _, c := range opts.Concurrency {
			// Alternating the loops, and which goes first, spreads what the
			// rest of the machine does over them all.
			byLoop := map[Loop][]Row{}
			for i := range opts.Repeat {
				for j := range loops {
					loop := loops[(i+j)%len(loops)]
					r, err := b.run(ctx, loop, lat, c, opts.Jobs)
					if err != nil {
						return rows, err
					}
					byLoop[loop] = append(byLoop[loop], r)
				}
			}
			bares, workers := byLoop[LoopBare], byLoop[LoopWorker]
			bare, w := medianRow(bares), medianRow(workers)
			w.WorkerVsBare, w.CPUVsBare = pairedRatios(bares, workers)
			rows = append(rows, bare, w)
			if traced := byLoop[LoopWorkerTraced]; len(traced) > 0 {
				tr := medianRow(traced)
				tr.WorkerVsBare, tr.CPUVsBare = pairedRatios(bares, traced)
				tr.VsUntraced, tr.CPUVsUntraced = pairedRatios(workers, traced)
				rows = append(rows, tr)
			}
		}
	}
	return rows, nil
}

// memory runs the worker alone with each backlog of opts.MemoryJobs.
func (b *bencher) memory(ctx context.Context, opts Options) ([]Row, error) {
	var rows []Row
	for _, lat := range opts.Latencies {
		b.api.SetLatency(lat)
		for _, c := range opts.Concurrency {
			var first Row
			for i, n := range opts.MemoryJobs {
				r, err := b.run(ctx, LoopWorker, lat, c, n)
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
func (b *bencher) run(ctx context.Context, loop Loop, lat time.Duration, c, n int) (Row, error) {
	b.runs++
	what := fmt.Sprintf("%s, latency %s, concurrency %d, %d jobs", loop, lat, c, n)
	row := Row{APILatency: lat.String(), APILatencyMS: ms(lat), Concurrency: c, Loop: loop, Jobs: n, latency: lat}
	fail := func(err error) (Row, error) { return row, fmt.Errorf("%s: %w", what, err) }

	firstSeq, published, err := b.prepare(ctx, n)
	if err != nil {
		return fail(err)
	}
	rep, firstTaken, err := b.measure(ctx, &row, what)
	if err != nil {
		return fail(err)
	}
	events, err := b.readResults(ctx, n)
	if err != nil {
		return fail(err)
	}
	if err := row.addTimes(events, firstSeq, published, firstTaken); err != nil {
		return fail(err)
	}
	row.CPUPer10k = rep.cpu.Seconds() / float64(n) * 10000
	row.PeakRSSMiB = float64(rep.maxRSSKiB) / 1024
	row.AllocsPerJob = float64(rep.Mallocs) / float64(n)
	row.AllocBytesPerJob = float64(rep.TotalAlloc) / float64(n)
	row.GCsPer10k = float64(rep.NumGC) / float64(n) * 10000
	return row, nil
}

// prepare gives a run fresh streams holding n jobs, and the consumer, and
// returns the first job's sequence and the jobs' publish times.
func (b *bencher) prepare(ctx context.Context, n int) (uint64, []time.Time, error) {
	if err := b.resetStreams(ctx); err != nil {
		return 0, nil, err
	}
	if err := b.publishJobs(ctx, n); err != nil {
		return 0, nil, err
	}
	firstSeq, published, err := b.publishTimes(ctx, n)
	if err != nil {
		return 0, nil, err
	}
	if _, err := b.js.CreateOrUpdateConsumer(ctx, worker.DefaultJobsStream, b.cfg.ConsumerConfig()); err != nil {
		return 0, nil, fmt.Errorf("creating the consumer: %w", err)
	}
	return firstSeq, published, nil
}

// measure runs row's loop in a child until the results stream holds all
// its jobs' events, and fills in what only the run itself shows: the NATS
// messages and the other load. It returns the child's report, and when the
// first DELETE reached the API (zero if none did).
func (b *bencher) measure(ctx context.Context, row *Row, what string) (childReport, time.Time, error) {
	n := row.Jobs
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
		return childReport{}, time.Time{}, err
	}
	ownBefore := b.nc.Stats()
	var otlpReqs, otlpBytes int64
	if b.sink != nil {
		otlpReqs, otlpBytes = b.sink.counts()
	}
	busyBefore, selfBefore, began := machineBusy(), selfCPU(), time.Now()
	stopProfile, err := b.profileServers(row.Loop, row.Concurrency)
	if err != nil {
		return childReport{}, time.Time{}, err
	}
	child, err := b.startChild(row.Loop, row.Concurrency)
	if err != nil {
		stopProfile()
		return childReport{}, time.Time{}, err
	}
	rep, err := child.waitResults(ctx, b, n, what)
	stopProfile()
	if err != nil {
		return childReport{}, time.Time{}, err
	}
	varzAfter, err := b.srv.Server().Varz(nil)
	if err != nil {
		return childReport{}, time.Time{}, err
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
	if row.Loop == LoopWorkerTraced {
		// The child flushed its last spans as it shut down, before exiting.
		reqs, bytes := b.sink.counts()
		if reqs == otlpReqs {
			return childReport{}, time.Time{}, errors.New("the traced worker exported no spans")
		}
		row.OTLPBytesPerJob = float64(bytes-otlpBytes) / float64(n)
	}
	stopWatch()
	watch.Wait()
	select {
	case t := <-firstTaken:
		return rep, t, nil
	default: // no DELETE seen (cannot happen with a result)
		return rep, time.Time{}, nil
	}
}

// addTimes fills in throughput and latencies from the run's result events
// and its jobs' publish times (published[i] is job firstSeq+i's). The run
// began at firstTaken, or at the first event if that is zero.
func (r *Row) addTimes(events []resultEvent, firstSeq uint64, published []time.Time, firstTaken time.Time) error {
	lats := make([]time.Duration, 0, len(events))
	var last time.Time
	first := events[0].At
	notDeleted := 0
	for _, e := range events {
		i := int(e.JobSeq) - int(firstSeq)
		if i < 0 || i >= len(published) {
			return fmt.Errorf("a result names job %d, not one of this run's", e.JobSeq)
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
		return fmt.Errorf("%d of %d jobs were not deleted; the numbers would not compare", notDeleted, r.Jobs)
	}
	if !firstTaken.IsZero() {
		first = firstTaken
	}
	if span := last.Sub(first); span > 0 {
		r.JobsPerSec = float64(r.Jobs) / span.Seconds()
	}
	slices.Sort(lats)
	r.P50MS = ms(percentile(lats, 0.50))
	r.P99MS = ms(percentile(lats, 0.99))
	if r.latency > 0 {
		r.OfIdeal = r.JobsPerSec / (float64(r.Concurrency) / r.latency.Seconds())
	}
	return nil
}

// pairedRatios are the medians, over the rounds, of the worker's jobs/s
// and CPU per job over the bare loop's in the same round. The machine's
// speed drifts over minutes (a virtual machine's neighbours), and the two
// runs of a round are the closest in time: the ratio of each round's pair
// cancels most of the drift, where a ratio of the medians would not.
func pairedRatios(bares, workers []Row) (throughput, cpu float64) {
	var thr, cpus []float64
	for i := range min(len(bares), len(workers)) {
		b, w := bares[i], workers[i]
		if b.JobsPerSec > 0 {
			thr = append(thr, w.JobsPerSec/b.JobsPerSec)
		}
		if b.CPUPer10k > 0 {
			cpus = append(cpus, w.CPUPer10k/b.CPUPer10k)
		}
	}
	return median(thr), median(cpus)
}

// median is 0 for no values.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	vs = slices.Clone(vs)
	slices.Sort(vs)
	m := vs[len(vs)/2]
	if len(vs)%2 == 0 {
		m = (vs[len(vs)/2-1] + m) / 2
	}
	return m
}

// medianRow is rs's median, metric by metric.
func medianRow(rs []Row) Row {
	out := rs[0]
	out.Runs = len(rs)
	for _, f := range []func(*Row) *float64{
		func(r *Row) *float64 { return &r.JobsPerSec },
		func(r *Row) *float64 { return &r.P50MS },
		func(r *Row) *float64 { return &r.P99MS },
		func(r *Row) *float64 { return &r.CPUPer10k },
		func(r *Row) *float64 { return &r.PeakRSSMiB },
		func(r *Row) *float64 { return &r.AllocsPerJob },
		func(r *Row) *float64 { return &r.AllocBytesPerJob },
		func(r *Row) *float64 { return &r.GCsPer10k },
		func(r *Row) *float64 { return &r.NATSInPerJob },
		func(r *Row) *float64 { return &r.NATSOutPerJob },
		func(r *Row) *float64 { return &r.OtherCPU },
		func(r *Row) *float64 { return &r.OfIdeal },
		func(r *Row) *float64 { return &r.OTLPBytesPerJob },
	} {
		vs := make([]float64, len(rs))
		for i := range rs {
			vs[i] = *f(&rs[i])
		}
		*f(&out) = median(vs)
	}
	return out
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

// profileServers profiles this process, the NATS server and the fake API
// serving the loop (and the bench's own polling), while the child runs:
// what the loop costs the rest of the machine. It does nothing without a
// profile directory; the returned func stops the profile.
func (b *bencher) profileServers(loop Loop, c int) (func(), error) {
	if b.profileDir == "" {
		return func() {}, nil
	}
	f, err := os.Create(filepath.Join(b.profileDir, profileName(b.runs, loop, c, "servers")))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// profileName names run's profile of loop at concurrency c, taken in who
// (the child, or the servers).
func profileName(run int, loop Loop, c int, who string) string {
	return fmt.Sprintf("run%02d-%s-c%d-%s.pprof", run, strings.ReplaceAll(string(loop), "+", "-"), c, who)
}
