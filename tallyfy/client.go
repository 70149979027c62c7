package tallyfy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/oauth2"
)

const (
	// DefaultBaseURL is the API root in Tallyfy's documentation. Tallyfy's
	// own CLI uses https://api.tallyfy.com with the same paths.
	DefaultBaseURL = "https://go.tallyfy.com/api"
	// DefaultTokenURL is where client credentials are exchanged for tokens.
	DefaultTokenURL = "https://go.tallyfy.com/oauth/token"

	defaultTimeout   = 10 * time.Second
	defaultUserAgent = "tallyfy-deleter"

	// maxDrain is what we read of a 2xx body we have no use for, so the
	// connection can be reused; past that, closing it is cheaper.
	maxDrain = 64 << 10
	// maxDecode bounds a body we do decode; a run is a few KiB.
	maxDecode = 1 << 20
	maxIDLen  = 64
)

// ErrInvalidID is returned, wrapped with the offending ID, before any request
// is made. IDs come from queue messages; this keeps a crafted one from
// walking the URL to another endpoint.
var ErrInvalidID = errors.New("tallyfy: invalid ID (want 1 to 64 ASCII letters, digits, '-' or '_')")

// Client calls the Tallyfy API. It is safe for concurrent use and holds no
// per-call state; build one per process with New.
type Client struct {
	// prefix is scheme://host/base-path, escaped, without a trailing slash.
	prefix string
	hc     *http.Client
	// keepAlive is how many idle connections the default transport keeps.
	keepAlive int
	timeout   time.Duration
	ts        oauth2.TokenSource
	ua        string
	hook      func(RequestInfo)
	// The values of the constant request headers, shared by every request
	// (net/http only reads them), and that of the Authorization header for
	// the token last used: allocated once, not per request.
	acceptHdr, clientHdr, uaHdr []string
	auth                        atomic.Pointer[authHeader]
}

// authHeader is the Authorization header's value for one token.
type authHeader struct {
	token string
	value []string
}

// Option configures a Client. Options check their input and New returns
// the first complaint.
type Option func(*Client) error

// RequestInfo describes one HTTP attempt, for metrics.
type RequestInfo struct {
	Method string
	// StatusCode is 0 when no answer arrived (a transport error or timeout).
	StatusCode int
	Duration   time.Duration
	Err        error
}

// Response is what a call learned about the answer, success or not.
type Response struct {
	StatusCode int
	// RequestID is the X-Request-Id header, which Tallyfy support asks for.
	RequestID string
}

// Run is the part of a process run the deleter looks at.
type Run struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// ArchivedAt is nil while the run is not archived.
	ArchivedAt *string `json:"archived_at"`
}

// New returns a Client for the API at baseURL ("" means DefaultBaseURL).
// Credentials are required: WithToken or WithTokenSource.
//
// The timeout (WithTimeout) is applied as a context deadline to each attempt,
// including reading its body, and separately to each token fetch; the
// default HTTP client therefore has no Timeout of its own.
func New(baseURL string, opts ...Option) (*Client, error) {
	if baseURL == "" {
		baseURL = DefaultBaseURL
	}
	u, err := parseHTTPURL(baseURL)
	if err != nil {
		return nil, fmt.Errorf("tallyfy: base URL: %w", err)
	}
	return build(u, opts)
}

// CheckBaseURL says whether New would take baseURL: an absolute http or
// https URL without user information, query or fragment ("" is the
// default).
func CheckBaseURL(baseURL string) error {
	if baseURL == "" {
		return nil
	}
	if _, err := parseHTTPURL(baseURL); err != nil {
		return fmt.Errorf("tallyfy: base URL: %w", err)
	}
	return nil
}

func build(u *url.URL, opts []Option) (*Client, error) {
	c := &Client{
		prefix:  u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"),
		timeout: defaultTimeout,
		ua:      defaultUserAgent,
	}
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("tallyfy: nil Option")
		}
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if c.ts == nil {
		return nil, errors.New("tallyfy: no credentials: use WithToken or WithTokenSource")
	}
	c.acceptHdr, c.clientHdr, c.uaHdr = []string{"application/json"}, []string{"APIClient"}, []string{c.ua}
	if c.hc == nil {
		c.hc = noRedirects(nil)
		if c.keepAlive > 0 {
			t := c.hc.Transport.(*http.Transport)
			t.MaxIdleConns, t.MaxIdleConnsPerHost = c.keepAlive, c.keepAlive
		}
	}
	return c, nil
}

