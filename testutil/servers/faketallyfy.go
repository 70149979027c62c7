package servers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"
)

// apiPrefix is where the fake serves the API, as go.tallyfy.com does. A base
// URL with a path catches clients that resolve "/organizations/..." against
// it and silently drop the "/api".
const apiPrefix = "/api"

// tokenPath is the OAuth token endpoint, outside the API prefix as on
// go.tallyfy.com.
const tokenPath = "/oauth/token"

// Error bodies in the shapes Tallyfy uses. The 403 one is Laravel's default
// text: Tallyfy documents the status but no body.
const (
	bodyUnauthenticated = `{"error":true,"message":"Unauthenticated."}`
	bodyRunNotFound     = `{"message":"Process not found"}`
	bodyForbidden       = `{"error":true,"message":"This action is unauthorized."}`
	bodyNotArchived     = `{"error":true,"message":"Process isn't archived yet - archive it first"}`
	bodyNoRoute         = `{"message":"Not Found"}`
)

// Response is an answer the fake gives instead of its normal behaviour, to
// play the infrastructure in front of the API (gateways, rate limiters) or a
// misbehaving API. The zero value answers 200 with an empty body.
type Response struct {
	// Status defaults to 200, or 302 when RedirectTo is set.
	Status int
	Body   string
	// Header is added last, so it can override anything the fake sets,
	// X-Request-Id included.
	Header http.Header
	// RetryAfter is sent as Retry-After as is: seconds or an HTTP date.
	RetryAfter string
	// Delay is added to the latency set with SetLatency.
	Delay time.Duration
	// BodySize streams this many bytes of filler instead of Body, without
	// ever holding them in memory: for clients that must not read an
	// error body whole.
	BodySize int64
	// Endless streams filler until the client goes away: for clients that
	// must give up on a body that never ends.
	Endless bool
	// RedirectTo is sent as Location.
	RedirectTo string
}

// Request is a request as the fake received it.
type Request struct {
	Method string
	// Path is r.URL.EscapedPath(): the base URL's "/api" included, IDs
	// escaped as the client escaped them.
	Path string
	// Query is r.URL.RawQuery, as the client encoded it.
	Query  string
	Header http.Header
	At     time.Time
	// Status is what the fake answered; 0 while the answer is still being
	// waited for, and for good if the client gave up waiting.
	Status int
}

type runKey struct{ org, run string }

type runState struct {
	archived   bool
	deleted    bool
	archivedAt time.Time
	// What the list shows of a run added with AddRunWith.
	name, checklist string
	tags            []string
}

type issuedToken struct{ expires time.Time }

type oauthClient struct {
	secret string
	ttl    time.Duration
}

type requestWaiter struct {
	n  int64
	ch chan struct{}
}

// FakeTallyfy is an in-process stand-in for the Tallyfy API: the process
// run endpoints, the OAuth token endpoint, and knobs to make them fail the
// ways the real one can. It is safe for concurrent use.
type FakeTallyfy struct {
	srv       *httptest.Server
	closing   chan struct{}
	closeOnce sync.Once
	idPrefix  string

	requestSeq   atomic.Int64
	requestCount atomic.Int64
	deleteCount  atomic.Int64

	mu    sync.Mutex
	now   func() time.Time
	token string
	runs  map[runKey]runState
	// order is each org's run IDs in the order they were added: the list's
	// order, so that its pages are stable.
	order        map[string][]string
	listScripts  map[listPage][]Response
	ignoreFilter bool
	nonAdmin     map[string]bool
	denied       map[runKey]bool
	deletes      map[runKey]int
	scripts      map[runKey][]Response
	scriptAll    []Response
	scriptToken  []Response
	outage       *Response
	latency      time.Duration
	record       bool
	requests     []Request
	waiters      []requestWaiter
	clients      map[string]oauthClient
	issued       map[string]issuedToken
	tokensIssued int
	deletedRuns  int
}

