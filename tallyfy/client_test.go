package tallyfy

import (
	"context"
	"errors"
	"fmt"
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

func TestNewRejectsBadOptions(t *testing.T) {
	tok := WithToken(testToken)
	tests := []struct {
		name    string
		baseURL string
		opts    []Option
		wantErr string
	}{
		{"not http", "ftp://example.com", []Option{tok}, "absolute http or https"},
		{"relative", "/api", []Option{tok}, "absolute http or https"},
		{"no host", "https:///api", []Option{tok}, "absolute http or https"},
		{"no scheme", "go.tallyfy.com/api", []Option{tok}, "absolute http or https"},
		{"user info", "https://u:p@example.com/api", []Option{tok}, "user information"},
		{"query", "https://example.com/api?x=1", []Option{tok}, "query or fragment"},
		{"fragment", "https://example.com/api#x", []Option{tok}, "query or fragment"},
		{"no credentials", "", nil, "no credentials"},
		{"empty token", "", []Option{WithToken("")}, "WithToken"},
		{"token with newline", "", []Option{WithToken("abc\ndef-secret")}, "WithToken"},
		{"two credentials", "", []Option{tok, WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "x"}))}, "already set"},
		{"nil source", "", []Option{WithTokenSource(nil)}, "nil"},
		{"nil http client", "", []Option{tok, WithHTTPClient(nil)}, "nil"},
		{"zero timeout", "", []Option{tok, WithTimeout(0)}, "not positive"},
		{"negative timeout", "", []Option{tok, WithTimeout(-time.Second)}, "not positive"},
		{"empty user agent", "", []Option{tok, WithUserAgent("")}, "WithUserAgent"},
		{"user agent with CR", "", []Option{tok, WithUserAgent("a\rb")}, "WithUserAgent"},
		{"nil hook", "", []Option{tok, WithRequestHook(nil)}, "nil"},
		{"nil option", "", []Option{tok, nil}, "nil Option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.baseURL, tt.opts...)
			if err == nil {
				t.Fatalf("New = %+v, want error containing %q", c, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
			assertNoSecret(t, "New error", err.Error(), "abc\ndef-secret")
		})
	}

	c, err := New("", tok)
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if c.prefix != DefaultBaseURL || c.timeout != defaultTimeout || c.ua != defaultUserAgent {
		t.Fatalf("defaults: prefix %q timeout %v ua %q", c.prefix, c.timeout, c.ua)
	}
	tr, ok := c.hc.Transport.(*http.Transport)
	if !ok || tr.MaxIdleConnsPerHost < 64 {
		t.Fatalf("default transport %#v: want MaxIdleConnsPerHost >= 64", c.hc.Transport)
	}
}

