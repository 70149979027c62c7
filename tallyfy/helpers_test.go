package tallyfy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const testToken = "tok-0123456789abcdefABCDEF"

// newServer starts h and closes it when the test ends. Handlers that block
// must also watch done, so Close never waits on them.
func newServer(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func newClient(t testing.TB, baseURL string, opts ...Option) *Client {
	t.Helper()
	c, err := New(baseURL, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", baseURL, err)
	}
	return c
}

// counter counts requests a server has seen.
type counter struct{ n atomic.Int64 }

func (c *counter) wrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c.n.Add(1)
		h(w, r)
	}
}

func (c *counter) get() int { return int(c.n.Load()) }

// countingTransport counts the body bytes the client actually consumed,
// which is what "bounded reading" is about.
type countingTransport struct {
	rt   *http.Transport
	read atomic.Int64
}

func newCountingTransport(t testing.TB) *countingTransport {
	ct := &countingTransport{rt: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(ct.rt.CloseIdleConnections)
	return ct
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if resp != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.read}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// fakeClock is moved by hand, so expiry and file-check intervals are tested
// without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// rotatingSource is an invalidatable source that moves to its next token on
// Invalidate, like a credentials source after a refetch.
type rotatingSource struct {
	mu            sync.Mutex
	tokens        []string
	i             int
	invalidations int
	errAfter      error // returned instead of a token once invalidated
}

func (s *rotatingSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.invalidations > 0 && s.errAfter != nil {
		return nil, s.errAfter
	}
	return &oauth2.Token{AccessToken: s.tokens[s.i]}, nil
}

func (s *rotatingSource) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidations++
	if s.i < len(s.tokens)-1 {
		s.i++
	}
}

// hookRecorder collects RequestInfo from WithRequestHook.
type hookRecorder struct {
	mu    sync.Mutex
	infos []RequestInfo
}

func (h *hookRecorder) hook(i RequestInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.infos = append(h.infos, i)
}

func (h *hookRecorder) statuses() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s []int
	for _, i := range h.infos {
		s = append(s, i.StatusCode)
	}
	return s
}

// assertNoSecret fails if any 6-byte piece of secret appears in s: a partial
// token is still a leak.
func assertNoSecret(t testing.TB, what, s, secret string) {
	t.Helper()
	const piece = 6
	for i := 0; i+piece <= len(secret); i++ {
		if strings.Contains(s, secret[i:i+piece]) {
			t.Fatalf("%s leaks %q of the secret: %s", what, secret[i:i+piece], s)
		}
	}
}