// StartFakeTallyfy starts the fake on a local port. Stop it with Close. It
// is meant for programs; tests use NewFakeTallyfy, which also cleans up.
func StartFakeTallyfy() *FakeTallyfy {
	f := &FakeTallyfy{
		closing:     make(chan struct{}),
		idPrefix:    randomHex(4),
		now:         time.Now,
		token:       "test-token-" + randomHex(8),
		runs:        make(map[runKey]runState),
		order:       make(map[string][]string),
		listScripts: make(map[listPage][]Response),
		nonAdmin:    make(map[string]bool),
		denied:      make(map[runKey]bool),
		deletes:     make(map[runKey]int),
		scripts:     make(map[runKey][]Response),
		record:      true,
		clients:     make(map[string]oauthClient),
		issued:      make(map[string]issuedToken),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serveHTTP))
	return f
}

// Close stops the server. Requests held by latency or endless bodies are cut
// off rather than waited for, so Close returns promptly. Calling it again
// does nothing.
func (f *FakeTallyfy) Close() {
	f.closeOnce.Do(func() {
		close(f.closing)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
}

// URL is the base URL a client uses in place of https://go.tallyfy.com/api.
func (f *FakeTallyfy) URL() string { return f.srv.URL + apiPrefix }

// TokenURL is the OAuth client-credentials endpoint, in place of
// https://go.tallyfy.com/oauth/token.
func (f *FakeTallyfy) TokenURL() string { return f.srv.URL + tokenPath }

// Token is the personal access token the API accepts.
func (f *FakeTallyfy) Token() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.token
}

// SetToken replaces the accepted personal access token; the old one then
// answers 401, as when the user it belongs to logs out. "" accepts none, so
// that only tokens from the token endpoint work.
func (f *FakeTallyfy) SetToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = tok
}

// SetClock replaces time.Now for token expiry and archived_at, so that tests
// can expire tokens without waiting. nil restores time.Now. Request.At
// always uses the real time: it is for measuring a client's pacing.
func (f *FakeTallyfy) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

// AddRun adds a run, or resets an existing one (a deleted run comes back).
func (f *FakeTallyfy) AddRun(org, run string, archived bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addRunLocked(org, run, archived)
}

// AddRuns adds many runs of one org under one lock, for benchmark setups.
func (f *FakeTallyfy) AddRuns(org string, runs []string, archived bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, run := range runs {
		f.addRunLocked(org, run, archived)
	}
}

func (f *FakeTallyfy) addRunLocked(org, run string, archived bool) {
	st := runState{archived: archived}
	if archived {
		st.archivedAt = f.now()
	}
	f.putRunLocked(runKey{org, run}, st)
}

// putRunLocked adds or replaces a run, keeping its place in the list.
func (f *FakeTallyfy) putRunLocked(k runKey, st runState) {
	old, known := f.runs[k]
	if old.deleted {
		f.deletedRuns--
	}
	if !known {
		f.order[k.org] = append(f.order[k.org], k.run)
	}
	f.runs[k] = st
}

// ArchiveRun archives a run as the archive endpoint would. An unknown run is
// added archived, so that a setup reads as one line per run.
func (f *FakeTallyfy) ArchiveRun(org, run string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := runKey{org, run}
	st, ok := f.runs[k]
	if ok && st.deleted {
		return
	}
	if !st.archived {
		st.archived, st.archivedAt = true, f.now()
	}
	f.putRunLocked(k, st)
}

// SetAdmin sets whether the API user is an administrator of org. Every org
// starts as admin; in one that is not, permanent delete answers 403.
func (f *FakeTallyfy) SetAdmin(org string, admin bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if admin {
		delete(f.nonAdmin, org)
	} else {
		f.nonAdmin[org] = true
	}
}

// DenyRun makes every request about that run answer 403.
func (f *FakeTallyfy) DenyRun(org, run string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.denied[runKey{org, run}] = true
}

