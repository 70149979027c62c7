package worker

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

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
	// acked (or, where ArchiveFirst allows, archived and deleted). The
	// Deleter must then also be a RunChecker.
	VerifyNotFound bool
	// ArchiveFirst says which jobs the worker may archive when Tallyfy
	// refuses to delete a run that is not archived: none (ArchiveNever, the
	// default), those that ask (ArchiveJob), or all (ArchiveAlways). The
	// Deleter must then also be an Archiver.
	ArchiveFirst ArchiveMode
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
	// TracerProvider, when set, makes a span of every job (a child of the
	// job's traceparent, when it has one) and of every request to Tallyfy
	// for it (a child of the job's, whose trace context Tallyfy gets).
	// Default (nil, or a no-op provider): no spans; a job's trace context
	// is still carried on as it came (see HeaderTraceparent).
	TracerProvider trace.TracerProvider
}

// allowedOrgs is AllowedOrgs, or DefaultOrg alone when it is not set.
func (c Config) allowedOrgs() []string {
	if c.AllowedOrgs == nil && c.DefaultOrg != "" {
		return []string{c.DefaultOrg}
	}
	return c.AllowedOrgs
}

// Allows reports whether a job may name org: AllowedOrgs holds it or "*";
// an AllowedOrgs that is not set (nil) holds DefaultOrg alone. The worker
// refuses any other org (org_not_allowed); the sweep sweeps no other.
func (c Config) Allows(org string) bool {
	for _, o := range c.allowedOrgs() {
		if o == "*" || o == org {
			return true
		}
	}
	return false
}

