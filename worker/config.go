package worker

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// Defaults. The stream, consumer and subject names are the public contract
// of the README.
const (
	DefaultJobsStream      = "TALLYFY_RUN_DELETIONS"
	DefaultJobsSubject     = "tallyfy.runs.delete"
	DefaultConsumer        = "tallyfy-deleter"
	DefaultResultsStream   = "TALLYFY_RUN_RESULTS"
	DefaultResultsSubject  = "tallyfy.runs.result"
	DefaultDLQStream       = "TALLYFY_RUN_DLQ"
	DefaultDLQSubject      = "tallyfy.runs.dlq"
	DefaultConcurrency     = 16
	DefaultMaxDeliver      = 5
	DefaultAPITimeout      = 10 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerTimeout  = 30 * time.Second
	DefaultShutdownTimeout = 25 * time.Second
	DefaultAckWait         = 30 * time.Second
	DefaultResultsMaxAge   = 14 * 24 * time.Hour
	// DefaultDuplicateWindow is the least duplicate window the worker gives
	// the results and dead-letter streams; it grows to the longest retry
	// path when that is longer.
	DefaultDuplicateWindow = 10 * time.Minute
)

// DefaultBackoff is the delay before each retry of a failed delivery.
var DefaultBackoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, 2 * time.Minute}

// Streams names what the worker and the operator tools share: the streams,
// their subjects and the durable consumer. Empty names mean the default.
type Streams struct {
	// JobsStream is the work-queue stream holding jobs on JobsSubject.
	JobsStream  string
	JobsSubject string
	// Consumer is the durable pull consumer shared by every worker of the pool.
	Consumer string
	// ResultsStream keeps result events, published on
	// ResultsSubject.<outcome>.
	ResultsStream  string
	ResultsSubject string
	// DLQStream keeps dead letters, published on DLQSubject.<reason>.
	DLQStream  string
	DLQSubject string
}

// Config configures a Worker. Zero values mean the default.
type Config struct {
	Streams
	// SkipProvision leaves streams and the consumer to someone else; the
	// worker then only checks that they exist and fit.
	SkipProvision bool
	// Replicas of the streams the worker creates (a clustered JetStream
	// wants 3). Default 1.
	Replicas int
	// ResultsMaxAge is how long result events are kept. Default 14 days.
	ResultsMaxAge time.Duration
	// DuplicateWindow is the results and dead-letter streams' duplicate
	// window: a job redelivered within it never gives a second event or
	// dead letter. Default: the longer of 10 minutes and the longest retry
	// path; a window shorter than that path is refused.
	DuplicateWindow time.Duration

	// DefaultOrg fills a job's missing org_id.
	DefaultOrg string
	// AllowedOrgs are the organizations jobs may name; "*" allows any.
	// Default: DefaultOrg only.
	AllowedOrgs []string

	// Concurrency is the number of jobs in flight in this worker. Default 16.
	Concurrency int
	// MaxDeliver is the consumer's delivery limit. Default 5.
	MaxDeliver int
	// Backoff is the delay before each retry; the last step repeats.
	Backoff []time.Duration
	// AckWait is the consumer's ack wait. Default 30s.
	AckWait time.Duration
	// APITimeout bounds one API call. Default 10s.
	APITimeout time.Duration
	// BreakerFailures consecutive failures open the breaker. Default 5.
	BreakerFailures int
	// BreakerTimeout is how long the breaker stays open. Default 30s.
	BreakerTimeout time.Duration
	// ShutdownTimeout is how long in-flight jobs may take to finish once
	// shutdown starts. Default 25s.
	ShutdownTimeout time.Duration
	// MaxRetryAfter caps how long a 429's Retry-After holds a job and
	// pauses pulling. Default 5m.
	MaxRetryAfter time.Duration
	// PullWait is how long one pull request waits for jobs. Default 2s.
	// Shutdown waits for the pull in progress, so keep it short.
	PullWait time.Duration
	// PublishTimeout bounds one request to JetStream: a publish of a
	// result, dead letter or handed-back copy, an ack, a read of the
	// stream or consumer; and a whole sweep of a stranded job. Default 10s.
	PublishTimeout time.Duration

	// DryRun does everything but the DELETE: valid, allowed jobs end with
	// outcome dry_run, are acked, and nothing is deleted.
	DryRun bool
	// VerifyNotFound makes the worker GET a run after its delete answered
	// 404; a run that still exists is dead-lettered not_archived instead of
	// acked. The Deleter must then also be a RunChecker.
	VerifyNotFound bool
	// RateLimit caps API requests per second from this worker; 0 means no
	// cap. 429 answers lower the rate further until they stop.
	RateLimit float64
	// RateBurst is the limiter's burst. Default: one second's worth.
	RateBurst int
	// BacklogInterval is how often the consumer's backlog is read for the
	// Observer. Default 5s.
	BacklogInterval time.Duration

	// WorkerID names this worker in events. Default: the host name.
	WorkerID string
	// Logger receives one line per job outcome. Default: no logging.
	Logger *zerolog.Logger
	// Metrics, when set, observes the worker. Default: none.
	Metrics Observer
}

