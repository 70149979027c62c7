package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// setting is one configuration value: an environment variable and the flag
// of the same meaning. The flag wins over the variable, which wins over the
// default.
type setting struct {
	env, flag, def, help string
	secret               bool
	// isBool flags may stand alone: --json means --json=true.
	isBool bool
	set    func(string) error
	// value and from are what parse applied: for the start-up log.
	value, from string
}

// settings binds names to targets and parses them.
type settings struct {
	list []*setting
}

func (s *settings) add(env, flagName, def, help string, set func(string) error) *setting {
	st := &setting{env: env, flag: flagName, def: def, help: help, set: set}
	s.list = append(s.list, st)
	return st
}

func (s *settings) str(p *string, env, flagName, def, help string) *setting {
	return s.add(env, flagName, def, help, func(v string) error { *p = strings.TrimSpace(v); return nil })
}

func (s *settings) dur(p *time.Duration, env, flagName, def, help string) *setting {
	return s.add(env, flagName, def, help, func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 500ms, 30s or 2m", v)
		}
		*p = d
		return nil
	})
}

func (s *settings) num(p *int, env, flagName, def, help string) *setting {
	return s.add(env, flagName, def, help, func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
		return nil
	})
}

// numIn is num with bounds: a value outside [lo, hi] is refused, never
// silently replaced by the default (as a library's zero value would be).
func (s *settings) numIn(p *int, env, flagName, def, help string, lo, hi int) *setting {
	st := s.num(p, env, flagName, def, help)
	parse := st.set
	st.set = func(v string) error {
		if err := parse(v); err != nil {
			return err
		}
		if *p < lo || *p > hi {
			return fmt.Errorf("%d is out of range: it must be from %d to %d", *p, lo, hi)
		}
		return nil
	}
	return st
}

// durIn is dur with bounds, as numIn.
func (s *settings) durIn(p *time.Duration, env, flagName, def, help string, lo, hi time.Duration) *setting {
	st := s.dur(p, env, flagName, def, help)
	parse := st.set
	st.set = func(v string) error {
		if err := parse(v); err != nil {
			return err
		}
		if *p < lo || *p > hi {
			return fmt.Errorf("%s is out of range: it must be from %s to %s", *p, lo, hi)
		}
		return nil
	}
	return st
}

func (s *settings) boolean(p *bool, env, flagName, def, help string) *setting {
	st := s.add(env, flagName, def, help, func(v string) error {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
		return nil
	})
	st.isBool = true
	return st
}

func (s *settings) float(p *float64, env, flagName, def, help string) *setting {
	return s.add(env, flagName, def, help, func(v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number", v)
		}
		*p = f
		return nil
	})
}

func (s *settings) durList(p *[]time.Duration, env, flagName, def, help string) *setting {
	return s.add(env, flagName, def, help, func(v string) error {
		var out []time.Duration
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			d, err := time.ParseDuration(part)
			if err != nil {
				return fmt.Errorf("%q is not a comma list of durations such as 1s,5s,30s,2m", v)
			}
			out = append(out, d)
		}
		*p = out
		return nil
	})
}

func (s *settings) strList(p *[]string, env, flagName, def, help string) *setting {
	return s.add(env, flagName, def, help, func(v string) error {
		var out []string
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		*p = out
		return nil
	})
}