// WithHTTPClient makes the Client use a copy of hc whose CheckRedirect
// refuses every redirect: following one would send the bearer token to
// wherever it points. A redirect comes back as an *APIError.
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) error {
		if hc == nil {
			return errors.New("tallyfy: WithHTTPClient: client is nil")
		}
		c.hc = noRedirects(hc)
		return nil
	}
}

// WithKeepAlive keeps up to n idle connections to the API (default 64)
// in the default transport. Set it to the number of calls in flight at
// once: with fewer, every burst closes connections and dials new ones.
// It has no effect with WithHTTPClient.
func WithKeepAlive(n int) Option {
	return func(c *Client) error {
		if n < 1 {
			return fmt.Errorf("tallyfy: WithKeepAlive: %d is not positive", n)
		}
		c.keepAlive = n
		return nil
	}
}

// WithTimeout sets how long one attempt may take, body included (default
// 10s).
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error {
		if d <= 0 {
			return fmt.Errorf("tallyfy: WithTimeout: %v is not positive", d)
		}
		c.timeout = d
		return nil
	}
}

// WithToken authenticates with a static personal access token. A 401 is
// final: retrying with the same token cannot help.
func WithToken(token string) Option {
	return func(c *Client) error {
		if c.ts != nil {
			return errors.New("tallyfy: WithToken: credentials already set")
		}
		if !validToken(token) {
			// Never echo the value: it may be a real token with a stray byte.
			return errors.New("tallyfy: WithToken: token is empty or holds characters that cannot go in a header")
		}
		c.ts = oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token, TokenType: "Bearer"})
		return nil
	}
}

// WithTokenSource authenticates with tokens from ts, asked before every
// attempt, so ts should cache (FileTokenSource and ClientCredentials do). If
// ts implements Invalidator, a 401 invalidates it and the request is retried
// once with the new token; if it implements SecretHolder, its secrets are
// redacted from errors.
func WithTokenSource(ts oauth2.TokenSource) Option {
	return func(c *Client) error {
		if c.ts != nil {
			return errors.New("tallyfy: WithTokenSource: credentials already set")
		}
		if ts == nil {
			return errors.New("tallyfy: WithTokenSource: source is nil")
		}
		c.ts = ts
		return nil
	}
}

// WithUserAgent sets the User-Agent header (default "tallyfy-deleter").
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		if ua == "" {
			return errors.New("tallyfy: WithUserAgent: empty")
		}
		for i := 0; i < len(ua); i++ {
			if ua[i] < 0x20 || ua[i] > 0x7e {
				return fmt.Errorf("tallyfy: WithUserAgent: %q holds characters that cannot go in a header", ua)
			}
		}
		c.ua = ua
		return nil
	}
}

// WithRequestHook calls h after every HTTP attempt, including the first of a
// 401 retry. h runs on the caller's goroutine and must be quick.
func WithRequestHook(h func(RequestInfo)) Option {
	return func(c *Client) error {
		if h == nil {
			return errors.New("tallyfy: WithRequestHook: hook is nil")
		}
		c.hook = h
		return nil
	}
}

// DeleteRun permanently deletes an archived run. Any 2xx is success (the
// docs say 200, older ones 204). Other answers are *APIError: ErrNotFound
// when the run is gone (or, per the docs, not archived), ErrNotArchived,
// ErrForbidden, ErrUnauthorized, ErrRateLimited, and so on. A failure to get
// a token is a *TokenError and no request is made. Like every call, it sends
// the W3C trace context ctx carries, if any (see the package doc).
func (c *Client) DeleteRun(ctx context.Context, orgID, runID string) (*Response, error) {
	u, err := c.runURL(orgID, runID, "/delete")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodDelete, u, nil)
}

// ArchiveRun archives a run (Tallyfy's soft delete; the endpoint of the
// permanent delete without "/delete"), which a permanent delete requires
// first. Archiving an archived run succeeds. Errors are as for DeleteRun:
// ErrNotFound for a run that is gone, ErrForbidden, and so on.
func (c *Client) ArchiveRun(ctx context.Context, orgID, runID string) (*Response, error) {
	u, err := c.runURL(orgID, runID, "")
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodDelete, u, nil)
}

