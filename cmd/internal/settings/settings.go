package settings

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

	"github.com/tallyfy-deleter/tallyfy-deleter/cmd/internal/cli"
	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

// Setting is one configuration value: an environment variable and the flag
// of the same meaning. The flag wins over the variable, which wins over the
// default.
type Setting struct {
	env, flag, def, help string
	secret               bool
	// urls is a comma list of NATS URLs, whose scheme may be left out:
	// redacted as such in the start-up log. Other values are redacted as
	// URLs only when they have a scheme.
	urls bool
	// isBool flags may stand alone: --json means --json=true.
	isBool bool
	set    func(string) error
	// field is the worker.Config field it sets, if any: its errors name
	// the field, and Describe names the setting instead.
	field string
	// value and from are what parse applied: for the start-up log.
	value, from string
}

// Set binds names to targets and parses them.
type Set struct {
	list []*Setting
	// checks are rules on settings that parsing one value cannot apply:
	// files read, combinations refused (AddNATS's). Command and LoadRun
	// run them once every setting is parsed.
	checks []func(getenv func(string) string) []error
}

// check runs the checks; every error names its setting.
func (s *Set) check(getenv func(string) string) []error {
	var errs []error
	for _, c := range s.checks {
		errs = append(errs, c(getenv)...)
	}
	return errs
}

func (s *Set) add(env, flagName, def, help string, set func(string) error) *Setting {
	st := &Setting{env: env, flag: flagName, def: def, help: help, set: set}
	s.list = append(s.list, st)
	return st
}

// Describe is err's text with the fields its *worker.FieldError values
// name replaced by the environment variables of the settings that set
// them; joined errors are described one per line.
func (s *Set) Describe(err error) string {
	var fe *worker.FieldError
	switch e := err.(type) {
	case nil:
		return ""
	case *worker.FieldError:
		return e.Message(s.envOf)
	case interface{ Unwrap() []error }:
		var lines []string
		for _, inner := range e.Unwrap() {
			lines = append(lines, s.Describe(inner))
		}
		return strings.Join(lines, "\n")
	}
	inner := errors.Unwrap(err)
	if inner == nil || !errors.As(inner, &fe) {
		return err.Error()
	}
	return strings.Replace(err.Error(), inner.Error(), s.Describe(inner), 1)
}

// envOf is the environment variable that sets a worker.Config field.
func (s *Set) envOf(field string) string {
	for _, st := range s.list {
		if st.field == field && st.env != "" {
			return st.env
		}
	}
	return field
}

// For records the worker.Config field the setting sets.
func (st *Setting) For(field string) *Setting {
	st.field = field
	return st
}

func (s *Set) Str(p *string, env, flagName, def, help string) *Setting {
	return s.add(env, flagName, def, help, func(v string) error { *p = strings.TrimSpace(v); return nil })
}

func (s *Set) Dur(p *time.Duration, env, flagName, def, help string) *Setting {
	return s.add(env, flagName, def, help, func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 500ms, 30s or 2m", v)
		}
		*p = d
		return nil
	})
}

func (s *Set) Num(p *int, env, flagName, def, help string) *Setting {
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
func (s *Set) NumIn(p *int, env, flagName, def, help string, lo, hi int) *Setting {
	st := s.Num(p, env, flagName, def, help)
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
func (s *Set) DurIn(p *time.Duration, env, flagName, def, help string, lo, hi time.Duration) *Setting {
	st := s.Dur(p, env, flagName, def, help)
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

func (s *Set) Bool(p *bool, env, flagName, def, help string) *Setting {
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

func (s *Set) Float(p *float64, env, flagName, def, help string) *Setting {
	return s.add(env, flagName, def, help, func(v string) error {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%q is not a number", v)
		}
		*p = f
		return nil
	})
}

func (s *Set) DurList(p *[]time.Duration, env, flagName, def, help string) *Setting {
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

func (s *Set) StrList(p *[]string, env, flagName, def, help string) *Setting {
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

// Repeat is a flag of one command only that may be given more than once:
// each value, a comma list, adds to *p.
func (s *Set) Repeat(p *[]string, flagName, help string) *Setting {
	return s.add("", flagName, "", help, func(v string) error {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
		return nil
	})
}

// Parse applies defaults, then the environment, then the flags in args,
// and returns the arguments after the flags. Every error names the
// setting. It prints nothing: --help returns flag.ErrHelp, and a command
// line that does not parse a *UsageError.
func (s *Set) Parse(name string, args []string, getenv func(string) string) ([]string, error) {
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
			if from == st.env {
				return nil, fmt.Errorf("%s: %w", st.env, err)
			}
			return nil, fmt.Errorf("%s (%s): %w", st.env, from, err)
		}
		st.value, st.from = v, from
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, flag.ErrHelp
		}
		return nil, &UsageError{Command: name, Err: err}
	}
	return fs.Args(), nil
}

// UsageError is a command line that does not parse: an unknown flag, or a
// value a flag refuses.
type UsageError struct {
	Command string
	Err     error
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Hint is the line printed after a bad command line.
func Hint(command string) string {
	return fmt.Sprintf("see 'tallyfy-deleter %s --help'", command)
}

// Command parses a subcommand's command line the way every subcommand
// does: --help prints the usage, then more, to stdout (exit status 0); a
// command line that does not parse prints one line and a hint to stderr
// (exit status 2), and so do settings that its checks refuse (a NATS
// file that cannot be read, say), one line each. It returns the
// positional arguments, or false and the exit status.
func (s *Set) Command(name string, args []string, getenv func(string) string, stdout, stderr io.Writer, more string) ([]string, int, bool) {
	rest, err := s.Parse(name, args, getenv)
	switch {
	case errors.Is(err, flag.ErrHelp):
		s.Usage(stdout, name)
		fmt.Fprint(stdout, more)
		return nil, 0, false
	case err != nil:
		fmt.Fprintf(stderr, "tallyfy-deleter %s: %v\n%s\n", name, err, Hint(name))
		return nil, 2, false
	}
	if errs := s.check(getenv); len(errs) > 0 {
		for _, line := range strings.Split(errors.Join(errs...).Error(), "\n") {
			fmt.Fprintf(stderr, "tallyfy-deleter %s: %s\n", name, line)
		}
		return nil, 2, false
	}
	return rest, 0, true
}

// effective is every Setting's value and where it came from, secrets
// redacted: logged once at start.
func (s *Set) Effective() map[string]string {
	out := make(map[string]string, len(s.list))
	for _, st := range s.list {
		v := st.value
		switch {
		case v == "":
			continue
		case st.secret:
			v = "[REDACTED]"
		case st.urls || strings.Contains(v, "://"):
			v = cli.RedactURLs(v)
		}
		if st.from != "default" {
			v += " (" + st.from + ")"
		}
		out[st.env] = v
	}
	return out
}

func (s *Set) Usage(w io.Writer, name string) {
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