// withDefaults returns c with every zero value replaced by its default.
func (c Config) withDefaults() Config {
	str := func(p *string, d string) {
		if *p == "" {
			*p = d
		}
	}
	if c.ArchiveFirst == "" {
		c.ArchiveFirst = ArchiveNever
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
	c.AllowedOrgs = c.allowedOrgs()
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

// FieldError is one problem Validate found. Its message names the Config
// fields involved as they are named here; a program that sets them under
// other names (environment variables, flags) renames them with Message.
type FieldError struct {
	format string // with {Field} where a field is named
	args   []any
}

// fieldErrorf is a *FieldError; a %w in format is unwrapped by Unwrap.
func fieldErrorf(format string, a ...any) error { return &FieldError{format: format, args: a} }

// Unwrap gives the errors among the message's arguments.
func (e *FieldError) Unwrap() []error {
	var out []error
	for _, a := range e.args {
		if err, ok := a.(error); ok {
			out = append(out, err)
		}
	}
	return out
}

func (e *FieldError) Error() string { return e.Message(func(f string) string { return f }) }

// Message is the error with every field named by name(field).
func (e *FieldError) Message(name func(field string) string) string {
	return fmt.Errorf(fieldRef.ReplaceAllStringFunc(e.format, func(ref string) string {
		return strings.ReplaceAll(name(ref[1:len(ref)-1]), "%", "%%")
	}), e.args...).Error()
}

var fieldRef = regexp.MustCompile(`\{([A-Za-z]+)\}`)

// Validate reports every setting that cannot work, alone or with others,
// in a fixed order: errors.Join of *FieldError, each naming the fields
// involved.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fieldErrorf(format, a...)) }
	c.checkLimits(bad)
	c.checkOrgs(bad)
	c.checkNames(bad)
	return errors.Join(errs...)
}

// checkLimits reports the numbers and durations that cannot work.
func (c Config) checkLimits(bad func(format string, a ...any)) {
	if c.Concurrency < 1 || c.Concurrency > 10000 {
		bad("{Concurrency} must be between 1 and 10000, not %d", c.Concurrency)
	}
	if c.MaxDeliver < 1 {
		bad("{MaxDeliver} must be at least 1, not %d", c.MaxDeliver)
	}
	for _, b := range c.Backoff {
		if b <= 0 {
			bad("{Backoff} steps must be positive, not %s", b)
		}
		if b > c.DuplicateWindow {
			bad("{Backoff} step %s is longer than {DuplicateWindow} %s: a retried job could publish its outcome twice", b, c.DuplicateWindow)
		}
	}
	for _, s := range []named[time.Duration]{
		{"AckWait", c.AckWait}, {"APITimeout", c.APITimeout},
		{"BreakerTimeout", c.BreakerTimeout}, {"ShutdownTimeout", c.ShutdownTimeout},
		{"DuplicateWindow", c.DuplicateWindow}, {"ResultsMaxAge", c.ResultsMaxAge},
	} {
		if s.value < 0 {
			bad("{"+s.name+"} must not be negative, not %s", s.value)
		}
	}
	if c.AckWait > 0 && c.AckWait < time.Second {
		bad("{AckWait} must be at least 1s, not %s", c.AckWait)
	}
	if c.RateLimit < 0 {
		bad("{RateLimit} must not be negative, not %g", c.RateLimit)
	}
	if c.RateBurst < 0 {
		bad("{RateBurst} must not be negative, not %d", c.RateBurst)
	}
	if c.RateBurst > 0 && c.RateLimit == 0 {
		bad("{RateBurst} is set but {RateLimit} is not: a burst needs a rate")
	}
	if c.BreakerFailures < 1 {
		bad("{BreakerFailures} must be at least 1, not %d", c.BreakerFailures)
	}
	if rp := c.RetryPath(); c.DuplicateWindow < rp {
		bad("{DuplicateWindow} %s is shorter than the longest retry path %s ({MaxDeliver} × {AckWait} + the {Backoff} steps): a redelivered job could publish its outcome twice", c.DuplicateWindow, rp)
	}
	if c.ResultsMaxAge > 0 && c.ResultsMaxAge < c.DuplicateWindow {
		bad("{ResultsMaxAge} %s is shorter than {DuplicateWindow} %s", c.ResultsMaxAge, c.DuplicateWindow)
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		bad("{Replicas} must be between 1 and 5, not %d", c.Replicas)
	}
	switch c.ArchiveFirst {
	case ArchiveNever, ArchiveJob, ArchiveAlways:
	default:
		bad("{ArchiveFirst} must be never, job or always, not %q", string(c.ArchiveFirst))
	}
}

// checkOrgs reports organization IDs that are not IDs, and an allow-list
// that refuses everything.
func (c Config) checkOrgs(bad func(format string, a ...any)) {
	if c.DefaultOrg != "" && !tallyfy.ValidID(c.DefaultOrg) {
		bad("{DefaultOrg} %q is not 1 to 64 letters, digits, '-' or '_'", c.DefaultOrg)
	}
	if len(c.AllowedOrgs) == 0 {
		bad("{AllowedOrgs} is empty and {DefaultOrg} is not set: every job would be refused; name the organizations, or '*' for any")
	}
	for _, o := range c.AllowedOrgs {
		if o != "*" && !tallyfy.ValidID(o) {
			bad("{AllowedOrgs} entry %q is not '*' nor 1 to 64 letters, digits, '-' or '_'", o)
		}
	}
}

// checkNames reports stream, consumer and subject names JetStream would
// refuse or that would collide.
func (c Config) checkNames(bad func(format string, a ...any)) {
	for _, n := range []named[string]{
		{"JobsStream", c.JobsStream}, {"ResultsStream", c.ResultsStream},
		{"DLQStream", c.DLQStream}, {"Consumer", c.Consumer},
	} {
		if strings.ContainsAny(n.value, " \t\r\n.*>/\\") {
			bad("{"+n.name+"} %q must not contain spaces, '.', '*', '>', '/' or '\\'", n.value)
		}
	}
	for _, n := range []named[string]{
		{"JobsSubject", c.JobsSubject}, {"ResultsSubject", c.ResultsSubject},
		{"DLQSubject", c.DLQSubject},
	} {
		s := n.value
		if strings.ContainsAny(s, " \t\r\n*>") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
			bad("{"+n.name+"} %q is not a plain subject (no wildcards, spaces or empty tokens)", s)
		}
	}
	if c.ResultsSubject == c.DLQSubject || c.ResultsSubject == c.JobsSubject || c.DLQSubject == c.JobsSubject ||
		strings.HasPrefix(c.JobsSubject, c.ResultsSubject+".") || strings.HasPrefix(c.JobsSubject, c.DLQSubject+".") {
		bad("{JobsSubject}, {ResultsSubject} and {DLQSubject} must not overlap")
	}
	if c.JobsStream == c.ResultsStream || c.JobsStream == c.DLQStream || c.ResultsStream == c.DLQStream {
		bad("{JobsStream}, {ResultsStream} and {DLQStream} must differ")
	}
}

// ArchiveMode is Config.ArchiveFirst: which jobs may have their run
// archived before it is deleted.
type ArchiveMode string

const (
	// ArchiveNever dead-letters a run that is not archived (not_archived).
	ArchiveNever ArchiveMode = "never"
	// ArchiveJob archives the run of a job that asks for it: its body
	// says "archive_first": true, or it carries the header
	// Tallyfy-Archive-First: true.
	ArchiveJob ArchiveMode = "job"
	// ArchiveAlways archives the run of every job.
	ArchiveAlways ArchiveMode = "always"
)

// named is a field's value with its name; a list of them keeps Validate's
// messages in a fixed order, as a map would not.
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
