package tallyfy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"
)

// A token with characters that JSON (PHP style), query and path escaping all
// change, so every echoed form differs from the raw one.
const echoedToken = "sEcReT/tok+en=0123456789abcdefXYZ"

func TestTokenNeverInErrors(t *testing.T) {
	jsonMsg := func(s string) string {
		b, _ := json.Marshal(map[string]any{"error": true, "message": s})
		return string(b)
	}
	tests := []struct {
		name        string
		status      int
		contentType string
		body        func(auth string) string
	}{
		{"json message", 400, "application/json", func(a string) string { return jsonMsg("bad header " + a) }},
		{"json php slashes", 400, "application/json", func(a string) string {
			return strings.ReplaceAll(jsonMsg("bad header "+a), "/", `\/`)
		}},
		{"json unicode escapes", 400, "application/json", func(a string) string {
			return `{"message":"got \u0073EcReT\/tok\u002ben=0123456789abcdefXYZ"}`
		}},
		{"json nested", 403, "application/json", func(a string) string {
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": a, "message": a}})
			return string(b)
		}},
		{"oauth style", 401, "application/json", func(a string) string {
			b, _ := json.Marshal(map[string]string{"error": a, "error_description": a})
			return string(b)
		}},
		{"text", 500, "text/plain", func(a string) string { return "Authorization: " + a }},
		{"html title", 502, "text/html", func(a string) string { return "<html><title>" + a + "</title></html>" }},
		{"html body", 502, "text/html", func(a string) string { return "<html><body><pre>" + a + "</pre></body></html>" }},
		{"query escaped", 400, "text/plain", func(a string) string { return "token=" + url.QueryEscape(a) }},
		{"path escaped", 404, "text/plain", func(a string) string { return "/x/" + url.PathEscape(a) }},
		{"cut at 4 KiB mid-token", 400, "text/plain", func(a string) string {
			// Whitespace collapses, so the cut-off tail would be in the excerpt.
			pad := maxErrorBody - len("Bearer ") - 10
			return strings.Repeat(" ", pad) + a + " and more"
		}},
		{"cut at 4 KiB mid-token json", 400, "application/json", func(a string) string {
			pad := maxErrorBody - len(`{"message":"`) - len("Bearer ") - 12
			return `{"message":"` + strings.Repeat(" ", pad) + a + `"}`
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body(r.Header.Get("Authorization")))
			})
			var hooks hookRecorder
			c := newClient(t, srv.URL, WithToken(echoedToken), WithRequestHook(hooks.hook))
			_, err := c.DeleteRun(context.Background(), "o", "r")
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status {
				t.Fatalf("err = %v, want a %d *APIError", err, tt.status)
			}
			for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", apiErr), apiErr.Message, hooks.infos[0].Err.Error()} {
				assertNoSecret(t, "error", s, echoedToken)
			}
			if !strings.Contains(err.Error(), redacted) {
				t.Errorf("error %q does not show the redaction", err)
			}
		})
	}
}

// echoTransport fails every request with an error quoting its Authorization
// header, wrapping cause: a worst-case transport.
type echoTransport struct{ cause error }

func (e echoTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return nil, fmt.Errorf("%w: sent %s", e.cause, r.Header.Get("Authorization"))
}

func TestTokenNeverInTransportErrors(t *testing.T) {
	closed := newServer(t, func(http.ResponseWriter, *http.Request) {})
	closed.Close()
	tests := []struct {
		name   string
		base   string
		hc     *http.Client
		wantIs error
	}{
		{"connection refused", closed.URL, nil, nil},
		{"transport echoes header", "http://127.0.0.1:1", &http.Client{Transport: echoTransport{context.DeadlineExceeded}}, context.DeadlineExceeded},
		{"transport echoes header, canceled", "http://127.0.0.1:1", &http.Client{Transport: echoTransport{context.Canceled}}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []Option{WithToken(echoedToken)}
			if tt.hc != nil {
				opts = append(opts, WithHTTPClient(tt.hc))
			}
			c := newClient(t, tt.base, opts...)
			resp, err := c.DeleteRun(context.Background(), "o", "r")
			if err == nil || resp != nil {
				t.Fatalf("DeleteRun = %v, %v; want a transport error", resp, err)
			}
			assertNoSecret(t, "error", err.Error(), echoedToken)
			assertNoSecret(t, "error", fmt.Sprintf("%+v", err), echoedToken)
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.wantIs)
			}
			// Whatever can be unwrapped must be clean too.
			for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
				assertNoSecret(t, "unwrapped error", e.Error(), echoedToken)
			}
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				t.Fatalf("a transport error must not be an *APIError")
			}
		})
	}
}