// withDefaults returns c with every zero value replaced by its default.
func (c Config) withDefaults() Config {
	str := func(p *string, d string) {
		if *p == "" {
			*p = d
		}
	}
	dur := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	num := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	str(&c.JobsStream, DefaultJobsStream)
	str(&c.JobsSubject, DefaultJobsSubject)
	str(&c.Consumer, DefaultConsumer)
	str(&c.ResultsStream, DefaultResultsStream)
	str(&c.ResultsSubject, DefaultResultsSubject)
	str(&c.DLQStream, DefaultDLQStream)
	str(&c.DLQSubject, DefaultDLQSubject)
	num(&c.Replicas, 1)
	num(&c.Concurrency, DefaultConcurrency)
	num(&c.MaxDeliver, DefaultMaxDeliver)
	num(&c.BreakerFailures, DefaultBreakerFailures)
	dur(&c.ResultsMaxAge, DefaultResultsMaxAge)
	dur(&c.AckWait, DefaultAckWait)
	dur(&c.APITimeout, DefaultAPITimeout)
	dur(&c.BreakerTimeout, DefaultBreakerTimeout)
	dur(&c.ShutdownTimeout, DefaultShutdownTimeout)
	dur(&c.MaxRetryAfter, 5*time.Minute)
	dur(&c.PullWait, 2*time.Second)
	dur(&c.PublishTimeout, 10*time.Second)
	dur(&c.BacklogInterval, 5*time.Second)
	if len(c.Backoff) == 0 {
		c.Backoff = append([]time.Duration(nil), DefaultBackoff...)
	}
	if c.AllowedOrgs == nil && c.DefaultOrg != "" {
		c.AllowedOrgs = []string{c.DefaultOrg}
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = max(DefaultDuplicateWindow, c.RetryPath())
	}
	if c.WorkerID == "" {
		c.WorkerID, _ = os.Hostname()
		if c.WorkerID == "" {
			c.WorkerID = "tallyfy-deleter"
		}
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	if c.Metrics == nil {
		c.Metrics = nopObserver{}
	}
	return c
}

// RetryPath is the longest time from a job's first delivery to its last:
// every delivery may take the ack wait, and every failed one waits its
// backoff step. Events and dead letters of one job are de-duplicated only
// if the duplicate window covers it.
func (c Config) RetryPath() time.Duration {
	c.Backoff = orDefault(c.Backoff, DefaultBackoff)
	ackWait := c.AckWait
	if ackWait == 0 {
		ackWait = DefaultAckWait
	}
	maxDeliver := c.MaxDeliver
	if maxDeliver == 0 {
		maxDeliver = DefaultMaxDeliver
	}
	p := Policy{Backoff: c.Backoff}
	total := time.Duration(maxDeliver) * ackWait
	for n := 1; n < maxDeliver; n++ {
		total += p.backoff(n)
	}
	return total
}

func orDefault(d, def []time.Duration) []time.Duration {
	if len(d) == 0 {
		return def
	}
	return d
}

// Validate reports every setting that cannot work, alone or with others.
// The messages name settings by their environment variables, since that is
// where operators set them.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	c.checkLimits(bad)
	c.checkOrgs(bad)
	c.checkNames(bad)
	return errors.Join(errs...)
}

