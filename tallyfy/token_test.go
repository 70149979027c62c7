package tallyfy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFileTokenSource(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeFile(t, path, "  tok-1\n")
	clk := newFakeClock()
	f := FileTokenSource(path)
	f.w.now = clk.Now

	// Steps run in order: each is what an operator (or kubelet) does next.
	steps := []struct {
		name    string
		do      func(t *testing.T)
		want    string
		wantErr string
	}{
		{"first read trims whitespace", nil, "tok-1", ""},
		{"a rewrite is not looked for within a second", func(*testing.T) { writeFile(t, path, "tok-two") }, "tok-1", ""},
		{"a second later it is picked up", func(*testing.T) { clk.Advance(1100 * time.Millisecond) }, "tok-two", ""},
		{"atomic swap with same size and mtime", func(t *testing.T) {
			old, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(dir, "token.new")
			writeFile(t, tmp, "tok-333")
			if err := os.Chtimes(tmp, old.ModTime(), old.ModTime()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			clk.Advance(2 * time.Second)
		}, "tok-333", ""},
		{"Invalidate reads at once", func(*testing.T) { writeFile(t, path, "tok-four"); f.Invalidate() }, "tok-four", ""},
		{"empty file", func(*testing.T) { writeFile(t, path, " \n\t"); f.Invalidate() }, "", "empty"},
		{"recovers once written", func(*testing.T) { writeFile(t, path, "tok-5") }, "tok-5", ""},
		{"header-breaking bytes", func(*testing.T) { writeFile(t, path, "tok\r\nX-Evil: 1"); f.Invalidate() }, "", "cannot go in a header"},
		{"too large", func(*testing.T) { writeFile(t, path, strings.Repeat("a", maxSecretFile+1)); f.Invalidate() }, "", "larger than"},
		{"a directory", func(t *testing.T) {
			os.Remove(path)
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
			clk.Advance(2 * time.Second)
		}, "", "is a directory"},
		{"missing file", func(*testing.T) { os.Remove(path); clk.Advance(2 * time.Second) }, "", "no such file"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do(t)
			}
			tok, err := f.Token()
			if st.wantErr != "" {
				if !errors.Is(err, ErrToken) || !strings.Contains(err.Error(), st.wantErr) {
					t.Fatalf("Token() = %v, %v; want ErrToken containing %q", tok, err, st.wantErr)
				}
				// A local fault, not Tallyfy's: callers must be able to tell.
				if !errors.Is(err, ErrCredentialsUnreadable) {
					t.Fatalf("Token() error %v does not match ErrCredentialsUnreadable", err)
				}
				assertNoSecret(t, "error", err.Error(), "X-Evil")
				return
			}
			if err != nil || tok.AccessToken != st.want || tok.Type() != "Bearer" {
				t.Fatalf("Token() = %+v, %v; want %q", tok, err, st.want)
			}
		})
	}
}

func TestFileTokenSourceRotationThroughClient(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, "tok-old")
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-new" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	var hooks hookRecorder
	c := newClient(t, srv.URL, WithTokenSource(FileTokenSource(path)), WithRequestHook(hooks.hook))

	// The file still holds the refused token: re-reading it cannot help, so
	// there is no second request.
	if _, err := c.DeleteRun(context.Background(), "o", "r"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	if got := fmt.Sprint(hooks.statuses()); got != "[401]" {
		t.Fatalf("attempts %s, want [401]", got)
	}

	// Rotated, but within the check interval: the 401 makes the source look.
	writeFile(t, path, "tok-new\n")
	if _, err := c.DeleteRun(context.Background(), "o", "r"); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if got := fmt.Sprint(hooks.statuses()); got != "[401 401 200]" {
		t.Fatalf("attempts %s, want [401 401 200]", got)
	}
}

// tokenEndpoint is a fake OAuth token endpoint that records what it was sent.
type tokenEndpoint struct {
	mu      sync.Mutex
	forms   []url.Values
	headers []http.Header
	methods []string
	issued  int
	// expiresIn is sent when positive.
	expiresIn int
	// fail, when set, answers instead of issuing a token.
	fail func(w http.ResponseWriter, form url.Values)
}

