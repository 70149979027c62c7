package settings

import (
	"errors"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Sweep is what `sweep` shares with the other commands: NATS and the stream
// names as the tools have them, and Tallyfy reached as `run` reaches it,
// with the same organizations allowed, the same timeout and rate limit.
type Sweep struct {
	Tool
	API
	DefaultOrg  string
	AllowedOrgs []string
	APITimeout  time.Duration
	RateLimit   float64
	RateBurst   int
}

// SweepSettings returns the shared settings of `sweep`; it adds its own
// flags to the same list before parsing.
func SweepSettings(c *Sweep) *Set {
	s := ToolSettings(&c.Tool)
	AddAPI(s, &c.API)
	AddOrgs(s, &c.DefaultOrg, &c.AllowedOrgs)
	AddAPITimeout(s, &c.APITimeout)
	AddRate(s, &c.RateLimit, &c.RateBurst)
	return s
}

// Check checks what Parse could not, as `run` checks the same settings:
// exactly one kind of credentials (a token or secret file is read), an API
// URL the client takes, the organizations and the allow-list, a burst only
// with a rate, and the stream names. Every error names the setting. It
// builds Credentials.
func (c *Sweep) Check() error {
	errs := c.API.check()
	// The worker's own rules, on the fields that sweep shares with it.
	w := worker.Config{
		Streams:     c.Names,
		DefaultOrg:  c.DefaultOrg,
		AllowedOrgs: c.AllowedOrgs,
		APITimeout:  c.APITimeout,
		RateLimit:   c.RateLimit,
		RateBurst:   c.RateBurst,
	}
	if err := w.Validate(); err != nil {
		errs = append(errs, errors.New(Describe(err)))
	}
	return errors.Join(errs...)
}

// Allowed reports whether TALLYFY_ALLOWED_ORGS allows org, by the worker's
// rule (worker.Config.Allows).
func (c *Sweep) Allowed(org string) bool {
	return worker.Config{DefaultOrg: c.DefaultOrg, AllowedOrgs: c.AllowedOrgs}.Allows(org)
}