func TestHeadersAndPaths(t *testing.T) {
	type seen struct {
		method, path string
		header       http.Header
	}
	var mu sync.Mutex
	var got []seen
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.EscapedPath(), r.Header.Clone()})
		mu.Unlock()
		if r.Method == http.MethodGet {
			fmt.Fprint(w, `{"data":{"id":"run_1","status":"archived","archived_at":"2025-01-02T03:04:05Z"}}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})

	tests := []struct {
		name     string
		base     string
		wantBase string
	}{
		{"root", srv.URL, ""},
		{"root slash", srv.URL + "/", ""},
		{"api", srv.URL + "/api", "/api"},
		{"api slash", srv.URL + "/api/", "/api"},
		{"api slashes", srv.URL + "/api//", "/api"},
		{"escaped base", srv.URL + "/my%20api/v1", "/my%20api/v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			c := newClient(t, tt.base, WithToken(testToken), WithUserAgent("deleter-test/1.0"))
			if _, err := c.DeleteRun(context.Background(), "org-A_1", "RUN_b-2"); err != nil {
				t.Fatalf("DeleteRun: %v", err)
			}
			run, _, err := c.GetRun(context.Background(), "org-A_1", "RUN_b-2")
			if err != nil {
				t.Fatalf("GetRun: %v", err)
			}
			if run.ID != "run_1" || run.Status != "archived" || run.ArchivedAt == nil {
				t.Fatalf("GetRun = %+v", run)
			}
			if _, err := c.ArchiveRun(context.Background(), "org-A_1", "RUN_b-2"); err != nil {
				t.Fatalf("ArchiveRun: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			want := []seen{
				{http.MethodDelete, tt.wantBase + "/organizations/org-A_1/runs/RUN_b-2/delete", nil},
				{http.MethodGet, tt.wantBase + "/organizations/org-A_1/runs/RUN_b-2", nil},
				{http.MethodDelete, tt.wantBase + "/organizations/org-A_1/runs/RUN_b-2", nil},
			}
			if len(got) != len(want) {
				t.Fatalf("server saw %d requests, want %d", len(got), len(want))
			}
			for i, w := range want {
				if got[i].method != w.method || got[i].path != w.path {
					t.Errorf("request %d: %s %s, want %s %s", i, got[i].method, got[i].path, w.method, w.path)
				}
				h := got[i].header
				for k, v := range map[string]string{
					"Authorization":    "Bearer " + testToken,
					"Accept":           "application/json",
					"X-Tallyfy-Client": "APIClient",
					"User-Agent":       "deleter-test/1.0",
				} {
					if h.Get(k) != v {
						t.Errorf("request %d: %s = %q, want %q", i, k, h.Get(k), v)
					}
				}
			}
		})
	}
}

func TestDefaultUserAgent(t *testing.T) {
	ua := make(chan string, 1)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { ua <- r.UserAgent() })
	c := newClient(t, srv.URL, WithToken(testToken))
	if _, err := c.DeleteRun(context.Background(), "o", "r"); err != nil {
		t.Fatal(err)
	}
	if got := <-ua; got != "tallyfy-deleter" {
		t.Fatalf("User-Agent = %q", got)
	}
}

func TestGetRunNotArchived(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-9")
		fmt.Fprint(w, `{"data":{"id":"r1","status":"active","archived_at":null,"name":"x"}}`)
	})
	c := newClient(t, srv.URL, WithToken(testToken))
	run, resp, err := c.GetRun(context.Background(), "o", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if run.ArchivedAt != nil || run.Status != "active" || resp.RequestID != "req-9" || resp.StatusCode != 200 {
		t.Fatalf("run %+v resp %+v", run, resp)
	}
}

func TestGetRunBadBody(t *testing.T) {
	tests := []struct{ name, body string }{
		{"not json", "<html>oops</html>"},
		{"no data", `{"message":"ok"}`},
		{"null data", `{"data":null}`},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hooks hookRecorder
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, tt.body) })
			c := newClient(t, srv.URL, WithToken(testToken), WithRequestHook(hooks.hook))
			run, resp, err := c.GetRun(context.Background(), "o", "r")
			if err == nil || run != nil {
				t.Fatalf("GetRun = %+v, %v; want error", run, err)
			}
			if resp == nil || resp.StatusCode != 200 {
				t.Fatalf("resp = %+v", resp)
			}
			if len(hooks.infos) != 1 || hooks.infos[0].Err == nil {
				t.Fatalf("hook saw %+v, want one attempt with the decode error", hooks.infos)
			}
		})
	}
}

func TestStatusClassification(t *testing.T) {
	sentinels := []error{ErrNotFound, ErrNotArchived, ErrForbidden, ErrUnauthorized, ErrRateLimited}
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	long := strings.Repeat("x", 1000)

	tests := []struct {
		name        string
		status      int
		header      map[string]string
		body        string
		wantIs      error // nil: none of the sentinels
		wantMsg     string
		wantErrText string // whole Error(), when set
		wantRetry   [2]time.Duration
	}{
		{name: "200", status: 200},
		{name: "200 with body", status: 200, body: `{"data":{}}`},
		{name: "204", status: 204},
		{name: "202", status: 202},
		{
			name: "404 error true", status: 404, body: `{"error": true, "message": "Process not found"}`,
			wantIs: ErrNotFound, wantMsg: "Process not found",
		},
		{
			name: "422 message", status: 422, header: map[string]string{"X-Request-Id": "abc"},
			body:   `{"message": "Process isn't archived"}`,
			wantIs: ErrNotArchived, wantMsg: "Process isn't archived",
			wantErrText: "tallyfy: 422 Unprocessable Entity: Process isn't archived (request_id abc)",
		},
		{
			name: "403 nested", status: 403, body: `{"error": {"code": "forbidden", "message": "Admins only", "details": {"x": 1}}}`,
			wantIs: ErrForbidden, wantMsg: "forbidden: Admins only",
		},
		{
			name: "401 oauth", status: 401, body: `{"error":"invalid_client"}`,
			wantIs: ErrUnauthorized, wantMsg: "invalid_client",
		},
		{
			name: "401 no body", status: 401,
			wantIs: ErrUnauthorized, wantMsg: "Unauthorized", wantErrText: "tallyfy: 401 Unauthorized",
		},
		{
			name: "429 seconds", status: 429, header: map[string]string{"Retry-After": "7"},
			wantIs: ErrRateLimited, wantMsg: "Too Many Requests", wantRetry: [2]time.Duration{7 * time.Second, 7 * time.Second},
		},
		{
			name: "429 date", status: 429, header: map[string]string{"Retry-After": future},
			wantIs: ErrRateLimited, wantMsg: "Too Many Requests", wantRetry: [2]time.Duration{80 * time.Second, 91 * time.Second},
		},
		{name: "429 negative", status: 429, header: map[string]string{"Retry-After": "-5"}, wantIs: ErrRateLimited, wantMsg: "Too Many Requests"},
		{name: "429 garbage", status: 429, header: map[string]string{"Retry-After": "soon"}, wantIs: ErrRateLimited, wantMsg: "Too Many Requests"},
		{name: "429 past date", status: 429, header: map[string]string{"Retry-After": past}, wantIs: ErrRateLimited, wantMsg: "Too Many Requests"},
		{
			name: "400 text", status: 400, header: map[string]string{"Content-Type": "text/plain"},
			body: "bad\x00 request\r\n\n\t here\x1b[31m", wantMsg: "bad request here[31m",
		},
		{name: "409 invalid json", status: 409, body: `{"message":`, wantMsg: `{"message":`},
		{name: "409 other json", status: 409, body: `{"errors":{"id":["taken"]}}`, wantMsg: `{"errors":{"id":["taken"]}}`},
		{name: "400 message list", status: 400, body: `{"message":["a is required","b is required"]}`, wantMsg: "a is required; b is required"},
		{
			name: "500 html title", status: 500, header: map[string]string{"Content-Type": "text/html"},
			body:    "<html><head><title>500 Internal Server Error</title></head><body><h1>500</h1><hr>nginx</body></html>",
			wantMsg: "500 Internal Server Error",
		},
		{
			name: "502 html no title", status: 502,
			body:    "<html><body><h1>Bad\n gateway</h1><p>upstream</p></body></html>",
			wantMsg: "Bad gateway upstream",
		},
		{name: "500 long", status: 500, body: long, wantMsg: strings.Repeat("x", maxMessage) + "…"},
		{
			name: "503 empty", status: 503, header: map[string]string{"Retry-After": "120"},
			wantMsg: "Service Unavailable", wantErrText: "tallyfy: 503 Service Unavailable",
			wantRetry: [2]time.Duration{2 * time.Minute, 2 * time.Minute},
		},
		{
			name: "302", status: 302, header: map[string]string{"Location": "https://elsewhere.example/login?token=x"},
			wantMsg: "redirect to https://elsewhere.example/login not followed",
		},
		{name: "599 unknown", status: 599, wantErrText: "tallyfy: 599"},
		{name: "500 empty message", status: 500, body: `{"error": true, "message": ""}`, wantErrText: "tallyfy: 500 Internal Server Error"},
		{
			name: "301 with page", status: 301, header: map[string]string{"Location": "/elsewhere"},
			body: `<a href="/elsewhere">Moved Permanently</a>.`, wantMsg: "redirect to /elsewhere not followed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			c := newClient(t, srv.URL, WithToken(testToken))
			resp, err := c.DeleteRun(context.Background(), "org", "run")
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("resp = %+v, want status %d", resp, tt.status)
			}
			if tt.status >= 200 && tt.status <= 299 {
				if err != nil {
					t.Fatalf("DeleteRun: %v", err)
				}
				return
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *APIError", err, err)
			}
			if apiErr.StatusCode != tt.status {
				t.Errorf("StatusCode = %d", apiErr.StatusCode)
			}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tt.wantIs; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", s, got, want)
				}
			}
			if tt.wantMsg != "" && apiErr.Message != tt.wantMsg {
				t.Errorf("Message = %q, want %q", apiErr.Message, tt.wantMsg)
			}
			if tt.wantErrText != "" && err.Error() != tt.wantErrText {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.wantErrText)
			}
			if apiErr.RetryAfter < tt.wantRetry[0] || apiErr.RetryAfter > tt.wantRetry[1] {
				t.Errorf("RetryAfter = %v, want in %v", apiErr.RetryAfter, tt.wantRetry)
			}
			if id := tt.header["X-Request-Id"]; apiErr.RequestID != id || resp.RequestID != id {
				t.Errorf("RequestID = %q / %q, want %q", apiErr.RequestID, resp.RequestID, id)
			}
		})
	}
}

func TestAPIErrorIs(t *testing.T) {
	err := fmt.Errorf("job 7: %w", &APIError{StatusCode: 404, Message: "gone", RequestID: "x"})
	if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotArchived) {
		t.Fatal("Is must match on status code only")
	}
	if !errors.Is(err, &APIError{StatusCode: 404}) {
		t.Fatal("Is must match any *APIError with the same status")
	}
	if errors.Is(err, errors.New("tallyfy: 404 Not Found")) {
		t.Fatal("Is must not match on text")
	}
	var nilErr *APIError
	if nilErr.Is(ErrNotFound) {
		t.Fatal("nil *APIError matched")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"30", 30 * time.Second},
		{" 30 ", 30 * time.Second},
		{"-1", 0},
		{"1.5", 0},
		{"99999999999999999999", 0},
		{"9223372036854775807", 0},
		{"Sun, 01 Jun 2025 12:02:00 GMT", 2 * time.Minute},
		{"Sunday, 01-Jun-25 12:00:30 GMT", 30 * time.Second},
		{"Sun Jun  1 12:00:10 2025", 10 * time.Second},
		{"Sun, 01 Jun 2025 11:00:00 GMT", 0},
		{"tomorrow", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := ParseRetryAfter(tt.in, now); got != tt.want {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCheckResponse(t *testing.T) {
	req := httptest.NewRequest(http.MethodDelete, "https://example.com/x", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	tests := []struct {
		name    string
		status  int
		body    string
		wantNil bool
		wantMsg string
	}{
		{"ok", 200, "whatever", true, ""},
		{"no content", 204, "", true, ""},
		{"echo", 400, "you sent Bearer " + testToken, false, "you sent Bearer [REDACTED]"},
		{"json echo", 400, `{"message":"bad: ` + testToken + `"}`, false, "bad: [REDACTED]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &countingBody{ReadCloser: io.NopCloser(strings.NewReader(tt.body + strings.Repeat(" ", 10<<10))), n: new(atomic.Int64)}
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}, Body: body, Request: req}
			err := CheckResponse(resp)
			if tt.wantNil {
				if err != nil {
					t.Fatalf("CheckResponse = %v", err)
				}
				return
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.Message != tt.wantMsg {
				t.Fatalf("CheckResponse = %#v, want message %q", err, tt.wantMsg)
			}
			if n := body.n.Load(); n > maxErrorBody {
				t.Fatalf("read %d bytes, want at most %d", n, maxErrorBody)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var elsewhere counter
	other := newServer(t, elsewhere.wrap(func(w http.ResponseWriter, r *http.Request) {}))
	userClient := &http.Client{} // follows redirects by default
	tests := []struct {
		name   string
		status int
		opts   []Option
	}{
		{"302 default client", http.StatusFound, nil},
		{"307 default client", http.StatusTemporaryRedirect, nil},
		{"308 caller's client", http.StatusPermanentRedirect, []Option{WithHTTPClient(userClient)}},
		{"301 caller's client", http.StatusMovedPermanently, []Option{WithHTTPClient(userClient)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, other.URL+r.URL.Path, tt.status)
			})
			c := newClient(t, srv.URL, append([]Option{WithToken(testToken)}, tt.opts...)...)
			_, err := c.DeleteRun(context.Background(), "o", "r")
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status {
				t.Fatalf("err = %v, want *APIError with status %d", err, tt.status)
			}
			if !strings.Contains(apiErr.Message, "not followed") {
				t.Errorf("Message = %q", apiErr.Message)
			}
			if n := elsewhere.get(); n != 0 {
				t.Fatalf("redirect target saw %d requests", n)
			}
		})
	}
	if userClient.CheckRedirect != nil {
		t.Fatal("WithHTTPClient changed the caller's client")
	}
}

// writeUntilGone writes body bytes until n are written (n < 0: forever) or
// the client goes away.
func writeUntilGone(status int, contentType, prefix string, n int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, prefix)
		chunk := []byte(strings.Repeat("a", 32<<10))
		rc := http.NewResponseController(w)
		for written := int64(0); n < 0 || written < n; written += int64(len(chunk)) {
			if r.Context().Err() != nil {
				return
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
			rc.Flush()
		}
	}
}

func TestBoundedBodies(t *testing.T) {
	const hundredMB = 100 << 20
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		get      bool
		wantErr  bool
		maxBytes int64
	}{
		{"200 100MB", writeUntilGone(200, "application/json", "", hundredMB), false, false, maxDrain},
		{"200 endless", writeUntilGone(200, "application/json", "", -1), false, false, maxDrain},
		{"500 100MB", writeUntilGone(500, "text/plain", "", hundredMB), false, true, maxErrorBody},
		{"500 endless", writeUntilGone(500, "text/html", "<html>", -1), false, true, maxErrorBody},
		{"404 endless json", writeUntilGone(404, "application/json", `{"message":"`, -1), false, true, maxErrorBody},
		{"GET 200 endless json", writeUntilGone(200, "application/json", `{"data":{"id":"`, -1), true, true, maxDecode + maxDrain},
		{"GET 200 100MB garbage", writeUntilGone(200, "application/json", "", hundredMB), true, true, maxDecode + maxDrain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.handler)
			ct := newCountingTransport(t)
			// The timeout is long: returning quickly must come from bounded
			// reading, not from the deadline.
			c := newClient(t, srv.URL, WithToken(testToken), WithHTTPClient(&http.Client{Transport: ct}), WithTimeout(time.Minute))
			start := time.Now()
			var err error
			if tt.get {
				_, _, err = c.GetRun(context.Background(), "o", "r")
			} else {
				_, err = c.DeleteRun(context.Background(), "o", "r")
			}
			elapsed := time.Since(start)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil && len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			if n := ct.read.Load(); n > tt.maxBytes {
				t.Errorf("client read %d body bytes, want at most %d", n, tt.maxBytes)
			}
			if elapsed > 10*time.Second {
				t.Errorf("took %v", elapsed)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	// Each handler holds its answer back until the client gives up (or the
	// test ends, so Close never waits on it).
	stall := func(status int, prefix string) func(done chan struct{}) http.HandlerFunc {
		return func(done chan struct{}) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				if status != 0 {
					w.WriteHeader(status)
					io.WriteString(w, prefix)
					http.NewResponseController(w).Flush()
				}
				select {
				case <-r.Context().Done():
				case <-done:
				}
			}
		}
	}
	tests := []struct {
		name       string
		handler    func(done chan struct{}) http.HandlerFunc
		get        bool
		wantStatus int // 0: the deadline is the error
	}{
		{"no answer", stall(0, ""), false, 0},
		{"200 body stalls", stall(200, `{"data":{"id":"`), true, 0},
		{"500 body stalls", stall(500, `{"message":"`), false, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan struct{})
			srv := newServer(t, tt.handler(done))
			t.Cleanup(func() { close(done) }) // runs before srv.Close
			var hooks hookRecorder
			const timeout = 200 * time.Millisecond
			c := newClient(t, srv.URL, WithToken(testToken), WithTimeout(timeout), WithRequestHook(hooks.hook))
			start := time.Now()
			var err error
			if tt.get {
				_, _, err = c.GetRun(context.Background(), "o", "r")
			} else {
				_, err = c.DeleteRun(context.Background(), "o", "r")
			}
			elapsed := time.Since(start)
			if elapsed < timeout || elapsed > timeout+5*time.Second {
				t.Errorf("returned after %v, want about %v", elapsed, timeout)
			}
			if tt.wantStatus != 0 {
				// The status arrived; the cut-off body just has no message.
				var apiErr *APIError
				if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.wantStatus {
					t.Fatalf("err = %v, want a %d *APIError", err, tt.wantStatus)
				}
			} else if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want context.DeadlineExceeded", err)
			}
			if len(hooks.infos) != 1 || hooks.infos[0].Err == nil || hooks.infos[0].Method == "" {
				t.Fatalf("hook saw %+v", hooks.infos)
			}
			if tt.name == "no answer" && hooks.infos[0].StatusCode != 0 {
				t.Fatalf("hook StatusCode = %d, want 0", hooks.infos[0].StatusCode)
			}
		})
	}
}