func newTokenEndpoint(t testing.TB) (*tokenEndpoint, *httptest.Server) {
	e := &tokenEndpoint{expiresIn: 3600}
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		e.mu.Lock()
		e.forms = append(e.forms, r.PostForm)
		e.headers = append(e.headers, r.Header.Clone())
		e.methods = append(e.methods, r.Method)
		fail := e.fail
		var body string
		if fail == nil {
			e.issued++
			body = fmt.Sprintf(`{"access_token":"at-%d","token_type":"Bearer"`, e.issued)
			if e.expiresIn > 0 {
				body += fmt.Sprintf(`,"expires_in":%d`, e.expiresIn)
			}
			body += "}"
		}
		e.mu.Unlock()
		if fail != nil {
			fail(w, r.PostForm)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	})
	return e, srv
}

func (e *tokenEndpoint) calls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.forms)
}

func (e *tokenEndpoint) lastForm() url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.forms[len(e.forms)-1]
}

const clientSecret = "cl1ent/S3cret+val=ue&x"

func TestClientCredentials(t *testing.T) {
	ep, srv := newTokenEndpoint(t)
	cs, err := ClientCredentials(ClientCredentialsConfig{
		TokenURL:     srv.URL + "/oauth/token",
		ClientID:     "client-1",
		ClientSecret: clientSecret,
		Scope:        "*",
	})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	cs.now = clk.Now

	// Everyone asking at once shares one fetch.
	var wg sync.WaitGroup
	toks := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			tok, err := cs.Token()
			if err != nil {
				t.Error(err)
				return
			}
			toks <- tok.AccessToken
		})
	}
	wg.Wait()
	close(toks)
	for tok := range toks {
		if tok != "at-1" {
			t.Fatalf("token %q, want at-1", tok)
		}
	}
	if n := ep.calls(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}

	ep.mu.Lock()
	form, header, method := ep.forms[0], ep.headers[0], ep.methods[0]
	ep.mu.Unlock()
	wantForm := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {"client-1"},
		"client_secret": {clientSecret},
		"scope":         {"*"},
	}
	if method != http.MethodPost || fmt.Sprint(form) != fmt.Sprint(wantForm) {
		t.Fatalf("%s with form %v, want POST with %v", method, form, wantForm)
	}
	if ct := header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Fatalf("Content-Type %q", ct)
	}
	if a := header.Get("Authorization"); a != "" {
		t.Fatalf("credentials also sent in Authorization: %q", a)
	}

	steps := []struct {
		name  string
		do    func()
		want  string
		calls int
	}{
		{"cached while fresh", func() { clk.Advance(3600*time.Second - 2*time.Minute) }, "at-1", 1},
		{"refetched shortly before expiry", func() { clk.Advance(90 * time.Second) }, "at-2", 2},
		{"cached again", nil, "at-2", 2},
		{"Invalidate refetches", cs.Invalidate, "at-3", 3},
		{"a stale refusal is ignored", func() { cs.invalidate("at-2") }, "at-3", 3},
		{"a current refusal refetches", func() { cs.invalidate("at-3") }, "at-4", 4},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.do != nil {
				st.do()
			}
			tok, err := cs.Token()
			if err != nil || tok.AccessToken != st.want {
				t.Fatalf("Token() = %v, %v; want %s", tok, err, st.want)
			}
			if n := ep.calls(); n != st.calls {
				t.Fatalf("%d fetches, want %d", n, st.calls)
			}
		})
	}
	if s := cs.Secrets(); len(s) != 1 || s[0] != clientSecret {
		t.Fatalf("Secrets() = %q", s)
	}
}

