package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

func ParseLevel(s string) (zerolog.Level, error) {
	l, err := zerolog.ParseLevel(strings.ToLower(strings.TrimSpace(s)))
	if err != nil || s == "" {
		return zerolog.InfoLevel, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

func NewLogger(w io.Writer, level, format, workerID string) zerolog.Logger {
	l, _ := ParseLevel(level)
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(w).Level(l).With().Timestamp().Str("worker", workerID).Logger()
}

// OnSignal is cancelled by the first SIGINT or SIGTERM, after first is
// called with it; a second one calls second (if not nil) and ends the
// process at once with exit status 1. stop must be called; it stops
// listening.
//
// It is the one signal handling of the binary: run logs both signals,
// the tools say what the first one does (see Interruptible).
func OnSignal(first, second func(os.Signal)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			first(s)
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			if second != nil {
				second(s)
			}
			os.Exit(1)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// SignalContext is OnSignal for the run command: both signals are logged.
func SignalContext(log *zerolog.Logger) (context.Context, func()) {
	return OnSignal(
		func(s os.Signal) {
			log.Info().Str("signal", s.String()).Msg("shutting down; a second signal exits at once")
		},
		func(s os.Signal) {
			log.Warn().Str("signal", s.String()).Msg("second signal: exiting now")
		})
}

// NATSTarget is where NATS is and how to reach it: the servers, the TLS
// and credential options, and what a failed connect means in the terms of
// the settings. settings.NATS is one, once its Check has read the files
// it names. The goroutine that connects calls its methods.
type NATSTarget interface {
	// Servers is the comma list of server URLs; it may hold a password.
	Servers() string
	// Options secure and authenticate the connection; an error if the
	// settings were refused.
	Options() ([]nats.Option, error)
	// Explain is a connect error with what it means for the settings (a
	// CA that did not sign the server's certificate, say), wrapping err.
	Explain(err error) error
}

// ConnectNATS connects to to's servers as name, logging lost connections
// and reconnections to log (never a password: URLs are redacted). nats.go
// takes no context: the connect is bounded by its timeout (2 s a server)
// and is not retried, so a signal waits at most that long.
func ConnectNATS(to NATSTarget, name string, log *zerolog.Logger) (*nats.Conn, error) {
	secure, err := to.Options()
	if err != nil {
		return nil, err
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if c.IsClosed() {
				return // closed on purpose, not lost
			}
			log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn().Err(err).Msg("NATS error")
		}),
	}
	nc, err := nats.Connect(to.Servers(), append(opts, secure...)...)
	if err != nil {
		return nil, to.Explain(err)
	}
	return nc, nil
}

func Indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// ToolTimeout bounds every NATS call the tools make.
const ToolTimeout = 10 * time.Second

// ToolConnect connects to NATS; the client's warnings (a lost connection,
// say) go to stderr until disconnect is called. disconnect closes the
// connection quietly: closing fires the client's disconnect handler, whose
// "reconnecting" warning would be wrong, and would arrive after the command
// has returned.
func ToolConnect(to NATSTarget, tool string, stderr io.Writer) (js jetstream.JetStream, disconnect func(), err error) {
	gate := &gateWriter{w: stderr}
	log := zerolog.New(gate).Level(zerolog.WarnLevel).With().Timestamp().Str("tool", tool).Logger()
	nc, err := ConnectNATS(to, "tallyfy-deleter "+tool, &log)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot connect to NATS at %s: %w", RedactURLs(to.Servers()), err)
	}
	disconnect = func() {
		gate.shut()
		nc.Close()
	}
	// An async publish whose ack never comes fails after ToolTimeout
	// instead of waiting for ever.
	js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(ToolTimeout))
	if err != nil {
		disconnect()
		return nil, nil, fmt.Errorf("cannot use JetStream: %w", err)
	}
	return js, disconnect, nil
}

// gateWriter passes writes on until it is shut, then drops them.
type gateWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *gateWriter) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return len(b), nil
	}
	return g.w.Write(b)
}

func (g *gateWriter) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// RedactURLs hides passwords in a comma list of NATS URLs, and tokens: a
// user without a password is a token to nats.go. A URL without a scheme
// is read as nats.go reads it, nats://.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "://") {
			p = "nats://" + p
		}
		u, err := url.Parse(p)
		switch {
		case err != nil || u.User == nil:
			continue
		case hasPassword(u.User):
			parts[i] = u.Redacted()
		default:
			u.User = url.User("xxxxx")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func hasPassword(u *url.Userinfo) bool {
	_, ok := u.Password()
	return ok
}

// Interruptible is OnSignal for the operator tools: the first signal makes
// a long run stop taking new work, finish what it started and print its
// summary; a second one quits at once (a read of a terminal, say, is not
// interrupted by the first). stop must be called.
func Interruptible(stderr io.Writer) (ctx context.Context, stop func()) {
	return OnSignal(func(os.Signal) {
		fmt.Fprintln(stderr, "interrupted: finishing what was started; interrupt again to quit at once")
	}, nil)
}

// Cell makes s safe for one tabwriter cell (tallyfy.OneLine: no tabs, no
// line breaks, no control characters), "-" when empty.
func Cell(s string) string {
	if s = tallyfy.OneLine(s, maxCell); s == "" {
		return "-"
	}
	return s
}

// maxCell bounds one cell; dead-letter headers are shorter already.
const maxCell = 4 << 10
