package testutil_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

type answer struct {
	status int
	body   string
	header http.Header
}

// call sends one request to the fake's API the way a well-behaved client
// does, unless the options say otherwise.
func call(t *testing.T, f *testutil.FakeTallyfy, method, path string, opts ...func(*http.Request)) answer {
	t.Helper()
	a, err := send(t.Context(), f, method, path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// send is call for goroutines other than the test's, which must not call
// t.Fatal.
func send(ctx context.Context, f *testutil.FakeTallyfy, method, path string, opts ...func(*http.Request)) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, f.URL()+path, nil)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+f.Token())
	req.Header.Set("X-Tallyfy-Client", "APIClient")
	req.Header.Set("Accept", "application/json")
	for _, o := range opts {
		o(req)
	}
	resp, err := noRedirects().Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	return answer{resp.StatusCode, string(b), resp.Header}, nil
}

func noRedirects() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func withHeader(k, v string) func(*http.Request) {
	return func(r *http.Request) {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
}

func runPath(org, run string) string { return "/organizations/" + org + "/runs/" + run }

func TestFakeTallyfyAnswers(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(f *testutil.FakeTallyfy)
		method     string
		path       string
		opts       []func(*http.Request)
		wantStatus int
		wantBody   string // substring; exact when wantExact
		wantExact  bool
		after      func(t *testing.T, f *testutil.FakeTallyfy)
	}{
		{
			name:   "permanent delete of an archived run",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", true) },
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 200, wantBody: "", wantExact: true,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if !f.Deleted("o", "r") || f.RunExists("o", "r") || f.DeletedCount() != 1 {
					t.Error("run not deleted")
				}
			},
		},
		{
			name:   "permanent delete of an active run",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", false) },
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 422, wantBody: `{"error":true,"message":"Process isn't archived yet - archive it first"}`, wantExact: true,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if f.Deleted("o", "r") || !f.RunExists("o", "r") {
					t.Error("active run was deleted")
				}
			},
		},
		{
			name:   "permanent delete of an unknown run",
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 404, wantBody: `{"message":"Process not found"}`, wantExact: true,
		},
		{
			name:   "permanent delete of a deleted run",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", true) },
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 200,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if got := call(t, f, http.MethodDelete, runPath("o", "r")+"/delete"); got.status != 404 {
					t.Errorf("second delete answered %d, want 404", got.status)
				}
				if got := f.DeleteCount("o", "r"); got != 2 {
					t.Errorf("DeleteCount = %d, want 2", got)
				}
			},
		},
		{
			name: "permanent delete in an org where the user is not admin",
			setup: func(f *testutil.FakeTallyfy) {
				f.AddRun("o", "r", true)
				f.SetAdmin("o", false)
			},
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 403, wantBody: `"error":true`,
		},
		{
			name: "admin again after SetAdmin true",
			setup: func(f *testutil.FakeTallyfy) {
				f.AddRun("o", "r", true)
				f.SetAdmin("o", false)
				f.SetAdmin("o", true)
			},
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 200,
		},
		{
			name: "permanent delete of a denied run",
			setup: func(f *testutil.FakeTallyfy) {
				f.AddRun("o", "r", true)
				f.DenyRun("o", "r")
			},
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			wantStatus: 403,
		},
		{
			name:   "get an archived run",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", true) },
			method: http.MethodGet, path: runPath("o", "r"),
			wantStatus: 200, wantBody: `{"data":{"id":"r","status":"archived","archived_at":"`,
		},
		{
			name:   "get an active run",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", false) },
			method: http.MethodGet, path: runPath("o", "r"),
			wantStatus: 200, wantBody: `{"data":{"id":"r","status":"active","archived_at":null}}`, wantExact: true,
		},
		{
			name:   "get an unknown run",
			method: http.MethodGet, path: runPath("o", "r"),
			wantStatus: 404, wantBody: "Process not found",
		},
		{
			name:   "archive",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", false) },
			method: http.MethodDelete, path: runPath("o", "r"),
			wantStatus: 200, wantBody: `"status":"archived"`,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if !f.Archived("o", "r") {
					t.Error("run not archived")
				}
			},
		},
		{
			name:   "activate",
			setup:  func(f *testutil.FakeTallyfy) { f.ArchiveRun("o", "r") },
			method: http.MethodPut, path: runPath("o", "r") + "/activate",
			wantStatus: 200, wantBody: `"archived_at":null`,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if f.Archived("o", "r") || !f.RunExists("o", "r") {
					t.Error("run not active")
				}
			},
		},
		{
			name:   "IDs are single, unescaped segments",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "a/b c", true) },
			method: http.MethodDelete, path: runPath("o", "a%2Fb%20c") + "/delete",
			wantStatus: 200,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if !f.Deleted("o", "a/b c") {
					t.Error("run not deleted")
				}
				if got := f.Requests()[0].Path; got != "/api/organizations/o/runs/a%2Fb%20c/delete" {
					t.Errorf("recorded path %q, want it as sent", got)
				}
			},
		},
		{
			name:   "no token",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", true) },
			method: http.MethodDelete, path: runPath("o", "r") + "/delete",
			opts:       []func(*http.Request){withHeader("Authorization", "")},
			wantStatus: 401, wantBody: `{"error":true,"message":"Unauthenticated."}`, wantExact: true,
			after: func(t *testing.T, f *testutil.FakeTallyfy) {
				if f.Deleted("o", "r") {
					t.Error("deleted without a token")
				}
			},
		},
		{
			name:   "wrong token",
			method: http.MethodGet, path: runPath("o", "r"),
			opts:       []func(*http.Request){withHeader("Authorization", "Bearer nope")},
			wantStatus: 401,
		},
		{
			name:   "no X-Tallyfy-Client",
			method: http.MethodGet, path: runPath("o", "r"),
			opts:       []func(*http.Request){withHeader("X-Tallyfy-Client", "")},
			wantStatus: 401,
		},
		{
			name:   "wrong method",
			setup:  func(f *testutil.FakeTallyfy) { f.AddRun("o", "r", true) },
			method: http.MethodPost, path: runPath("o", "r") + "/delete",
			wantStatus: 404, wantBody: "Not Found",
		},
		{
			name:   "unknown path",
			method: http.MethodGet, path: "/organizations/o/things",
			wantStatus: 404, wantBody: "Not Found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testutil.NewFakeTallyfy(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			got := call(t, f, tt.method, tt.path, tt.opts...)
			if got.status != tt.wantStatus {
				t.Fatalf("status %d (%s), want %d", got.status, got.body, tt.wantStatus)
			}
			if tt.wantExact && got.body != tt.wantBody || !strings.Contains(got.body, tt.wantBody) {
				t.Errorf("body %q, want %q", got.body, tt.wantBody)
			}
			if got.header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
			if got.body != "" && got.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", got.header.Get("Content-Type"))
			}
			if tt.after != nil {
				tt.after(t, f)
			}
		})
	}
}