func TestClientCredentialsNoExpiry(t *testing.T) {
	ep, srv := newTokenEndpoint(t)
	ep.expiresIn = 0
	cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "c", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	cs.now = clk.Now
	for range 3 {
		if _, err := cs.Token(); err != nil {
			t.Fatal(err)
		}
		clk.Advance(10 * 365 * 24 * time.Hour)
	}
	if n := ep.calls(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	if _, ok := ep.lastForm()["scope"]; ok {
		t.Fatal("scope sent though not configured")
	}
}

func TestClientCredentialsShortLivedToken(t *testing.T) {
	ep, srv := newTokenEndpoint(t)
	ep.expiresIn = 10
	cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "c", ClientSecret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	cs.now = clk.Now
	// A token shorter-lived than the early-refresh margin is still used for
	// the first half of its life, not refetched on every call.
	for range 3 {
		if _, err := cs.Token(); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	if n := ep.calls(); n != 1 {
		t.Fatalf("%d fetches, want 1", n)
	}
	clk.Advance(3 * time.Second)
	if tok, _ := cs.Token(); tok.AccessToken != "at-2" {
		t.Fatalf("token %v, want at-2 after half its life", tok)
	}
}

func TestClientCredentialsSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client_secret")
	writeFile(t, path, "first-secret\n")
	ep, srv := newTokenEndpoint(t)
	cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "c", ClientSecretFile: path})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	cs.now = clk.Now
	if _, err := cs.Token(); err != nil {
		t.Fatal(err)
	}
	if got := ep.lastForm().Get("client_secret"); got != "first-secret" {
		t.Fatalf("client_secret %q", got)
	}
	writeFile(t, path, "second-secret-rotated")
	clk.Advance(2 * time.Second)
	cs.Invalidate()
	if _, err := cs.Token(); err != nil {
		t.Fatal(err)
	}
	if got := ep.lastForm().Get("client_secret"); got != "second-secret-rotated" {
		t.Fatalf("client_secret %q after rotation", got)
	}
	if s := cs.Secrets(); s[0] != "second-secret-rotated" {
		t.Fatalf("Secrets() = %q", s)
	}
}

