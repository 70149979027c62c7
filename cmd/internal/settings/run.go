package settings

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// AddNATS adds the connection settings every subcommand shares.
func AddNATS(s *Set, url, creds *string) {
	s.Str(url, "NATS_URL", "nats-url", "nats://127.0.0.1:4222", "NATS server URL; several, comma-separated, for a cluster")
	s.Str(creds, "NATS_CREDS", "nats-creds", "", "NATS credentials file (optional)")
}

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
// `run`: where NATS is and what the streams are called. Names holds only
// the name fields; the tools use no other worker Setting.
type Tool struct {
	NATSURL, NATSCreds string
	Names              worker.Streams
}

// ToolSettings returns the shared settings of a tool; a tool adds its own
// flags to the same list before parsing.
func ToolSettings(c *Tool) *Set {
	s := &Set{}
	AddNATS(s, &c.NATSURL, &c.NATSCreds)
	AddNames(s, &c.Names)
	return s
}

// Run is everything `run` needs.
type Run struct {
	NATSURL, NATSCreds string
	APIURL             string
	Token, TokenFile   string
	ClientID           string
	ClientSecret       string
	ClientSecretFile   string
	TokenURL           string
	HTTPAddr           string
	LogLevel           string
	LogFormat          string
	Worker             worker.Config
	provision          bool
	// Effective is the configuration as applied, secrets redacted.
	Effective map[string]string
	// credentials is what checkCredentials built; see Credentials.
	credentials tallyfy.Option
}