func TestFakeTallyfyRootIsNotTheAPI(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.AddRun("o", "r", true)
	// A client that drops the base URL's path must not find the API.
	resp, err := http.Get(strings.TrimSuffix(f.URL(), "/api") + runPath("o", "r"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("status %d, want 404", resp.StatusCode)
	}
}

func TestFakeTallyfyRequestIDsDiffer(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	a := call(t, f, http.MethodGet, runPath("o", "r"))
	b := call(t, f, http.MethodGet, runPath("o", "r"))
	if a.header.Get("X-Request-Id") == b.header.Get("X-Request-Id") {
		t.Fatalf("two answers share X-Request-Id %q", a.header.Get("X-Request-Id"))
	}
}

func TestFakeTallyfySetToken(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	old := f.Token()
	if !strings.HasPrefix(old, "test-token-") {
		t.Fatalf("Token = %q", old)
	}
	f.SetToken("new")
	if got := call(t, f, http.MethodGet, runPath("o", "r"), withHeader("Authorization", "Bearer "+old)); got.status != 401 {
		t.Fatalf("old token answered %d, want 401", got.status)
	}
	if got := call(t, f, http.MethodGet, runPath("o", "r")); got.status != 404 {
		t.Fatalf("new token answered %d, want 404 (authenticated, no such run)", got.status)
	}
	f.SetToken("")
	if got := call(t, f, http.MethodGet, runPath("o", "r"), withHeader("Authorization", "Bearer ")); got.status != 401 {
		t.Fatalf("empty token answered %d, want 401", got.status)
	}
}

func TestFakeTallyfyScripts(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.AddRun("o", "r", true)
	f.AddRun("o", "other", true)
	f.Script("o", "r",
		testutil.Response{Status: 503},
		testutil.Response{Status: 429, RetryAfter: "7", Body: `{"message":"slow down"}`},
	)
	f.ScriptAll(testutil.Response{Status: 502, Header: http.Header{"X-Request-Id": {"from-script"}}})

	del := func(run string, opts ...func(*http.Request)) answer {
		return call(t, f, http.MethodDelete, runPath("o", run)+"/delete", opts...)
	}
	// Scripts stand in front of the API: they answer even without a token.
	if got := del("r", withHeader("Authorization", "")); got.status != 503 {
		t.Fatalf("1st: %d, want 503", got.status)
	}
	got := del("r")
	if got.status != 429 || got.header.Get("Retry-After") != "7" || got.body != `{"message":"slow down"}` {
		t.Fatalf("2nd: %d Retry-After %q body %q", got.status, got.header.Get("Retry-After"), got.body)
	}
	// The run's own script is used up; ScriptAll's is next.
	if got := del("r"); got.status != 502 || got.header.Get("X-Request-Id") != "from-script" {
		t.Fatalf("3rd: %d, X-Request-Id %q; want 502 from ScriptAll", got.status, got.header.Get("X-Request-Id"))
	}
	if got := del("r"); got.status != 200 || !f.Deleted("o", "r") {
		t.Fatalf("4th: %d, want the normal 200", got.status)
	}
	if got := del("other"); got.status != 200 {
		t.Fatalf("other run: %d, want 200", got.status)
	}
	if got := f.DeleteCount("o", "r"); got != 4 {
		t.Fatalf("DeleteCount = %d, want 4 (scripted answers count)", got)
	}
	if got := f.DeleteRequestCount(); got != 5 {
		t.Fatalf("DeleteRequestCount = %d, want 5", got)
	}
}

func TestFakeTallyfyOutage(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.AddRun("o", "r", true)
	f.SetClient("id", "secret", time.Hour)
	f.Script("o", "r", testutil.Response{Status: 500})
	f.SetOutage(testutil.Response{Status: 503, RetryAfter: "3"})

	for range 3 {
		got := call(t, f, http.MethodDelete, runPath("o", "r")+"/delete")
		if got.status != 503 || got.header.Get("Retry-After") != "3" {
			t.Fatalf("during outage: %d, Retry-After %q", got.status, got.header.Get("Retry-After"))
		}
	}
	if status, _ := postToken(t, f, formBody("id", "secret")); status != 503 {
		t.Fatalf("token endpoint during outage: %d, want 503", status)
	}
	f.EndOutage()
	// The script waited for the outage to end.
	if got := call(t, f, http.MethodDelete, runPath("o", "r")+"/delete"); got.status != 500 {
		t.Fatalf("after outage: %d, want the scripted 500", got.status)
	}
	if got := call(t, f, http.MethodDelete, runPath("o", "r")+"/delete"); got.status != 200 {
		t.Fatalf("after outage and script: %d, want 200", got.status)
	}
}

func TestFakeTallyfyRedirect(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.ScriptAll(
		testutil.Response{RedirectTo: "https://elsewhere.example/steal"},
		testutil.Response{Status: http.StatusTemporaryRedirect, RedirectTo: "/api/x"},
	)
	got := call(t, f, http.MethodDelete, runPath("o", "r")+"/delete")
	if got.status != http.StatusFound || got.header.Get("Location") != "https://elsewhere.example/steal" {
		t.Fatalf("%d Location %q", got.status, got.header.Get("Location"))
	}
	got = call(t, f, http.MethodDelete, runPath("o", "r")+"/delete")
	if got.status != http.StatusTemporaryRedirect || got.header.Get("Location") != "/api/x" {
		t.Fatalf("%d Location %q", got.status, got.header.Get("Location"))
	}
}

func TestFakeTallyfyHugeBody(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	const size = 100 << 20
	f.ScriptAll(testutil.Response{Status: 500, BodySize: size})

	resp, err := noRedirects().Get(f.URL() + runPath("o", "r"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 500 || resp.ContentLength != size || len(b) != 4<<10 {
		t.Fatalf("status %d, Content-Length %d, read %d", resp.StatusCode, resp.ContentLength, len(b))
	}
}

func TestFakeTallyfyEndlessBody(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.ScriptAll(testutil.Response{Status: 500, Endless: true})

	client := &http.Client{Timeout: 300 * time.Millisecond}
	resp, err := client.Get(f.URL() + runPath("o", "r"))
	if err != nil {
		t.Fatalf("the answer's headers should arrive: %v", err)
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("reading the endless body: %v, want a timeout", err)
	}
}

func TestFakeTallyfyLatencyHonoursCancellation(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.AddRun("o", "r", true)
	f.SetLatency(time.Hour)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, f.URL()+runPath("o", "r")+"/delete", nil)
		req.Header.Set("Authorization", "Bearer "+f.Token())
		req.Header.Set("X-Tallyfy-Client", "APIClient")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()

	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	if err := f.WaitRequests(wctx, 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("request ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client still waiting after cancelling")
	}
	if f.Deleted("o", "r") {
		t.Fatal("an abandoned request deleted the run")
	}
	if r := f.Requests(); len(r) != 1 || r[0].Status != 0 {
		t.Fatalf("requests %+v, want one with no answer", r)
	}
}

func TestFakeTallyfyLatencyDelays(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.SetLatency(20 * time.Millisecond)
	f.ScriptAll(testutil.Response{Status: 503, Delay: 30 * time.Millisecond})
	start := time.Now()
	call(t, f, http.MethodGet, runPath("o", "r"))
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("answered after %s, want at least latency+delay = 50ms", d)
	}
}

func TestFakeTallyfyCloseCutsOffWaitingRequests(t *testing.T) {
	f := testutil.StartFakeTallyfy()
	t.Cleanup(f.Close) // in case the test fails before it closes f itself
	f.SetLatency(time.Hour)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(f.URL() + runPath("o", "r"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	ctx := ctxTimeout(t, 10*time.Second)
	if err := f.WaitRequests(ctx, 1); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		f.Close()
		f.Close()
		close(closed)
	}()
	for _, c := range []chan struct{}{closed, done} {
		select {
		case <-c:
		case <-ctx.Done():
			t.Fatal("Close is waiting for a request held by latency")
		}
	}
}

func TestFakeTallyfyRecording(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.AddRun("o", "r1", true)
	f.AddRun("o", "r2", false)
	start := time.Now()
	call(t, f, http.MethodDelete, runPath("o", "r1")+"/delete")
	call(t, f, http.MethodDelete, runPath("o", "r2")+"/delete", withHeader("X-Extra", "1"))

	reqs := f.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests recorded, want 2", len(reqs))
	}
	want := []struct {
		path   string
		status int
	}{
		{"/api/organizations/o/runs/r1/delete", 200},
		{"/api/organizations/o/runs/r2/delete", 422},
	}
	for i, w := range want {
		r := reqs[i]
		if r.Method != http.MethodDelete || r.Path != w.path || r.Status != w.status {
			t.Errorf("request %d = %s %s %d, want DELETE %s %d", i, r.Method, r.Path, r.Status, w.path, w.status)
		}
		if r.Header.Get("Authorization") != "Bearer "+f.Token() || r.Header.Get("X-Tallyfy-Client") != "APIClient" {
			t.Errorf("request %d headers %v", i, r.Header)
		}
		if r.At.Before(start) {
			t.Errorf("request %d At %v is before the test started", i, r.At)
		}
	}
	if reqs[1].At.Before(reqs[0].At) || reqs[1].Header.Get("X-Extra") != "1" {
		t.Errorf("second request %+v", reqs[1])
	}
	// Requests hands out copies.
	reqs[0].Header.Set("Authorization", "changed")
	if f.Requests()[0].Header.Get("Authorization") == "changed" {
		t.Error("Requests shares its headers with the caller")
	}

	f.RecordRequests(false)
	call(t, f, http.MethodDelete, runPath("o", "r1")+"/delete")
	if got := len(f.Requests()); got != 2 {
		t.Errorf("%d requests recorded with recording off, want still 2", got)
	}
	if got := f.RequestCount(); got != 3 {
		t.Errorf("RequestCount = %d, want 3", got)
	}
	if got := f.DeleteCount("o", "r1"); got != 2 {
		t.Errorf("DeleteCount = %d, want 2", got)
	}
}

func TestFakeTallyfyWaitRequestsTimesOut(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := f.WaitRequests(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRequests = %v, want DeadlineExceeded", err)
	}
	if err := f.WaitRequests(t.Context(), 0); err != nil {
		t.Fatalf("WaitRequests(0) = %v", err)
	}
}

// The fake is shared by a worker's concurrent deletes; -race checks it.
func TestFakeTallyfyConcurrentDeletes(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	runs := make([]string, 100_000)
	for i := range runs {
		runs[i] = fmt.Sprintf("run%06d", i)
	}
	f.AddRuns("o", runs, true)

	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				run := runs[w*each+i]
				got, err := send(t.Context(), f, http.MethodDelete, runPath("o", run)+"/delete")
				if err != nil || got.status != 200 {
					t.Errorf("%s: %d %v", run, got.status, err)
				}
			}
		})
	}
	wg.Wait()
	if got := f.DeletedCount(); got != workers*each {
		t.Fatalf("DeletedCount = %d, want %d", got, workers*each)
	}
	// Adding a deleted run again brings it back.
	f.AddRun("o", runs[0], true)
	if got := f.DeletedCount(); got != workers*each-1 || !f.RunExists("o", runs[0]) {
		t.Fatalf("after re-adding: DeletedCount %d, exists %v", got, f.RunExists("o", runs[0]))
	}
}

func TestFakeTallyfyRunJSONDecodes(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.SetClock(func() time.Time { return at })
	f.AddRun("o", "r", true)
	var v struct {
		Data struct {
			ID         string     `json:"id"`
			Status     string     `json:"status"`
			ArchivedAt *time.Time `json:"archived_at"`
		} `json:"data"`
	}
	got := call(t, f, http.MethodGet, runPath("o", "r"))
	if err := json.Unmarshal([]byte(got.body), &v); err != nil {
		t.Fatalf("%s: %v", got.body, err)
	}
	if v.Data.ID != "r" || v.Data.Status != "archived" || v.Data.ArchivedAt == nil || !v.Data.ArchivedAt.Equal(at) {
		t.Fatalf("%+v", v.Data)
	}
}