func TestClientCredentialsConfig(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, "\n")
	tests := []struct {
		name    string
		cfg     ClientCredentialsConfig
		wantErr string
	}{
		{"no client id", ClientCredentialsConfig{ClientSecret: "s"}, "ClientID"},
		{"no secret", ClientCredentialsConfig{ClientID: "c"}, "exactly one"},
		{"both secrets", ClientCredentialsConfig{ClientID: "c", ClientSecret: "s", ClientSecretFile: empty}, "exactly one"},
		{"bad token URL", ClientCredentialsConfig{TokenURL: "go.tallyfy.com/oauth/token", ClientID: "c", ClientSecret: "s"}, "token URL"},
		{"missing secret file", ClientCredentialsConfig{ClientID: "c", ClientSecretFile: filepath.Join(dir, "nope")}, "no such file"},
		{"empty secret file", ClientCredentialsConfig{ClientID: "c", ClientSecretFile: empty}, "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ClientCredentials(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	cs, err := ClientCredentials(ClientCredentialsConfig{ClientID: "c", ClientSecret: "s"})
	if err != nil || cs.tokenURL != DefaultTokenURL {
		t.Fatalf("defaults: %v, %v", cs, err)
	}
}

func TestClientCredentialsErrors(t *testing.T) {
	var elsewhere counter
	other := newServer(t, elsewhere.wrap(func(http.ResponseWriter, *http.Request) {}))
	jsonAnswer := func(status int, body string) func(http.ResponseWriter, url.Values) {
		return func(w http.ResponseWriter, _ url.Values) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name             string
		fail             func(http.ResponseWriter, url.Values)
		wantStatus       int
		wantMsg          string
		wantUnauthorized bool
	}{
		{"invalid client", jsonAnswer(401, `{"error":"invalid_client"}`), 401, "invalid_client", true},
		{"passport style", jsonAnswer(401, `{"error":"invalid_client","error_description":"Client authentication failed","message":"Client authentication failed"}`), 401, "invalid_client: Client authentication failed", true},
		{"echoes the secret", func(w http.ResponseWriter, f url.Values) {
			jsonAnswer(400, `{"error":"invalid_request","error_description":"bad secret `+f.Get("client_secret")+`"}`)(w, f)
		}, 400, "invalid_request: bad secret [REDACTED]", false},
		{"echoes the form", func(w http.ResponseWriter, f url.Values) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(400)
			io.WriteString(w, "cannot parse "+f.Encode())
		}, 400, "[REDACTED]", false},
		{"not found", jsonAnswer(404, `{"message":"Not Found"}`), 404, "Not Found", false},
		{"server error", func(w http.ResponseWriter, _ url.Values) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(502)
			io.WriteString(w, "<html><title>502 Bad Gateway</title></html>")
		}, 502, "502 Bad Gateway", false},
		{"no access token", jsonAnswer(200, `{"token_type":"Bearer"}`), 0, "missing access_token", false},
		{"header-breaking token", jsonAnswer(200, `{"access_token":"a\r\nb"}`), 0, "cannot go in a header", false},
		{"redirect", func(w http.ResponseWriter, _ url.Values) {
			w.Header().Set("Location", other.URL+"/steal")
			w.WriteHeader(http.StatusTemporaryRedirect)
		}, 307, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, srv := newTokenEndpoint(t)
			ep.fail = tt.fail
			cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: srv.URL, ClientID: "c", ClientSecret: clientSecret})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := cs.Token()
			if err == nil {
				t.Fatalf("Token() = %v, want error", tok)
			}
			var te *TokenError
			if !errors.As(err, &te) || !errors.Is(err, ErrToken) {
				t.Fatalf("err = %v (%T), want a *TokenError", err, err)
			}
			if te.StatusCode != tt.wantStatus || !strings.Contains(te.Message, tt.wantMsg) {
				t.Fatalf("TokenError %+v, want status %d and message containing %q", te, tt.wantStatus, tt.wantMsg)
			}
			if got := errors.Is(err, ErrUnauthorized); got != tt.wantUnauthorized {
				t.Fatalf("errors.Is(err, ErrUnauthorized) = %v", got)
			}
			// The token endpoint answered: whatever it said, the credentials
			// were read.
			if errors.Is(err, ErrCredentialsUnreadable) {
				t.Fatalf("token endpoint error %v reads as unreadable credentials", err)
			}
			// A token endpoint's 404 is not an answer about a run.
			if errors.Is(err, ErrNotFound) || errors.As(err, new(*APIError)) {
				t.Fatalf("token error %v reads as an API answer", err)
			}
			assertNoSecret(t, "error", err.Error(), clientSecret)
			assertNoSecret(t, "error", fmt.Sprintf("%+v", err), clientSecret)
			if n := elsewhere.get(); n != 0 {
				t.Fatalf("redirect target saw %d requests", n)
			}
		})
	}
}