func runSettings(c *Run) *Set {
	s := &Set{}
	w := &c.Worker
	AddNATS(s, &c.NATSURL, &c.NATSCreds)
	s.Str(&c.APIURL, "TALLYFY_API_URL", "tallyfy-api-url", tallyfy.DefaultBaseURL, "Tallyfy API base URL")
	s.Str(&c.Token, "TALLYFY_ACCESS_TOKEN", "tallyfy-access-token", "", "Tallyfy personal access token (prefer the variable or the file: flags show in ps)").secret = true
	s.Str(&c.TokenFile, "TALLYFY_ACCESS_TOKEN_FILE", "tallyfy-access-token-file", "", "file holding the access token, re-read when it changes")
	s.Str(&c.ClientID, "TALLYFY_CLIENT_ID", "tallyfy-client-id", "", "OAuth client ID (client credentials instead of a personal token)")
	s.Str(&c.ClientSecret, "TALLYFY_CLIENT_SECRET", "tallyfy-client-secret", "", "OAuth client secret (prefer the variable or the file)").secret = true
	s.Str(&c.ClientSecretFile, "TALLYFY_CLIENT_SECRET_FILE", "tallyfy-client-secret-file", "", "file holding the OAuth client secret, re-read when it changes")
	s.Str(&c.TokenURL, "TALLYFY_TOKEN_URL", "tallyfy-token-url", tallyfy.DefaultTokenURL, "OAuth token endpoint")
	s.Str(&w.DefaultOrg, "TALLYFY_ORG_ID", "tallyfy-org-id", "", "organization of jobs that name none").For("DefaultOrg")
	s.StrList(&w.AllowedOrgs, "TALLYFY_ALLOWED_ORGS", "tallyfy-allowed-orgs", "", "comma list of organizations jobs may name; '*' for any (default: TALLYFY_ORG_ID only)").For("AllowedOrgs")
	s.NumIn(&w.Concurrency, "DELETER_CONCURRENCY", "concurrency", "16", "jobs in flight per worker (1 to 10000)", 1, 10000).For("Concurrency")
	s.NumIn(&w.MaxDeliver, "DELETER_MAX_DELIVER", "max-deliver", "5", "deliveries of a job before retries_exhausted (1 to 1000)", 1, 1000).For("MaxDeliver")
	s.DurList(&w.Backoff, "DELETER_BACKOFF", "backoff", "1s,5s,30s,2m", "delays before each retry of a failed delivery; the last repeats").For("Backoff")
	s.DurIn(&w.APITimeout, "DELETER_API_TIMEOUT", "api-timeout", "10s", "timeout of one Tallyfy call (10ms to 10m)", 10*time.Millisecond, 10*time.Minute).For("APITimeout")
	s.NumIn(&w.BreakerFailures, "DELETER_BREAKER_FAILURES", "breaker-failures", "5", "consecutive failures that open the circuit breaker (1 to 1000)", 1, 1000).For("BreakerFailures")
	s.DurIn(&w.BreakerTimeout, "DELETER_BREAKER_TIMEOUT", "breaker-timeout", "30s", "how long the breaker stays open, and the pause after a 401 (100ms to 1h)", 100*time.Millisecond, time.Hour).For("BreakerTimeout")
	s.DurIn(&w.ShutdownTimeout, "DELETER_SHUTDOWN_TIMEOUT", "shutdown-timeout", "25s", "grace period for in-flight jobs at shutdown (10ms to 1h)", 10*time.Millisecond, time.Hour).For("ShutdownTimeout")
	s.DurIn(&w.AckWait, "DELETER_ACK_WAIT", "ack-wait", "30s", "the consumer's ack wait (1s to 12h)", time.Second, 12*time.Hour).For("AckWait")
	s.Bool(&c.provision, "DELETER_PROVISION", "provision", "true", "create or update the streams and the consumer at start").For("SkipProvision")
	s.Bool(&w.DryRun, "DELETER_DRY_RUN", "dry-run", "false", "everything but the DELETE: outcome dry_run, job acked, nothing deleted").For("DryRun")
	s.Float(&w.RateLimit, "DELETER_RATE_LIMIT", "rate-limit", "0", "API requests per second per worker; 0 = no limit (429s still slow it down)").For("RateLimit")
	s.NumIn(&w.RateBurst, "DELETER_RATE_BURST", "rate-burst", "", "burst of the rate limit, 1 to 100000 (default: one second's worth)", 1, 100000).For("RateBurst")
	s.Bool(&w.VerifyNotFound, "DELETER_VERIFY_NOT_FOUND", "verify-not-found", "false", "after a 404, GET the run; if it still exists, dead-letter not_archived").For("VerifyNotFound")
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
	errs = append(errs, c.checkCredentials()...)
	if err := tallyfy.CheckBaseURL(c.APIURL); err != nil {
		errs = append(errs, fmt.Errorf("TALLYFY_API_URL: %w", err))
	}
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

// checkCredentials wants exactly one way to authenticate.
func (c *Run) checkCredentials() []error {
	ways := 0
	for _, set := range []bool{c.Token != "", c.TokenFile != "", c.ClientID != "" || c.ClientSecret != "" || c.ClientSecretFile != ""} {
		if set {
			ways++
		}
	}
	switch {
	case ways == 0:
		return []error{errors.New("no credentials: set TALLYFY_ACCESS_TOKEN, TALLYFY_ACCESS_TOKEN_FILE, or TALLYFY_CLIENT_ID with TALLYFY_CLIENT_SECRET or TALLYFY_CLIENT_SECRET_FILE")}
	case ways > 1:
		return []error{errors.New("more than one kind of credentials: set only one of TALLYFY_ACCESS_TOKEN, TALLYFY_ACCESS_TOKEN_FILE, and TALLYFY_CLIENT_ID with its secret")}
	}
	switch {
	case c.TokenFile != "":
		// Read it as the worker will: a file that exists but cannot be
		// read, or is empty, is refused like a missing one. The worker gets
		// a source of its own, which reads the file at its first call: a
		// file that became unreadable since is found out then, not a
		// second later.
		if _, err := tallyfy.FileTokenSource(c.TokenFile).Token(); err != nil {
			return []error{fmt.Errorf("TALLYFY_ACCESS_TOKEN_FILE: %w", err)}
		}
		c.credentials = tallyfy.WithTokenSource(tallyfy.FileTokenSource(c.TokenFile))
	case c.ClientID != "" || c.ClientSecret != "" || c.ClientSecretFile != "":
		return c.checkClientCredentials()
	default:
		c.credentials = tallyfy.WithToken(c.Token)
	}
	return nil
}

// checkClientCredentials wants a client ID with exactly one secret, and
// builds the token source: reading the secret file, fetching nothing.
func (c *Run) checkClientCredentials() []error {
	switch {
	case c.ClientID == "":
		return []error{errors.New("TALLYFY_CLIENT_SECRET or TALLYFY_CLIENT_SECRET_FILE is set but TALLYFY_CLIENT_ID is not")}
	case c.ClientSecret != "" && c.ClientSecretFile != "":
		return []error{errors.New("TALLYFY_CLIENT_SECRET and TALLYFY_CLIENT_SECRET_FILE are both set: set one")}
	case c.ClientSecret == "" && c.ClientSecretFile == "":
		return []error{errors.New("TALLYFY_CLIENT_ID is set but neither TALLYFY_CLIENT_SECRET nor TALLYFY_CLIENT_SECRET_FILE is")}
	}
	if err := tallyfy.CheckBaseURL(c.TokenURL); err != nil {
		return []error{fmt.Errorf("TALLYFY_TOKEN_URL: %w", err)}
	}
	cs, err := tallyfy.ClientCredentials(tallyfy.ClientCredentialsConfig{
		TokenURL:         c.TokenURL,
		ClientID:         c.ClientID,
		ClientSecret:     c.ClientSecret,
		ClientSecretFile: c.ClientSecretFile,
	})
	if err != nil {
		// With the ID, one secret and the URL checked, only the file is left.
		return []error{fmt.Errorf("TALLYFY_CLIENT_SECRET_FILE: %w", err)}
	}
	c.credentials = tallyfy.WithTokenSource(cs)
	return nil
}

// Credentials is the API client's option for the credentials LoadRun
// checked.
func (c *Run) Credentials() tallyfy.Option { return c.credentials }

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
