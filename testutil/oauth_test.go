package testutil_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/testutil"
)

func formBody(id, secret string) url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}, "scope": {"*"}}
}

func postToken(t *testing.T, f *testutil.FakeTallyfy, form url.Values, opts ...func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, f.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

type tokenAnswer struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

func issue(t *testing.T, f *testutil.FakeTallyfy, opts ...func(*http.Request)) tokenAnswer {
	t.Helper()
	status, body := postToken(t, f, formBody("id", "secret"), opts...)
	if status != 200 {
		t.Fatalf("token endpoint: %d %s", status, body)
	}
	var tok tokenAnswer
	if err := json.Unmarshal([]byte(body), &tok); err != nil {
		t.Fatalf("%s: %v", body, err)
	}
	return tok
}

// clock is a SetClock source that the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestTokenEndpointIssuesExpiresAndRevokes(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	f.SetClock(clk.Now)
	f.SetClient("id", "secret", time.Hour)
	f.SetToken("") // only issued tokens count here

	tok := issue(t, f)
	if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.ExpiresIn != 3600 {
		t.Fatalf("token answer %+v", tok)
	}
	if f.TokenRequests() != 1 {
		t.Fatalf("TokenRequests = %d, want 1", f.TokenRequests())
	}
	bearer := withHeader("Authorization", "Bearer "+tok.AccessToken)
	if got := call(t, f, http.MethodGet, runPath("o", "r"), bearer); got.status != 404 {
		t.Fatalf("issued token: %d, want 404 (authenticated, no such run)", got.status)
	}

	clk.Advance(time.Hour - time.Second)
	if got := call(t, f, http.MethodGet, runPath("o", "r"), bearer); got.status != 404 {
		t.Fatalf("token just before expiry: %d, want 404", got.status)
	}
	clk.Advance(time.Second)
	if got := call(t, f, http.MethodGet, runPath("o", "r"), bearer); got.status != 401 {
		t.Fatalf("expired token: %d, want 401", got.status)
	}

	tok2 := issue(t, f, func(r *http.Request) {
		// HTTP Basic client authentication, as golang.org/x/oauth2 may send it.
		r.Body = io.NopCloser(strings.NewReader("grant_type=client_credentials"))
		r.ContentLength = -1
		r.SetBasicAuth(url.QueryEscape("id"), url.QueryEscape("secret"))
	})
	if tok2.AccessToken == tok.AccessToken {
		t.Fatal("the same token was issued twice")
	}
	bearer2 := withHeader("Authorization", "Bearer "+tok2.AccessToken)
	if got := call(t, f, http.MethodGet, runPath("o", "r"), bearer2); got.status != 404 {
		t.Fatalf("second token: %d, want 404", got.status)
	}

	f.RevokeTokens()
	if got := call(t, f, http.MethodGet, runPath("o", "r"), bearer2); got.status != 401 {
		t.Fatalf("revoked token: %d, want 401", got.status)
	}
	tok3 := issue(t, f)
	if got := call(t, f, http.MethodGet, runPath("o", "r"), withHeader("Authorization", "Bearer "+tok3.AccessToken)); got.status != 404 {
		t.Fatalf("token issued after revoking: %d, want 404", got.status)
	}
	if f.TokenRequests() != 3 {
		t.Fatalf("TokenRequests = %d, want 3", f.TokenRequests())
	}
}

func TestTokenEndpointSubSecondTTL(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.SetClient("id", "secret", time.Millisecond)
	if tok := issue(t, f); tok.ExpiresIn != 1 {
		t.Fatalf("expires_in = %d, want 1 (rounded up)", tok.ExpiresIn)
	}
}

func TestTokenEndpointRejects(t *testing.T) {
	tests := []struct {
		name        string
		form        url.Values
		contentType string
		method      string
		wantStatus  int
		wantBody    string
	}{
		{"wrong secret", formBody("id", "nope"), "", "", 401, `{"error":"invalid_client"}`},
		{"unknown client", formBody("who", "secret"), "", "", 401, `{"error":"invalid_client"}`},
		{"no client", url.Values{"grant_type": {"client_credentials"}}, "", "", 401, `{"error":"invalid_client"}`},
		{"other grant", url.Values{"grant_type": {"password"}, "client_id": {"id"}, "client_secret": {"secret"}}, "", "", 400, `{"error":"unsupported_grant_type"}`},
		{"no grant", url.Values{"client_id": {"id"}, "client_secret": {"secret"}}, "", "", 400, `{"error":"invalid_request"}`},
		{"JSON instead of a form", formBody("id", "secret"), "application/json", "", 400, `{"error":"invalid_request"}`},
		{"GET", nil, "", http.MethodGet, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testutil.NewFakeTallyfy(t)
			f.SetClient("id", "secret", time.Hour)
			var opts []func(*http.Request)
			if tt.contentType != "" {
				opts = append(opts, withHeader("Content-Type", tt.contentType))
			}
			if tt.method != "" {
				opts = append(opts, func(r *http.Request) { r.Method = tt.method })
			}
			status, body := postToken(t, f, tt.form, opts...)
			if status != tt.wantStatus || tt.wantBody != "" && body != tt.wantBody {
				t.Fatalf("%d %s, want %d %s", status, body, tt.wantStatus, tt.wantBody)
			}
			if f.TokenRequests() != 0 {
				t.Fatalf("TokenRequests = %d, want 0", f.TokenRequests())
			}
		})
	}
}

func TestTokenEndpointScript(t *testing.T) {
	f := testutil.NewFakeTallyfy(t)
	f.SetClient("id", "secret", time.Hour)
	f.ScriptToken(testutil.Response{Status: 500})
	f.ScriptAll(testutil.Response{Status: 502}) // API requests only
	if status, _ := postToken(t, f, formBody("id", "secret")); status != 500 {
		t.Fatalf("scripted token answer: %d, want 500", status)
	}
	issue(t, f)
	if got := call(t, f, http.MethodGet, runPath("o", "r")); got.status != 502 {
		t.Fatalf("ScriptAll was used by the token endpoint: API answered %d", got.status)
	}
}
