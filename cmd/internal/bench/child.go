package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/service"
	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/settings"
)

// childStats is what a child writes to stdout as it exits.
type childStats struct {
	// Mallocs counts heap allocations from the child's start to its end:
	// start-up and shutdown take a few thousand, next to about 150 a job.
	Mallocs uint64 `json:"mallocs"`
	// TotalAlloc is the bytes those allocations took.
	TotalAlloc uint64 `json:"total_alloc_bytes"`
	// NumGC counts the garbage collections over the same time.
	NumGC uint32 `json:"num_gc"`
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

// IsChild says whether the arguments of `bench` are those of a child: the
// bench re-executes its binary as `bench --child worker|bare ...`, and the
// bench subcommand hands those arguments to Child.
func IsChild(args []string) bool {
	return len(args) > 0 && (args[0] == "--child" || strings.HasPrefix(args[0], "--child="))
}

// Child is one child of the bench: it runs the loop its arguments name
// until stdin ends, then writes its childStats to stdout as JSON. version
// is the binary's, as `run` reports it. It returns the exit status.
func Child(args []string, version string, stdin io.Reader, stdout, stderr io.Writer) int {
	a, ok := parseChildArgs(args, stderr)
	if !ok {
		return 2
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	// The end of stdin (the parent closed it, or died) cancels the loop's
	// context, as SIGINT and SIGTERM do: both loops then stop pulling,
	// finish what is in flight and return. This reader belongs to the
	// process: it ends at EOF or with the process.
	ctx, stop := cli.OnSignal(func(os.Signal) {}, nil)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()

	jobs, err := a.run(ctx, version)
	if err != nil {
		fmt.Fprintf(stderr, "bench --child %s: %v\n", a.loop, err)
		return 1
	}
	st, err := statsSince(&before, jobs)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(st); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// childArgs is the command line of a child, as startChild writes it.
type childArgs struct {
	loop            Loop
	natsURL, apiURL string
	token           string
	concurrency     int
	cpuProfile      string
}

func parseChildArgs(args []string, stderr io.Writer) (childArgs, bool) {
	var a childArgs
	fs := flag.NewFlagSet("bench --child", flag.ContinueOnError)
	fs.SetOutput(stderr)
	loop := fs.String("child", "", "worker or bare")
	fs.StringVar(&a.natsURL, "nats-url", "", "")
	fs.StringVar(&a.apiURL, "api-url", "", "")
	fs.IntVar(&a.concurrency, "concurrency", 1, "")
	fs.StringVar(&a.cpuProfile, "cpuprofile", "", "")
	if err := fs.Parse(args); err != nil {
		return a, false
	}
	a.loop = Loop(*loop)
	a.token = os.Getenv(tokenEnv)
	if a.token == "" || a.natsURL == "" || a.apiURL == "" {
		fmt.Fprintln(stderr, "bench --child: needs --nats-url, --api-url and "+tokenEnv)
		return a, false
	}
	return a, true
}

// run runs the loop until ctx is cancelled, under the CPU profiler if
// asked, and returns the jobs the bare loop finished.
func (a childArgs) run(ctx context.Context, version string) (int64, error) {
	if a.cpuProfile != "" {
		f, err := os.Create(a.cpuProfile)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
		// And where the loop allocates, beside it.
		defer a.writeAllocs()
	}
	switch a.loop {
	case LoopWorker:
		return 0, workerChild(ctx, version, a)
	case LoopBare:
		return bareLoop(ctx, a.natsURL, a.apiURL, a.token, a.concurrency)
	}
	return 0, fmt.Errorf("--child %q: want worker or bare", a.loop)
}

// writeAllocs writes the allocation profile beside the CPU profile, as
// <name>-allocs.pprof: the run's allocations, sampled.
func (a childArgs) writeAllocs() {
	f, err := os.Create(strings.TrimSuffix(a.cpuProfile, ".pprof") + "-allocs.pprof")
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("allocs").WriteTo(f, 0)
}

// statsSince is the child's childStats, allocations counted from before.
func statsSince(before *runtime.MemStats, jobs int64) (childStats, error) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return childStats{}, err
	}
	return childStats{
		Mallocs:    after.Mallocs - before.Mallocs,
		TotalAlloc: after.TotalAlloc - before.TotalAlloc,
		NumGC:      after.NumGC - before.NumGC,
		UserMS:     syscall.TimevalToNsec(ru.Utime) / 1e6,
		SystemMS:   syscall.TimevalToNsec(ru.Stime) / 1e6,
		PeakRSS:    peakRSSKiB(),
		Jobs:       jobs,
	}, nil
}

// workerChild is `tallyfy-deleter run` itself: the settings below read by
// settings.LoadRun (every other setting at run's default), then service.Run
// until ctx is cancelled, as the run subcommand does. Its JSON logs at info
// level go nowhere (but for errors, kept to say why it failed), and it has
// no HTTP listener: nothing scrapes it. Only the concurrency and what
// points it at the bench's servers are set; the OTEL_* environment the
// parent gave it turns tracing on or leaves it off, as for run.
func workerChild(ctx context.Context, version string, a childArgs) error {
	env := map[string]string{
		"NATS_URL":             a.natsURL,
		"TALLYFY_API_URL":      a.apiURL,
		"TALLYFY_ACCESS_TOKEN": a.token,
		"TALLYFY_ORG_ID":       org,
		"DELETER_CONCURRENCY":  strconv.Itoa(a.concurrency),
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