// GetRun reads a run, which tells a run that is truly gone from one that
// answered 404 because it was not archived. Errors are as for DeleteRun.
func (c *Client) GetRun(ctx context.Context, orgID, runID string) (*Run, *Response, error) {
	u, err := c.runURL(orgID, runID, "")
	if err != nil {
		return nil, nil, err
	}
	var run *Run
	resp, err := c.do(ctx, http.MethodGet, u, func(r io.Reader) error {
		var env struct {
			Data *Run `json:"data"`
		}
		if err := json.NewDecoder(r).Decode(&env); err != nil {
			return err
		}
		if env.Data == nil {
			return errors.New(`no "data" object`)
		}
		run = env.Data
		return nil
	})
	if err != nil {
		return nil, resp, err
	}
	return run, resp, nil
}

// ValidID reports whether s may be used as an org or run ID: 1 to 64 ASCII
// letters, digits, '-' or '_'. Tallyfy documents no format; this is what its
// IDs look like, and nothing in it can change a URL's meaning.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (c *Client) runURL(orgID, runID, suffix string) (string, error) {
	if !ValidID(orgID) {
		return "", invalidID("org", orgID)
	}
	if !ValidID(runID) {
		return "", invalidID("run", runID)
	}
	// Escaping is a no-op for valid IDs; it stays in case ValidID is ever
	// loosened.
	return c.prefix + "/organizations/" + url.PathEscape(orgID) + "/runs/" + url.PathEscape(runID) + suffix, nil
}

func invalidID(which, id string) error {
	const maxShown = 80
	if len(id) > maxShown {
		id = id[:maxShown] + "..."
	}
	return fmt.Errorf("%w: %s ID %s", ErrInvalidID, which, strconv.QuoteToASCII(id))
}

// CheckCredentials gets a token the way a request would, without calling
// the API: nil, or the *TokenError the next request would fail with. With
// client credentials it may fetch a token from the token endpoint (which
// the next request then uses). It tells a caller whose credentials were
// unreadable (ErrCredentialsUnreadable) when they can be read again.
func (c *Client) CheckCredentials(ctx context.Context) error {
	_, err := c.token(ctx)
	return err
}