// parse applies defaults, then the environment, then the flags in args,
// and returns the arguments after the flags. Every error names the setting.
func (s *settings) parse(name string, args []string, getenv func(string) string, stderr io.Writer) ([]string, error) {
	for _, st := range s.list {
		v, from := st.def, "default"
		if st.env == "" {
			// A flag of one command only; it has no variable.
		} else if e := getenv(st.env); e != "" {
			v, from = e, st.env
		}
		if v == "" {
			continue
		}
		if err := st.set(v); err != nil {
			return nil, fmt.Errorf("%s (%s): %w", st.env, from, err)
		}
		st.value, st.from = v, from
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, st := range s.list {
		apply := func(v string) error {
			if err := st.set(v); err != nil {
				if st.env == "" {
					return err
				}
				return fmt.Errorf("%s: %w", st.env, err)
			}
			st.value, st.from = v, "--"+st.flag
			return nil
		}
		if st.isBool {
			fs.BoolFunc(st.flag, st.help, apply)
		} else {
			fs.Func(st.flag, st.help, apply)
		}
	}
	fs.Usage = func() { s.usage(stderr, name) }
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

// effective is every setting's value and where it came from, secrets
// redacted: logged once at start.
func (s *settings) effective() map[string]string {
	out := make(map[string]string, len(s.list))
	for _, st := range s.list {
		v := st.value
		switch {
		case v == "":
			continue
		case st.secret:
			v = "[REDACTED]"
		default:
			v = redactURLs(v)
		}
		if st.from != "default" {
			v += " (" + st.from + ")"
		}
		out[st.env] = v
	}
	return out
}

func (s *settings) usage(w io.Writer, name string) {
	fmt.Fprintf(w, "Usage: tallyfy-deleter %s [flags]\n\nA flag with an ENV can also be set by that environment variable; the flag wins.\n\n", name)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tENV\tDEFAULT\tMEANING")
	for _, st := range s.list {
		def := st.def
		if def == "" {
			def = "-"
		}
		env := st.env
		if env == "" {
			env = "-"
		}
		fmt.Fprintf(tw, "--%s\t%s\t%s\t%s\n", st.flag, env, def, st.help)
	}
	tw.Flush()
}

// addNATS adds the connection settings every subcommand shares.
func addNATS(s *settings, url, creds *string) {
	s.str(url, "NATS_URL", "nats-url", "nats://127.0.0.1:4222", "NATS server URL; several, comma-separated, for a cluster")
	s.str(creds, "NATS_CREDS", "nats-creds", "", "NATS credentials file (optional)")
}

// addNames adds the stream, consumer and subject names every subcommand
// shares.
func addNames(s *settings, w *worker.Config) {
	s.str(&w.JobsStream, "DELETER_JOBS_STREAM", "jobs-stream", worker.DefaultJobsStream, "jobs stream")
	s.str(&w.JobsSubject, "DELETER_JOBS_SUBJECT", "jobs-subject", worker.DefaultJobsSubject, "jobs subject")
	s.str(&w.Consumer, "DELETER_CONSUMER", "consumer", worker.DefaultConsumer, "durable consumer shared by the pool")
	s.str(&w.ResultsStream, "DELETER_RESULTS_STREAM", "results-stream", worker.DefaultResultsStream, "results stream")
	s.str(&w.ResultsSubject, "DELETER_RESULTS_SUBJECT", "results-subject", worker.DefaultResultsSubject, "results subject prefix: events go to <prefix>.<outcome>")
	s.str(&w.DLQStream, "DELETER_DLQ_STREAM", "dlq-stream", worker.DefaultDLQStream, "dead-letter stream")
	s.str(&w.DLQSubject, "DELETER_DLQ_SUBJECT", "dlq-subject", worker.DefaultDLQSubject, "dead-letter subject prefix: dead letters go to <prefix>.<reason>")
}

// toolConfig is what the operator tools (enqueue, dlq, status) share with
// `run`: where NATS is and what the streams are called. Names holds only
// the name fields; the tools use no other worker setting.
type toolConfig struct {
	NATSURL, NATSCreds string
	Names              worker.Config
}

// toolSettings returns the shared settings of a tool; a tool adds its own
// flags to the same list before parsing.
func toolSettings(c *toolConfig) *settings {
	s := &settings{}
	addNATS(s, &c.NATSURL, &c.NATSCreds)
	addNames(s, &c.Names)
	return s
}

// runConfig is everything `run` needs.
type runConfig struct {
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
	// effective is the configuration as applied, secrets redacted.
	effective map[string]string
}

func runSettings(c *runConfig) *settings {
	s := &settings{}
	w := &c.Worker
	addNATS(s, &c.NATSURL, &c.NATSCreds)
	s.str(&c.APIURL, "TALLYFY_API_URL", "tallyfy-api-url", tallyfy.DefaultBaseURL, "Tallyfy API base URL")
	s.str(&c.Token, "TALLYFY_ACCESS_TOKEN", "tallyfy-access-token", "", "Tallyfy personal access token (prefer the variable or the file: flags show in ps)").secret = true
	s.str(&c.TokenFile, "TALLYFY_ACCESS_TOKEN_FILE", "tallyfy-access-token-file", "", "file holding the access token, re-read when it changes")
	s.str(&c.ClientID, "TALLYFY_CLIENT_ID", "tallyfy-client-id", "", "OAuth client ID (client credentials instead of a personal token)")
	s.str(&c.ClientSecret, "TALLYFY_CLIENT_SECRET", "tallyfy-client-secret", "", "OAuth client secret (prefer the variable or the file)").secret = true
	s.str(&c.ClientSecretFile, "TALLYFY_CLIENT_SECRET_FILE", "tallyfy-client-secret-file", "", "file holding the OAuth client secret, re-read when it changes")
	s.str(&c.TokenURL, "TALLYFY_TOKEN_URL", "tallyfy-token-url", tallyfy.DefaultTokenURL, "OAuth token endpoint")
	s.str(&w.DefaultOrg, "TALLYFY_ORG_ID", "tallyfy-org-id", "", "organization of jobs that name none")
	s.strList(&w.AllowedOrgs, "TALLYFY_ALLOWED_ORGS", "tallyfy-allowed-orgs", "", "comma list of organizations jobs may name; '*' for any (default: TALLYFY_ORG_ID only)")
	s.numIn(&w.Concurrency, "DELETER_CONCURRENCY", "concurrency", "16", "jobs in flight per worker (1 to 10000)", 1, 10000)
	s.numIn(&w.MaxDeliver, "DELETER_MAX_DELIVER", "max-deliver", "5", "deliveries of a job before retries_exhausted (1 to 1000)", 1, 1000)
	s.durList(&w.Backoff, "DELETER_BACKOFF", "backoff", "1s,5s,30s,2m", "delays before each retry of a failed delivery; the last repeats")
	s.durIn(&w.APITimeout, "DELETER_API_TIMEOUT", "api-timeout", "10s", "timeout of one Tallyfy call (10ms to 10m)", 10*time.Millisecond, 10*time.Minute)
	s.numIn(&w.BreakerFailures, "DELETER_BREAKER_FAILURES", "breaker-failures", "5", "consecutive failures that open the circuit breaker (1 to 1000)", 1, 1000)
	s.durIn(&w.BreakerTimeout, "DELETER_BREAKER_TIMEOUT", "breaker-timeout", "30s", "how long the breaker stays open, and the pause after a 401 (100ms to 1h)", 100*time.Millisecond, time.Hour)
	s.durIn(&w.ShutdownTimeout, "DELETER_SHUTDOWN_TIMEOUT", "shutdown-timeout", "25s", "grace period for in-flight jobs at shutdown (10ms to 1h)", 10*time.Millisecond, time.Hour)
	s.durIn(&w.AckWait, "DELETER_ACK_WAIT", "ack-wait", "30s", "the consumer's ack wait (1s to 12h)", time.Second, 12*time.Hour)
	s.boolean(&c.provision, "DELETER_PROVISION", "provision", "true", "create or update the streams and the consumer at start")
	s.boolean(&w.DryRun, "DELETER_DRY_RUN", "dry-run", "false", "everything but the DELETE: outcome dry_run, job acked, nothing deleted")
	s.float(&w.RateLimit, "DELETER_RATE_LIMIT", "rate-limit", "0", "API requests per second per worker; 0 = no limit (429s still slow it down)")
	s.numIn(&w.RateBurst, "DELETER_RATE_BURST", "rate-burst", "", "burst of the rate limit, 1 to 100000 (default: one second's worth)", 1, 100000)
	s.boolean(&w.VerifyNotFound, "DELETER_VERIFY_NOT_FOUND", "verify-not-found", "false", "after a 404, GET the run; if it still exists, dead-letter not_archived")
	s.str(&c.HTTPAddr, "DELETER_HTTP_ADDR", "http-addr", ":9090", "address of /metrics, /healthz and /readyz; 'off' turns them off")
	s.str(&w.WorkerID, "DELETER_WORKER_ID", "worker-id", "", "this worker's name in events (default: the host name)")
	s.durIn(&w.DuplicateWindow, "DELETER_DUPLICATE_WINDOW", "duplicate-window", "", "duplicate window of the results and dead-letter streams, 1s to 8760h (default: the longer of 10m and the longest retry path)", time.Second, 8760*time.Hour)
	s.durIn(&w.ResultsMaxAge, "DELETER_RESULTS_MAX_AGE", "results-max-age", "336h", "how long result events are kept (1m to 87600h)", time.Minute, 87600*time.Hour)
	s.numIn(&w.Replicas, "DELETER_STREAM_REPLICAS", "stream-replicas", "1", "replicas of the streams it creates: 1 to 5 (3 on a cluster)", 1, 5)
	addNames(s, w)
	s.str(&c.LogLevel, "LOG_LEVEL", "log-level", "info", "debug, info, warn or error")
	s.str(&c.LogFormat, "LOG_FORMAT", "log-format", "json", "json or console")
	return s
}

// loadRunConfig reads the settings of `run` and checks those that the
// worker does not check itself.
func loadRunConfig(args []string, getenv func(string) string, stderr io.Writer) (*runConfig, error) {
	c := &runConfig{}
	s := runSettings(c)
	rest, err := s.parse("run", args, getenv, stderr)
	if err != nil {
		return nil, err
	}
	c.effective = s.effective()
	if c.HTTPAddr == "off" {
		c.HTTPAddr = ""
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("run takes no arguments, got %q", rest)
	}
	c.Worker.SkipProvision = !c.provision
	var errs []error
	errs = append(errs, c.checkCredentials()...)
	if _, err := tallyfy.New(c.APIURL, tallyfy.WithToken("placeholder")); err != nil {
		errs = append(errs, fmt.Errorf("TALLYFY_API_URL: %w", err))
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("LOG_FORMAT must be json or console, not %q", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if err := c.Worker.Validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// checkCredentials wants exactly one way to authenticate.
func (c *runConfig) checkCredentials() []error {
	var errs []error
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
	if c.TokenFile != "" {
		// Read it as the worker will: a file that exists but cannot be read,
		// or is empty, is refused like a missing one.
		if _, err := tallyfy.FileTokenSource(c.TokenFile).Token(); err != nil {
			errs = append(errs, fmt.Errorf("TALLYFY_ACCESS_TOKEN_FILE: %w", err))
		}
	}
	if c.ClientID != "" || c.ClientSecret != "" || c.ClientSecretFile != "" {
		switch {
		case c.ClientID == "":
			errs = append(errs, errors.New("TALLYFY_CLIENT_SECRET or TALLYFY_CLIENT_SECRET_FILE is set but TALLYFY_CLIENT_ID is not"))
		case c.ClientSecret != "" && c.ClientSecretFile != "":
			errs = append(errs, errors.New("TALLYFY_CLIENT_SECRET and TALLYFY_CLIENT_SECRET_FILE are both set: set one"))
		case c.ClientSecret == "" && c.ClientSecretFile == "":
			errs = append(errs, errors.New("TALLYFY_CLIENT_ID is set but neither TALLYFY_CLIENT_SECRET nor TALLYFY_CLIENT_SECRET_FILE is"))
		case c.ClientSecretFile != "":
			// Reads the file, and nothing else: no token is fetched.
			_, err := tallyfy.ClientCredentials(tallyfy.ClientCredentialsConfig{
				ClientID: c.ClientID, ClientSecretFile: c.ClientSecretFile,
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("TALLYFY_CLIENT_SECRET_FILE: %w", err))
			}
		}
	}
	return errs
}