// RunExists reports whether the run is known and not deleted.
func (f *FakeTallyfy) RunExists(org, run string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.runs[runKey{org, run}]
	return ok && !st.deleted
}

// Archived reports whether the run exists and is archived.
func (f *FakeTallyfy) Archived(org, run string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.runs[runKey{org, run}]
	return ok && !st.deleted && st.archived
}

// Deleted reports whether the fake permanently deleted the run.
func (f *FakeTallyfy) Deleted(org, run string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[runKey{org, run}].deleted
}

// DeletedCount is how many runs the fake has permanently deleted, so that a
// benchmark can tell when it is done without a lookup per run.
func (f *FakeTallyfy) DeletedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deletedRuns
}

// Script makes the next len(rs) requests about that run get rs, in order,
// whatever the run's state and before any authentication. Calls add to the
// queue. A run's script goes before ScriptAll's.
func (f *FakeTallyfy) Script(org, run string, rs ...Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := runKey{org, run}
	f.scripts[k] = append(f.scripts[k], rs...)
}

// ScriptAll makes the next len(rs) API requests, about any run, get rs in
// order. The token endpoint has its own queue, ScriptToken.
func (f *FakeTallyfy) ScriptAll(rs ...Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scriptAll = append(f.scriptAll, rs...)
}

// ScriptToken makes the next len(rs) requests to the token endpoint get rs.
func (f *FakeTallyfy) ScriptToken(rs ...Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.scriptToken = append(f.scriptToken, rs...)
}

// SetLatency delays every answer by d. A client that gives up waiting
// gets nothing, and its request changes nothing.
func (f *FakeTallyfy) SetLatency(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.latency = d
}

// SetOutage makes every request, the token endpoint's included, get r until
// EndOutage. It takes precedence over scripts, which are kept for after.
func (f *FakeTallyfy) SetOutage(r Response) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outage = &r
}

// EndOutage ends SetOutage.
func (f *FakeTallyfy) EndOutage() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.outage = nil
}

// RecordRequests turns the request record on (the default) or off. Off, a
// benchmark's millions of requests cost no memory; the counters keep
// counting.
func (f *FakeTallyfy) RecordRequests(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record = on
}

// Requests returns a copy of the recorded requests, in order of arrival.
func (f *FakeTallyfy) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Request, len(f.requests))
	for i, r := range f.requests {
		r.Header = r.Header.Clone()
		out[i] = r
	}
	return out
}

// RequestCount is how many requests have arrived, recorded or not.
func (f *FakeTallyfy) RequestCount() int64 { return f.requestCount.Load() }

// DeleteRequestCount is how many permanent-delete requests have arrived, for
// all runs together.
func (f *FakeTallyfy) DeleteRequestCount() int64 { return f.deleteCount.Load() }

// DeleteCount is how many permanent-delete requests for that run have
// arrived, whatever they were answered: scripted failures and outages count,
// since the client did send them.
func (f *FakeTallyfy) DeleteCount(org, run string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.deletes[runKey{org, run}]
}

// WaitRequests waits until n requests have arrived in total (RequestCount),
// or ctx ends. A request counts on arrival, before any latency, so this also
// tells a test that a client is now waiting for an answer.
func (f *FakeTallyfy) WaitRequests(ctx context.Context, n int) error {
	f.mu.Lock()
	if f.requestCount.Load() >= int64(n) {
		f.mu.Unlock()
		return nil
	}
	w := requestWaiter{n: int64(n), ch: make(chan struct{})}
	f.waiters = append(f.waiters, w)
	f.mu.Unlock()

	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		f.mu.Lock()
		for i, x := range f.waiters {
			if x.ch == w.ch {
				f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
				break
			}
		}
		f.mu.Unlock()
		return fmt.Errorf("testutil: %d of %d requests arrived: %w", f.requestCount.Load(), n, ctx.Err())
	}
}
