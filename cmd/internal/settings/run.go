package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// AddNames adds the stream, consumer and subject names every subcommand
// shares.
func AddNames(s *Set, w *worker.Streams) {
	s.Str(&w.JobsStream, "DELETER_JOBS_STREAM", "jobs-stream", worker.DefaultJobsStream, "jobs stream").For("JobsStream")
	s.Str(&w.JobsSubject, "DELETER_JOBS_SUBJECT", "jobs-subject", worker.DefaultJobsSubject, "jobs subject").For("JobsSubject")
	s.Str(&w.Consumer, "DELETER_CONSUMER", "consumer", worker.DefaultConsumer, "durable consumer shared by the pool").For("Consumer")
	s.Str(&w.ResultsStream, "DELETER_RESULTS_STREAM", "results-stream", worker.DefaultResultsStream, "results stream").For("ResultsStream")
	s.Str(&w.ResultsSubject, "DELETER_RESULTS_SUBJECT", "results-subject", worker.DefaultResultsSubject, "results subject prefix: events go to <prefix>.<outcome>").For("ResultsSubject")
	s.Str(&w.DLQStream, "DELETER_DLQ_STREAM", "dlq-stream", worker.DefaultDLQStream, "dead-letter stream").For("DLQStream")
	s.Str(&w.DLQSubject, "DELETER_DLQ_SUBJECT", "dlq-subject", worker.DefaultDLQSubject, "dead-letter subject prefix: dead letters go to <prefix>.<reason>").For("DLQSubject")
}

// Tool is what the operator tools (enqueue, dlq, status) share with
// `run`: how to reach NATS and what the streams are called. Names holds
// only the name fields; the tools use no other worker Setting.
type Tool struct {
	NATS  NATS
	Names worker.Streams
}

// ToolSettings returns the shared settings of a tool; a tool adds its own
// flags to the same list before parsing.
func ToolSettings(c *Tool) *Set {
	s := &Set{}
	AddNATS(s, &c.NATS)
	AddNames(s, &c.Names)
	return s
}

// Run is everything `run` needs.
type Run struct {
	NATS NATS
	// API is where Tallyfy is and the credentials (APIURL, Token, ...,
	// Credentials()), as `sweep` has them too.
	API
	HTTPAddr  string
	LogLevel  string
	LogFormat string
	Worker    worker.Config
	provision bool
	// Effective is the configuration as applied, secrets redacted.
	Effective map[string]string
}