func TestClientWithCredentials(t *testing.T) {
	t.Run("401 refetches once, shared by concurrent callers", func(t *testing.T) {
		ep, tsrv := newTokenEndpoint(t)
		var hits counter
		api := newServer(t, hits.wrap(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "Bearer at-1" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.WriteHeader(http.StatusOK)
		}))
		cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: tsrv.URL, ClientID: "c", ClientSecret: clientSecret})
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, api.URL, WithTokenSource(cs))
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				if _, err := c.DeleteRun(context.Background(), "o", fmt.Sprint("r", i)); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		// Every 401 names at-1; only the first drops it.
		if n := ep.calls(); n != 2 {
			t.Fatalf("%d token fetches, want 2", n)
		}
		if n := hits.get(); n < 21 || n > 40 {
			t.Fatalf("API saw %d requests", n)
		}
	})

	t.Run("token endpoint 404 is not a deleted run", func(t *testing.T) {
		ep, tsrv := newTokenEndpoint(t)
		ep.fail = func(w http.ResponseWriter, _ url.Values) { w.WriteHeader(http.StatusNotFound) }
		var hits counter
		api := newServer(t, hits.wrap(func(http.ResponseWriter, *http.Request) {}))
		cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: tsrv.URL, ClientID: "c", ClientSecret: clientSecret})
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, api.URL, WithTokenSource(cs))
		resp, err := c.DeleteRun(context.Background(), "o", "r")
		if resp != nil || !errors.Is(err, ErrToken) || errors.Is(err, ErrNotFound) || errors.As(err, new(*APIError)) {
			t.Fatalf("DeleteRun = %v, %v; want a token error only", resp, err)
		}
		if hits.get() != 0 {
			t.Fatal("API called without a token")
		}
	})

	t.Run("hanging token endpoint honours the timeout", func(t *testing.T) {
		done := make(chan struct{})
		tsrv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-done:
			}
		})
		t.Cleanup(func() { close(done) })
		cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: tsrv.URL, ClientID: "c", ClientSecret: clientSecret})
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, "http://127.0.0.1:1", WithTokenSource(cs), WithTimeout(150*time.Millisecond))
		start := time.Now()
		_, err = c.DeleteRun(context.Background(), "o", "r")
		if !errors.Is(err, ErrToken) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a token error matching DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
	})

	t.Run("a caller waiting on another's fetch can give up", func(t *testing.T) {
		entered := make(chan struct{}, 1)
		release := make(chan struct{})
		tsrv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"at-1"}`)
		})
		cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: tsrv.URL, ClientID: "c", ClientSecret: clientSecret})
		if err != nil {
			t.Fatal(err)
		}
		first := make(chan error, 1)
		go func() {
			_, err := cs.Token()
			first <- err
		}()
		<-entered
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := cs.tokenContext(ctx); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrToken) {
			t.Fatalf("waiting caller: %v, want context.Canceled", err)
		}
		close(release)
		select {
		case err := <-first:
			if err != nil {
				t.Fatalf("first caller: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("first caller never finished")
		}
	})
}

// TestCheckCredentials: a client says, without calling the API, whether it
// has usable credentials, and a local fault reads as one.
func TestCheckCredentials(t *testing.T) {
	var calls counter
	api := newServer(t, calls.wrap(func(http.ResponseWriter, *http.Request) {}))
	dir := t.TempDir()
	tokenPath := filepath.Join(dir, "token")
	secretPath := filepath.Join(dir, "client_secret")
	ep, tokenSrv := newTokenEndpoint(t)
	clk := newFakeClock()

	fileClient := func(t *testing.T) *Client {
		c, err := New(api.URL, WithTokenSource(FileTokenSource(tokenPath)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	credsClient := func(t *testing.T) *Client {
		writeFile(t, secretPath, "s3cret")
		cs, err := ClientCredentials(ClientCredentialsConfig{TokenURL: tokenSrv.URL, ClientID: "c", ClientSecretFile: secretPath})
		if err != nil {
			t.Fatal(err)
		}
		cs.now = clk.Now
		c, err := New(api.URL, WithTokenSource(cs))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name           string
		client         func(t *testing.T) *Client
		setup          func(t *testing.T)
		wantErr        bool
		wantUnreadable bool
	}{
		{"token file readable", fileClient, func(t *testing.T) { writeFile(t, tokenPath, "tok") }, false, false},
		{"token file empty", fileClient, func(t *testing.T) { writeFile(t, tokenPath, "\n") }, true, true},
		{"token file missing", fileClient, func(*testing.T) { os.Remove(tokenPath) }, true, true},
		{"client secret readable", credsClient, func(*testing.T) { ep.fail = nil }, false, false},
		{"client secret gone", credsClient, func(*testing.T) {
			os.Remove(secretPath)
			clk.Advance(2 * time.Second) // past the file watcher's cache
		}, true, true},
		{"token endpoint refuses", credsClient, func(*testing.T) {
			ep.fail = func(w http.ResponseWriter, _ url.Values) { w.WriteHeader(http.StatusUnauthorized) }
		}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.client(t)
			tt.setup(t)
			err := c.CheckCredentials(context.Background())
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckCredentials() = %v, want error %v", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrCredentialsUnreadable); got != tt.wantUnreadable {
				t.Fatalf("CheckCredentials() = %v: errors.Is(ErrCredentialsUnreadable) = %v, want %v", err, got, tt.wantUnreadable)
			}
			if err != nil && !errors.Is(err, ErrToken) {
				t.Fatalf("CheckCredentials() = %v, want a *TokenError", err)
			}
		})
	}
	if n := calls.get(); n != 0 {
		t.Errorf("the API got %d requests: CheckCredentials must not call it", n)
	}
}
