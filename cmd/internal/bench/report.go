package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

type Loop string

const (
	LoopWorker Loop = "worker"
	LoopBare   Loop = "bare"
	// LoopWorkerTraced is the worker with tracing on: a span per job and
	// per request, exported over OTLP/HTTP to a sink in the bench process
	// that discards them (Options.Trace).
	LoopWorkerTraced Loop = "worker+trace"
)

// Row is one line of the table and one object of the JSON array.
type Row struct {
	APILatency   string  `json:"api_latency"`
	APILatencyMS float64 `json:"api_latency_ms"`
	Concurrency  int     `json:"concurrency"`
	Loop         Loop    `json:"loop"`
	Jobs         int     `json:"jobs"`
	JobsPerSec   float64 `json:"jobs_per_sec"`
	P50MS        float64 `json:"p50_ms"`
	P99MS        float64 `json:"p99_ms"`
	CPUPer10k    float64 `json:"cpu_s_per_10k_jobs"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	AllocsPerJob float64 `json:"allocs_per_job"`
	// AllocBytesPerJob is the heap bytes those allocations took.
	AllocBytesPerJob float64 `json:"alloc_bytes_per_job"`
	// GCsPer10k is the garbage collections the child ran per 10,000 jobs:
	// fewer for a loop holding more (its heap goal is higher).
	GCsPer10k float64 `json:"gcs_per_10k_jobs"`
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
	// round, and CPUVsBare its CPU per job over the loop's, each the median
	// over the rounds; on worker rows only.
	WorkerVsBare float64 `json:"worker_bare_ratio,omitempty"`
	CPUVsBare    float64 `json:"cpu_bare_ratio,omitempty"`
	// OfIdeal is jobs/s over concurrency / API latency, when the latency
	// is not zero.
	OfIdeal float64 `json:"of_ideal,omitempty"`
	// RSSVsSmallest is peak RSS over that of the smallest backlog; Memory
	// only.
	RSSVsSmallest float64 `json:"rss_vs_smallest_backlog,omitempty"`
	// VsUntraced is the traced worker's jobs/s over the untraced worker's
	// in the same round, and CPUVsUntraced its CPU per job over the
	// untraced worker's, each the median over the rounds; on worker+trace
	// rows only.
	VsUntraced    float64 `json:"traced_worker_ratio,omitempty"`
	CPUVsUntraced float64 `json:"traced_cpu_ratio,omitempty"`
	// OTLPBytesPerJob is what the traced worker exported per job, in
	// OTLP/HTTP request bodies (protobuf); worker+trace rows only.
	OTLPBytesPerJob float64 `json:"otlp_bytes_per_job,omitempty"`

	latency time.Duration
}

// WriteJSON writes the rows as one indented JSON array.
func WriteJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// WriteTable writes the rows, a legend and the targets.
func WriteTable(w io.Writer, rows []Row, memory bool) {
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
	if hasLoop(rows, LoopWorkerTraced) {
		fmt.Fprint(w, `worker+trace: the worker with a span per job and per request, exported over OTLP/HTTP (the
  SDK's batches) to a sink in the bench process that discards them. With --trace every job
  carries a traceparent and a tracestate, for every loop: the worker row then also pays for
  carrying them on.
`)
	}
	if len(rows) > 0 && rows[0].Runs > 1 {
		fmt.Fprintf(w, "Each row is the median of %d rounds, the loops alternating, each going first in turn;\n"+
			"worker/bare and the CPU ratio below are medians of each round's pair.\n", rows[0].Runs)
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
	var bare Row
	for _, r := range rows {
		if r.Loop == LoopBare {
			bare = r
			continue
		}
		if r.Loop == LoopWorkerTraced {
			fmt.Fprintf(w, "tracing: latency %s, concurrency %d: worker+trace at %.2f of the worker's jobs/s, with %.2f times its CPU per job (%.0f bytes of OTLP per job); worker+trace/bare %.2f\n",
				r.APILatency, r.Concurrency, r.VsUntraced, r.CPUVsUntraced, r.OTLPBytesPerJob, r.WorkerVsBare)
			continue
		}
		switch {
		case r.latency == 0:
			cpu := r.CPUVsBare
			fmt.Fprintf(w, "target: latency 0, concurrency %d: worker/bare %.2f, at least %.2f: %s; CPU per job %.2f times the bare loop's, at most %.1f: %s\n",
				r.Concurrency, r.WorkerVsBare, minThroughput, verdict(r.WorkerVsBare >= minThroughput), cpu, maxCPU, verdict(cpu > 0 && cpu <= maxCPU))
		case r.latency == 50*time.Millisecond && r.Concurrency == 64:
			fmt.Fprintf(w, "target: latency 50ms, concurrency 64: %.0f jobs/s, %.2f of the ideal 1280 (bare loop %.2f), at least %.2f: %s\n",
				r.JobsPerSec, r.OfIdeal, bare.OfIdeal, minOfIdeal, verdict(r.OfIdeal >= minOfIdeal))
		default:
			fmt.Fprintf(w, "latency %s, concurrency %d: %.2f of the ideal %.0f jobs/s (bare loop %.2f)\n",
				r.APILatency, r.Concurrency, r.OfIdeal, float64(r.Concurrency)/r.latency.Seconds(), bare.OfIdeal)
		}
	}
}

// The targets the worker is held to: at latency 0, its throughput as a
// share of the bare loop's and its CPU per job as a multiple of the loop's;
// at 50 ms and concurrency 64, its share of the ideal 64 / 0.05 s.
const (
	minThroughput = 0.95
	maxCPU        = 1.2
	minOfIdeal    = 0.97
)

func hasLoop(rows []Row, l Loop) bool {
	for _, r := range rows {
		if r.Loop == l {
			return true
		}
	}
	return false
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