// do makes the call, and repeats it once after a 401 if the token source
// can produce a different token.
func (c *Client) do(ctx context.Context, method, u string, decode func(io.Reader) error) (*Response, error) {
	tok, err := c.token(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.attempt(ctx, method, u, tok, decode)
	if resp == nil || resp.StatusCode != http.StatusUnauthorized || !c.invalidate(tok) {
		return resp, err
	}
	fresh, terr := c.token(ctx)
	if terr != nil {
		// Keep the 401 first so callers routing on *APIError still see it.
		return resp, fmt.Errorf("%w (refreshing the token: %w)", err, terr)
	}
	if fresh == tok {
		return resp, err
	}
	return c.attempt(ctx, method, u, fresh, decode)
}

// authValue is the Authorization header's value for token, shared by the
// requests that use the same token.
func (c *Client) authValue(token string) []string {
	if a := c.auth.Load(); a != nil && a.token == token {
		return a.value
	}
	a := &authHeader{token: token, value: []string{"Bearer " + token}}
	c.auth.Store(a)
	return a.value
}

func (c *Client) invalidate(refused string) bool {
	switch s := c.ts.(type) {
	case invalidator:
		s.invalidate(refused)
		return true
	case Invalidator:
		s.Invalidate()
		return true
	}
	return false
}

func (c *Client) token(ctx context.Context) (string, error) {
	var t *oauth2.Token
	var err error
	if cs, ok := c.ts.(contextSource); ok {
		// Only a source that may fetch gets a deadline of its own: a timer
		// per request for a static token or a file is what the profile
		// showed.
		ctx, cancel := context.WithTimeout(ctx, c.timeout)
		t, err = cs.tokenContext(ctx)
		cancel()
	} else {
		t, err = c.ts.Token()
	}
	if err != nil {
		if te, ok := err.(*TokenError); ok {
			return "", te
		}
		return "", retrieveError(err, c.secrets(""))
	}
	if t == nil || !validToken(t.AccessToken) {
		return "", &TokenError{Message: "token source gave an empty token or one that cannot go in a header", local: true}
	}
	return t.AccessToken, nil
}

// secrets is computed only on error paths: success should not pay for it.
func (c *Client) secrets(token string) secrets {
	vals := []string{token}
	if h, ok := c.ts.(SecretHolder); ok {
		vals = append(vals, h.Secrets()...)
	}
	return newSecrets(vals...)
}

func (c *Client) attempt(ctx context.Context, method, u, token string, decode func(io.Reader) error) (resp *Response, err error) {
	if c.hook != nil {
		start := time.Now()
		defer func() {
			info := RequestInfo{Method: method, Duration: time.Since(start), Err: err}
			if resp != nil {
				info.StatusCode = resp.StatusCode
			}
			c.hook(info)
		}()
	}
	// The deadline, not http.Client.Timeout, bounds the attempt: it also
	// covers a body that trickles or never ends. A caller's deadline that
	// comes as soon needs no timer of our own (the worker sets one per call).
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > c.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}

	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, c.secrets(token).wrap("tallyfy: ", err)
	}
	// The keys are canonical already: Set would canonicalise them again on
	// every request, which the profile showed.
	req.Header["Authorization"] = c.authValue(token)
	req.Header["Accept"] = c.acceptHdr
	req.Header["X-Tallyfy-Client"] = c.clientHdr
	req.Header["User-Agent"] = c.uaHdr
	injectTrace(ctx, req.Header)

	hr, err := c.hc.Do(req)
	if err != nil {
		return nil, c.secrets(token).wrap("tallyfy: ", err)
	}
	resp = &Response{StatusCode: hr.StatusCode, RequestID: requestID(hr.Header)}
	if hr.StatusCode < 200 || hr.StatusCode > 299 {
		err = checkResponse(hr, c.secrets(token))
		hr.Body.Close()
		return resp, err
	}
	defer func() {
		// Errors here cannot change a success that has already happened.
		_, _ = io.CopyN(io.Discard, hr.Body, maxDrain)
		hr.Body.Close()
	}()
	if decode != nil {
		if err := decode(io.LimitReader(hr.Body, maxDecode)); err != nil {
			return resp, c.secrets(token).wrap("tallyfy: decoding response: ", err)
		}
	}
	return resp, nil
}

// injectTrace carries a caller's trace on to Tallyfy: a ctx holding a
// valid span context (trace.ContextWithSpan, or a remote one) sends it as
// W3C traceparent and tracestate; a ctx without one sends nothing.
func injectTrace(ctx context.Context, h http.Header) {
	propagation.TraceContext{}.Inject(ctx, traceHeaders(h))
}

// traceHeaders is h as the propagator's carrier, writing the trace headers
// under their canonical names directly: http.Header.Set would canonicalise
// them anew on every request.
type traceHeaders http.Header

func (h traceHeaders) Set(key, value string) {
	switch key {
	case "traceparent":
		h["Traceparent"] = []string{value}
	case "tracestate":
		h["Tracestate"] = []string{value}
	default:
		http.Header(h).Set(key, value)
	}
}

func (h traceHeaders) Get(key string) string { return http.Header(h).Get(key) }

func (h traceHeaders) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// noRedirects copies hc (or builds the default) with redirects refused.
func noRedirects(hc *http.Client) *http.Client {
	var cp http.Client
	if hc != nil {
		cp = *hc
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Every worker goroutine talks to the same host; the stdlib default
		// of 2 idle connections per host would redial constantly.
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 64
		// Requests are a line and a few headers, answers mostly small; the
		// 4 KiB default buffers, per connection and both ways, were 2 MiB
		// of peak RSS at 256 connections.
		t.WriteBufferSize, t.ReadBufferSize = 1024, 2048
		cp.Transport = t
	}
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

func parseHTTPURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, fmt.Errorf("%q is not an absolute http or https URL", s)
	case u.User != nil:
		// It would ride along in every error message that quotes the URL.
		return nil, errors.New("URL must not hold user information")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("%q must not have a query or fragment", s)
	}
	return u, nil
}