// checkLimits reports the numbers and durations that cannot work.
func (c Config) checkLimits(bad func(format string, a ...any)) {
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		bad("DELETER_CONCURRENCY must be between 1 and 10000, not %d", c.Concurrency)
	}
	if c.MaxDeliver < 1 {
		bad("DELETER_MAX_DELIVER must be at least 1, not %d", c.MaxDeliver)
	}
	for _, b := range c.Backoff {
		if b <= 0 {
			bad("DELETER_BACKOFF steps must be positive, not %s", b)
		}
		if b > c.DuplicateWindow {
			bad("DELETER_BACKOFF step %s is longer than DELETER_DUPLICATE_WINDOW %s: a retried job could publish its outcome twice", b, c.DuplicateWindow)
		}
	}
	for _, s := range []named[time.Duration]{
		{"DELETER_ACK_WAIT", c.AckWait}, {"DELETER_API_TIMEOUT", c.APITimeout},
		{"DELETER_BREAKER_TIMEOUT", c.BreakerTimeout}, {"DELETER_SHUTDOWN_TIMEOUT", c.ShutdownTimeout},
		{"DELETER_DUPLICATE_WINDOW", c.DuplicateWindow}, {"DELETER_RESULTS_MAX_AGE", c.ResultsMaxAge},
	} {
		if s.value < 0 {
			bad("%s must not be negative, not %s", s.name, s.value)
		}
	}
	if c.AckWait > 0 && c.AckWait < time.Second {
		bad("DELETER_ACK_WAIT must be at least 1s, not %s", c.AckWait)
	}
	if c.RateLimit < 0 {
		bad("DELETER_RATE_LIMIT must not be negative, not %g", c.RateLimit)
	}
	if c.RateBurst < 0 {
		bad("DELETER_RATE_BURST must not be negative, not %d", c.RateBurst)
	}
	if c.RateBurst > 0 && c.RateLimit == 0 {
		bad("DELETER_RATE_BURST is set but DELETER_RATE_LIMIT is not: a burst needs a rate")
	}
	if c.BreakerFailures < 1 {
		bad("DELETER_BREAKER_FAILURES must be at least 1, not %d", c.BreakerFailures)
	}
	if rp := c.RetryPath(); c.DuplicateWindow < rp {
		bad("DELETER_DUPLICATE_WINDOW %s is shorter than the longest retry path %s (DELETER_MAX_DELIVER × DELETER_ACK_WAIT + the DELETER_BACKOFF steps): a redelivered job could publish its outcome twice", c.DuplicateWindow, rp)
	}
	if c.ResultsMaxAge > 0 && c.ResultsMaxAge < c.DuplicateWindow {
		bad("DELETER_RESULTS_MAX_AGE %s is shorter than DELETER_DUPLICATE_WINDOW %s", c.ResultsMaxAge, c.DuplicateWindow)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("DELETER_STREAM_REPLICAS must be between 1 and 5, not %d", c.Replicas)
	}
}

// checkOrgs reports organization IDs that are not IDs, and an allow-list
// that refuses everything.
func (c Config) checkOrgs(bad func(format string, a ...any)) {
	if c.DefaultOrg != "" && !tallyfy.ValidID(c.DefaultOrg) {
		bad("TALLYFY_ORG_ID %q is not 1 to 64 letters, digits, '-' or '_'", c.DefaultOrg)
	}
	if len(c.AllowedOrgs) == 0 {
		bad("TALLYFY_ALLOWED_ORGS is empty and TALLYFY_ORG_ID is not set: every job would be refused; name the organizations, or '*' for any")
	}
	for _, o := range c.AllowedOrgs {
		if o != "*" && !tallyfy.ValidID(o) {
			bad("TALLYFY_ALLOWED_ORGS entry %q is not '*' nor 1 to 64 letters, digits, '-' or '_'", o)
		}
	}
}

// checkNames reports stream, consumer and subject names JetStream would
// refuse or that would collide.
func (c Config) checkNames(bad func(format string, a ...any)) {
	for _, n := range []named[string]{
		{"DELETER_JOBS_STREAM", c.JobsStream}, {"DELETER_RESULTS_STREAM", c.ResultsStream},
		{"DELETER_DLQ_STREAM", c.DLQStream}, {"DELETER_CONSUMER", c.Consumer},
	} {
		if strings.ContainsAny(n.value, " \t\r\n.*>/\\") {
			bad("%s %q must not contain spaces, '.', '*', '>', '/' or '\\'", n.name, n.value)
		}
	}
	for _, n := range []named[string]{
		{"DELETER_JOBS_SUBJECT", c.JobsSubject}, {"DELETER_RESULTS_SUBJECT", c.ResultsSubject},
		{"DELETER_DLQ_SUBJECT", c.DLQSubject},
	} {
		s := n.value
		if strings.ContainsAny(s, " \t\r\n*>") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
			bad("%s %q is not a plain subject (no wildcards, spaces or empty tokens)", n.name, s)
		}
	}
	if c.ResultsSubject == c.DLQSubject || c.ResultsSubject == c.JobsSubject || c.DLQSubject == c.JobsSubject ||
		strings.HasPrefix(c.JobsSubject, c.ResultsSubject+".") || strings.HasPrefix(c.JobsSubject, c.DLQSubject+".") {
		bad("DELETER_JOBS_SUBJECT, DELETER_RESULTS_SUBJECT and DELETER_DLQ_SUBJECT must not overlap")
	}
	if c.JobsStream == c.ResultsStream || c.JobsStream == c.DLQStream || c.ResultsStream == c.DLQStream {
		bad("DELETER_JOBS_STREAM, DELETER_RESULTS_STREAM and DELETER_DLQ_STREAM must differ")
	}
}

// named is a setting's value with the name Validate's messages give it; a
// list of them keeps the messages in a fixed order, as a map would not.
type named[T any] struct {
	name  string
	value T
}

func (c Config) policy() Policy {
	return Policy{
		MaxDeliver:        c.MaxDeliver,
		Backoff:           c.Backoff,
		CredentialsPause:  c.BreakerTimeout,
		DefaultRetryAfter: time.Second,
		MaxRetryAfter:     c.MaxRetryAfter,
	}
}