func TestTokenSourceErrorsRedacted(t *testing.T) {
	const secret = "k3y-VALUE-42xyzQ"
	src := &secretSource{secret: secret, err: errors.New("fetch failed for client_secret=" + secret)}
	var hits counter
	srv := newServer(t, hits.wrap(func(http.ResponseWriter, *http.Request) {}))
	c := newClient(t, srv.URL, WithTokenSource(src))
	_, err := c.DeleteRun(context.Background(), "o", "r")
	if !errors.Is(err, ErrToken) {
		t.Fatalf("err = %v, want ErrToken", err)
	}
	assertNoSecret(t, "error", err.Error(), secret)
	if hits.get() != 0 {
		t.Fatal("a request was made without a token")
	}
}

// secretSource declares a secret and fails with it in its message.
type secretSource struct {
	secret string
	err    error
}

func (s *secretSource) Token() (*oauth2.Token, error) { return nil, s.err }
func (s *secretSource) Secrets() []string             { return []string{s.secret} }

func TestRedactTail(t *testing.T) {
	sec := newSecrets("abcdefgh")
	tests := []struct{ in, want string }{
		{"x abcd", "x " + redacted},
		{"x a", "x " + redacted},
		{"x abcdefgh", "x abcdefgh"}, // whole secrets are redactBytes' job
		{"x b", "x b"},
	}
	for _, tt := range tests {
		if got := string(sec.redactTail([]byte(tt.in))); got != tt.want {
			t.Errorf("redactTail(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestOneLine: the bound is in bytes, and a cut text's ellipsis counts
// toward it.
func TestOneLine(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"  a \n\t b  ", 10, "a b"},
		{"a\x00b\x7fc\u202ed", 10, "abcd"},
		{"abc\xffdef", 10, "abcdef"},
		{"abcdefg", 6, "abc…"},
		{"abcdef", 6, "abcdef"},
		{"ab cdefg", 6, "ab…"},
		{"", 3, ""},
		{"héllo", 5, "h…"}, // é is two bytes: not split
		{"abc", 2, "ab"},   // no room for the ellipsis
		{"a bc", 2, "a"},
		{"a\u200bb\u2028c", 10, "ab c"},
		{"abc", 0, ""},
	}
	for _, tt := range tests {
		if got := OneLine(tt.in, tt.max); got != tt.want {
			t.Errorf("OneLine(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

// FuzzOneLine: whatever the text, the result is one line of valid UTF-8,
// without control or format characters, within the bound.
func FuzzOneLine(f *testing.F) {
	for _, s := range []string{"", "a\nb", "\xff\xfe", "héllo wörld", "\u202eabc", strings.Repeat("é", 100)} {
		f.Add(s, 7)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max &= 1<<12 - 1 // 0 to 4095, whatever the sign
		got := OneLine(s, max)
		if len(got) > max || !utf8.ValidString(got) {
			t.Fatalf("OneLine(%q, %d) = %q: %d bytes, valid UTF-8 %v", s, max, got, len(got), utf8.ValidString(got))
		}
		for _, r := range got {
			if r != ' ' && (unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)) {
				t.Fatalf("OneLine(%q, %d) = %q holds %U", s, max, got, r)
			}
		}
		if strings.HasPrefix(got, " ") || strings.HasSuffix(got, " ") || strings.Contains(got, "  ") {
			t.Fatalf("OneLine(%q, %d) = %q: white space not collapsed", s, max, got)
		}
	})
}