func TestCallerContext(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c := newClient(t, srv.URL, WithToken(testToken))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.DeleteRun(ctx, "o", "r")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestInvalidIDs(t *testing.T) {
	var hits counter
	srv := newServer(t, hits.wrap(func(w http.ResponseWriter, r *http.Request) {}))
	c := newClient(t, srv.URL, WithToken(testToken))
	bad := []string{"", "a/b", "..", ".", "%2F", "a b", "a\x00b", "ünï", "é", "a?b", "a#b", "a.b", "a\nb", strings.Repeat("a", 65)}
	for _, id := range bad {
		for _, which := range []string{"org", "run"} {
			t.Run(fmt.Sprintf("%s %q", which, id), func(t *testing.T) {
				org, run := "org", "run"
				if which == "org" {
					org = id
				} else {
					run = id
				}
				_, err := c.DeleteRun(context.Background(), org, run)
				if !errors.Is(err, ErrInvalidID) || !strings.Contains(err.Error(), which+" ID") {
					t.Fatalf("DeleteRun: err = %v, want ErrInvalidID naming the %s ID", err, which)
				}
				_, _, err = c.GetRun(context.Background(), org, run)
				if !errors.Is(err, ErrInvalidID) {
					t.Fatalf("GetRun: err = %v, want ErrInvalidID", err)
				}
			})
		}
	}
	if n := hits.get(); n != 0 {
		t.Fatalf("server saw %d requests", n)
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"a", true},
		{"0123456789abcdefABCDEF0123456789", true},
		{"a-b_c", true},
		{strings.Repeat("z", 64), true},
		{strings.Repeat("z", 65), false},
		{"", false},
		{"a/b", false},
		{"..", false},
		{"%2F", false},
		{"a b", false},
		{"a\x00", false},
		{"\xff", false},
		{"ü", false},
		{"a+b", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestInvalidIDErrorIsShort(t *testing.T) {
	c := newClient(t, "", WithToken(testToken))
	_, err := c.DeleteRun(context.Background(), "o", strings.Repeat("\x01", 10000))
	if !errors.Is(err, ErrInvalidID) || len(err.Error()) > 600 {
		t.Fatalf("err = %v (%d bytes)", err, len(err.Error()))
	}
}

func TestUnauthorizedRetry(t *testing.T) {
	tests := []struct {
		name         string
		cred         func() Option
		accept       string // the token the server accepts; "" accepts none
		wantErr      error
		wantStatuses []int
	}{
		{
			name:         "invalidatable source gets one retry",
			cred:         func() Option { return WithTokenSource(&rotatingSource{tokens: []string{"old-token", "new-token"}}) },
			accept:       "new-token",
			wantStatuses: []int{401, 204},
		},
		{
			name: "second 401 is final",
			cred: func() Option {
				return WithTokenSource(&rotatingSource{tokens: []string{"old-token", "new-token", "newer"}})
			},
			wantErr:      ErrUnauthorized,
			wantStatuses: []int{401, 401},
		},
		{
			name:         "static token is not retried",
			cred:         func() Option { return WithToken("old-token") },
			accept:       "new-token",
			wantErr:      ErrUnauthorized,
			wantStatuses: []int{401},
		},
		{
			name:         "same token after invalidation is not retried",
			cred:         func() Option { return WithTokenSource(&rotatingSource{tokens: []string{"old-token"}}) },
			accept:       "new-token",
			wantErr:      ErrUnauthorized,
			wantStatuses: []int{401},
		},
		{
			name: "refetch fails",
			cred: func() Option {
				return WithTokenSource(&rotatingSource{tokens: []string{"old-token"}, errAfter: errors.New("endpoint down")})
			},
			wantErr:      ErrToken,
			wantStatuses: []int{401},
		},
		{
			name: "non-invalidatable source is not retried",
			cred: func() Option {
				return WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "old-token"}))
			},
			wantErr:      ErrUnauthorized,
			wantStatuses: []int{401},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.accept == "" || r.Header.Get("Authorization") != "Bearer "+tt.accept {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.WriteHeader(http.StatusNoContent)
			})
			var hooks hookRecorder
			c := newClient(t, srv.URL, tt.cred(), WithRequestHook(hooks.hook))
			_, err := c.DeleteRun(context.Background(), "o", "r")
			if tt.wantErr == nil && err != nil || !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v: the API's 401 must stay visible", err)
			}
			if got := hooks.statuses(); fmt.Sprint(got) != fmt.Sprint(tt.wantStatuses) {
				t.Fatalf("attempts answered %v, want %v", got, tt.wantStatuses)
			}
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	var hits counter
	srv := newServer(t, hits.wrap(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/delete") {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, `{"message":"Process isn't archived"}`)
	}))
	var hooks hookRecorder
	c := newClient(t, srv.URL, WithToken(testToken), WithRequestHook(hooks.hook))
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 50 {
		wg.Go(func() {
			if _, err := c.DeleteRun(context.Background(), "o", fmt.Sprint("r", i)); err != nil {
				errs <- err
			}
			if _, _, err := c.GetRun(context.Background(), "o", fmt.Sprint("r", i)); !errors.Is(err, ErrNotArchived) {
				errs <- fmt.Errorf("GetRun: %v", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if hits.get() != 100 || len(hooks.statuses()) != 100 {
		t.Fatalf("server saw %d, hook %d; want 100 each", hits.get(), len(hooks.statuses()))
	}
}

// TestCheckBaseURL: it takes exactly what New takes.
func TestCheckBaseURL(t *testing.T) {
	for _, u := range []string{"", "https://go.tallyfy.com/api", "http://127.0.0.1:8080/api/", "ftp://x", "https://user:pw@x/api", "https://x/api?q=1", "/api", "https://x/a#f"} {
		_, newErr := New(u, WithToken("t"))
		if err := CheckBaseURL(u); (err == nil) != (newErr == nil) {
			t.Errorf("CheckBaseURL(%q) = %v, but New says %v", u, err, newErr)
		}
	}
}