func runSettings(c *Run) *Set {
	s := &Set{}
	w := &c.Worker
	AddNATS(s, &c.NATS)
	AddAPI(s, &c.API)
	AddOrgs(s, &w.DefaultOrg, &w.AllowedOrgs)
	s.NumIn(&w.Concurrency, "DELETER_CONCURRENCY", "concurrency", "16", "jobs in flight per worker (1 to 10000)", 1, 10000).For("Concurrency")
	s.NumIn(&w.MaxDeliver, "DELETER_MAX_DELIVER", "max-deliver", "5", "deliveries of a job before retries_exhausted (1 to 1000)", 1, 1000).For("MaxDeliver")
	s.DurList(&w.Backoff, "DELETER_BACKOFF", "backoff", "1s,5s,30s,2m", "delays before each retry of a failed delivery; the last repeats").For("Backoff")
	AddAPITimeout(s, &w.APITimeout)
	s.NumIn(&w.BreakerFailures, "DELETER_BREAKER_FAILURES", "breaker-failures", "5", "consecutive failures that open the circuit breaker (1 to 1000)", 1, 1000).For("BreakerFailures")
	s.DurIn(&w.BreakerTimeout, "DELETER_BREAKER_TIMEOUT", "breaker-timeout", "30s", "how long the breaker stays open, and the pause after a 401 (100ms to 1h)", 100*time.Millisecond, time.Hour).For("BreakerTimeout")
	s.DurIn(&w.ShutdownTimeout, "DELETER_SHUTDOWN_TIMEOUT", "shutdown-timeout", "25s", "grace period for in-flight jobs at shutdown (10ms to 1h)", 10*time.Millisecond, time.Hour).For("ShutdownTimeout")
	s.DurIn(&w.AckWait, "DELETER_ACK_WAIT", "ack-wait", "30s", "the consumer's ack wait (1s to 12h)", time.Second, 12*time.Hour).For("AckWait")
	s.Bool(&c.provision, "DELETER_PROVISION", "provision", "true", "create or update the streams and the consumer at start").For("SkipProvision")
	s.Bool(&w.DryRun, "DELETER_DRY_RUN", "dry-run", "false", "everything but the DELETE: outcome dry_run, job acked, nothing deleted").For("DryRun")
	AddRate(s, &w.RateLimit, &w.RateBurst)
	s.Bool(&w.VerifyNotFound, "DELETER_VERIFY_NOT_FOUND", "verify-not-found", "true", "after a 404, GET the run; if it still exists, dead-letter not_archived (or archive it first, as DELETER_ARCHIVE_FIRST allows)").For("VerifyNotFound")
	s.add("DELETER_ARCHIVE_FIRST", "archive-first", string(worker.ArchiveNever), "archive a run that is not archived before deleting it: never, job (the jobs that ask, archive_first) or always", func(v string) error {
		w.ArchiveFirst = worker.ArchiveMode(strings.ToLower(strings.TrimSpace(v)))
		return nil
	}).For("ArchiveFirst")
	s.Str(&c.HTTPAddr, "DELETER_HTTP_ADDR", "http-addr", ":9090", "address of /metrics, /healthz and /readyz; 'off' turns them off")
	s.Str(&w.WorkerID, "DELETER_WORKER_ID", "worker-id", "", "this worker's name in events (default: the host name)").For("WorkerID")
	s.DurIn(&w.DuplicateWindow, "DELETER_DUPLICATE_WINDOW", "duplicate-window", "", "duplicate window of the results and dead-letter streams, 1s to 8760h (default: the longer of 10m and the longest retry path)", time.Second, 8760*time.Hour).For("DuplicateWindow")
	s.DurIn(&w.ResultsMaxAge, "DELETER_RESULTS_MAX_AGE", "results-max-age", "336h", "how long result events are kept (1m to 87600h)", time.Minute, 87600*time.Hour).For("ResultsMaxAge")
	s.NumIn(&w.Replicas, "DELETER_STREAM_REPLICAS", "stream-replicas", "1", "replicas of the streams it creates: 1 to 5 (3 on a cluster)", 1, 5).For("Replicas")
	AddNames(s, &w.Streams)
	s.Str(&c.LogLevel, "LOG_LEVEL", "log-level", "info", "debug, info, warn or error")
	s.Str(&c.LogFormat, "LOG_FORMAT", "log-format", "json", "json or console")
	return s
}

// LoadRun reads the settings of `run` and checks those that the
// worker does not check itself.
func LoadRun(args []string, getenv func(string) string, stdout io.Writer) (*Run, error) {
	c := &Run{}
	s := runSettings(c)
	rest, err := s.Parse("run", args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		s.Usage(stdout, "run")
	}
	if err != nil {
		return nil, err
	}
	c.Effective = s.Effective()
	if c.HTTPAddr == "off" {
		c.HTTPAddr = ""
	}
	if len(rest) > 0 {
		return nil, &UsageError{Command: "run", Err: fmt.Errorf("run takes no arguments, got %q", rest)}
	}
	c.Worker.SkipProvision = !c.provision
	var errs []error
	errs = append(errs, s.check(getenv)...)
	c.NATS.noteContext(c.Effective)
	errs = append(errs, c.API.check()...)
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("LOG_FORMAT must be json or console, not %q", c.LogFormat))
	}
	if _, err := cli.ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := c.Worker.Validate(); err != nil {
		errs = append(errs, errors.New(s.Describe(err)))
	}
	return c, errors.Join(errs...)
}

// Describe is err's text with the worker.Config fields its *worker.FieldError
// values name replaced by the environment variables of `run` that set
// them, so that an operator reads the names they type.
func Describe(err error) string {
	return runSettings(&Run{}).Describe(err)
}

// WorkerName is DELETER_WORKER_ID, or the host name when it is not set.
func (c *Run) WorkerName() string {
	if c.Worker.WorkerID != "" {
		return c.Worker.WorkerID
	}
	name, _ := os.Hostname()
	return name
}
