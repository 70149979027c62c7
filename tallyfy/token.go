package tallyfy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Invalidator is implemented by token sources that can drop a token the API
// has refused. After a 401 the Client invalidates the source and, if the
// source then yields a different token, retries the request once.
type Invalidator interface {
	Invalidate()
}

// SecretHolder is implemented by token sources that hold secrets besides
// the access token itself (a client secret, say). The Client redacts them
// from every error it returns, as it does the access token.
type SecretHolder interface {
	Secrets() []string
}

// invalidator lets this package's sources drop a token only if it is still
// the one that was refused, so a burst of 401s from concurrent requests
// costs one refetch rather than one each.
type invalidator interface {
	invalidate(refused string)
}

// contextSource lets this package's sources honour the request's context
// while fetching, which oauth2.TokenSource cannot express.
type contextSource interface {
	tokenContext(ctx context.Context) (*oauth2.Token, error)
}

const (
	// maxSecretFile bounds what a mounted secret may cost to read.
	maxSecretFile = 64 << 10
	// fileCheckInterval bounds how stale a rotated secret can be while
	// keeping stat calls off the hot path.
	fileCheckInterval = time.Second
	// tokenFetchTimeout applies when the caller's context has no deadline
	// (Token called directly, outside a Client).
	tokenFetchTimeout = 30 * time.Second
	// maxEarlyRefresh is how long before expiry a cached token is replaced,
	// so a request never leaves with a token that expires on the way.
	maxEarlyRefresh = time.Minute
	// maxTokenLifetime keeps an absurd expires_in from overflowing.
	maxTokenLifetime = 365 * 24 * time.Hour
)

// TokenFile is a token source that reads a personal access token from a
// file, such as a mounted Kubernetes secret, and notices when it is rotated.
// It is safe for concurrent use.
type TokenFile struct {
	mu sync.Mutex
	w  fileWatcher
}

// FileTokenSource returns a token source for the token in the file at path,
// surrounding whitespace trimmed. The file is checked for changes at most
// about once a second, and read again at once after Invalidate. A missing,
// empty or oversized file is an error from Token, not from here, so a secret
// that is mounted late does not stop the program from starting.
func FileTokenSource(path string) *TokenFile {
	return &TokenFile{w: fileWatcher{path: path, now: time.Now}}
}

// Token implements oauth2.TokenSource.
func (f *TokenFile) Token() (*oauth2.Token, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.w.get()
	if err != nil {
		return nil, &TokenError{Message: "token file: " + err.Error(), cause: err, local: true}
	}
	if !validToken(v) {
		return nil, &TokenError{Message: fmt.Sprintf("token file %s: token holds characters that cannot go in a header", f.w.path), local: true}
	}
	return &oauth2.Token{AccessToken: v, TokenType: "Bearer"}, nil
}

// Invalidate makes the next Token read the file again, whatever its mtime.
func (f *TokenFile) Invalidate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.w.stale = true
}

func (f *TokenFile) invalidate(refused string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.w.value == refused {
		f.w.stale = true
	}
}

// fileWatcher holds the contents of a small file and reads it again only when
// it looks changed. It is not safe for concurrent use; its owner locks.
type fileWatcher struct {
	path    string
	now     func() time.Time
	value   string
	info    os.FileInfo
	checked time.Time
	stale   bool
}

func (w *fileWatcher) get() (string, error) {
	now := w.now()
	if w.value != "" && !w.stale && now.Sub(w.checked) < fileCheckInterval && now.Sub(w.checked) >= 0 {
		return w.value, nil
	}
	f, err := os.Open(w.path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	// Stat the open file, not the path, so the contents read below belong to
	// the file described (a rotation swaps the path in between otherwise).
	info, err := f.Stat()
	if err != nil {
		return "", err
	}
	// SameFile catches an atomic swap (Kubernetes' ..data symlink) even when
	// the new file has the same size and mtime.
	if w.value != "" && !w.stale && w.info != nil && os.SameFile(info, w.info) &&
		info.ModTime().Equal(w.info.ModTime()) && info.Size() == w.info.Size() {
		w.checked = now
		return w.value, nil
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s: larger than %d bytes", w.path, maxSecretFile)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s: file is empty", w.path)
	}
	w.value, w.info, w.checked, w.stale = v, info, now, false
	return v, nil
}

// ClientCredentialsConfig configures an OAuth client-credentials token
// source for Tallyfy. Zero values mean the default.
type ClientCredentialsConfig struct {
	// TokenURL defaults to DefaultTokenURL.
	TokenURL string
	ClientID string
	// Exactly one of ClientSecret and ClientSecretFile must be set. The file
	// is read at once, so a missing secret fails at start-up, and again when
	// it changes, so a rotated secret is used for the next fetch.
	ClientSecret     string
	ClientSecretFile string
	// Scope is sent when not empty; Tallyfy's examples use "*".
	Scope string
	// HTTPClient is copied and, like the Client's, never follows redirects:
	// a 307 would post the client secret to wherever it points.
	HTTPClient *http.Client
}

// CredentialsSource fetches access tokens with the client-credentials grant
// and shares one cached token among all callers, fetching a new one shortly
// before the old expires or after Invalidate. It is safe for concurrent use.
type CredentialsSource struct {
	tokenURL string
	clientID string
	scope    string
	hc       *http.Client
	now      func() time.Time

	// fetching serialises fetches: one goroutine fetches while the others
	// wait for its token, or for their own context to end.
	fetching chan struct{}

	mu        sync.Mutex // guards the fields below
	tok       *oauth2.Token
	refreshAt time.Time // zero: the token does not expire
	secret    string
	file      *fileWatcher // guarded by fetching, not mu
}

// ClientCredentials checks cfg and returns a source that fetches its first
// token on first use.
func ClientCredentials(cfg ClientCredentialsConfig) (*CredentialsSource, error) {
	tokenURL := cfg.TokenURL
	if tokenURL == "" {
		tokenURL = DefaultTokenURL
	}
	if _, err := parseHTTPURL(tokenURL); err != nil {
		return nil, fmt.Errorf("tallyfy: token URL: %w", err)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("tallyfy: client credentials: ClientID is empty")
	}
	if (cfg.ClientSecret == "") == (cfg.ClientSecretFile == "") {
		return nil, errors.New("tallyfy: client credentials: set exactly one of ClientSecret and ClientSecretFile")
	}
	s := &CredentialsSource{
		tokenURL: tokenURL,
		clientID: cfg.ClientID,
		scope:    cfg.Scope,
		hc:       noRedirects(cfg.HTTPClient),
		now:      time.Now,
		fetching: make(chan struct{}, 1),
		secret:   cfg.ClientSecret,
	}
	if cfg.ClientSecretFile != "" {
		s.file = &fileWatcher{path: cfg.ClientSecretFile, now: s.clock}
		v, err := s.file.get()
		if err != nil {
			// The path is not secret; the contents never reach this message.
			return nil, fmt.Errorf("tallyfy: client secret file: %w", err)
		}
		s.secret = v
	}
	return s, nil
}

// clock lets tests move time for the file watcher too.
func (s *CredentialsSource) clock() time.Time { return s.now() }

// Token implements oauth2.TokenSource.
func (s *CredentialsSource) Token() (*oauth2.Token, error) {
	return s.tokenContext(context.Background())
}

// Invalidate drops the cached token, so the next Token fetches a new one.
func (s *CredentialsSource) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tok = nil
}

func (s *CredentialsSource) invalidate(refused string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && s.tok.AccessToken == refused {
		s.tok = nil
	}
}

// Secrets implements SecretHolder: the client secret in use.
func (s *CredentialsSource) Secrets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []string{s.secret}
}

func (s *CredentialsSource) cached() *oauth2.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != nil && (s.refreshAt.IsZero() || s.now().Before(s.refreshAt)) {
		return s.tok
	}
	return nil
}

func (s *CredentialsSource) tokenContext(ctx context.Context) (*oauth2.Token, error) {
	if t := s.cached(); t != nil {
		return t, nil
	}
	select {
	case s.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, &TokenError{Message: ctx.Err().Error(), cause: ctx.Err()}
	}
	defer func() { <-s.fetching }()
	// Whoever held the lock before us may have fetched already.
	if t := s.cached(); t != nil {
		return t, nil
	}
	return s.fetch(ctx)
}

func (s *CredentialsSource) fetch(ctx context.Context) (*oauth2.Token, error) {
	secret, err := s.currentSecret()
	if err != nil {
		return nil, &TokenError{Message: "client secret file: " + err.Error(), cause: err, local: true}
	}
	sec := newSecrets(secret)

	ctx, cancel := context.WithTimeout(ctx, tokenFetchTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.hc)
	conf := clientcredentials.Config{
		ClientID:     s.clientID,
		ClientSecret: secret,
		TokenURL:     s.tokenURL,
		// Tallyfy wants the credentials in the form body, and probing
		// (the zero value) would send the secret twice on failure.
		AuthStyle: oauth2.AuthStyleInParams,
	}
	if s.scope != "" {
		conf.Scopes = []string{s.scope}
	}
	start := s.now()
	t, err := conf.Token(ctx)
	if err != nil {
		return nil, retrieveError(err, sec)
	}
	if !validToken(t.AccessToken) {
		return nil, &TokenError{Message: "token endpoint sent an access token that cannot go in a header"}
	}

	// Measure expiry on our own clock from before the request: expires_in
	// is relative to an unknown moment, and erring early is harmless.
	expiry := t.Expiry
	if t.ExpiresIn > 0 {
		expiry = start.Add(time.Duration(min(t.ExpiresIn, int64(maxTokenLifetime/time.Second))) * time.Second)
	}
	var refreshAt time.Time
	if !expiry.IsZero() {
		refreshAt = expiry.Add(-min(maxEarlyRefresh, expiry.Sub(start)/2))
	}
	s.mu.Lock()
	s.tok, s.refreshAt = t, refreshAt
	s.mu.Unlock()
	return t, nil
}

func (s *CredentialsSource) currentSecret() (string, error) {
	if s.file == nil {
		return s.secret, nil
	}
	v, err := s.file.get()
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.secret = v
	s.mu.Unlock()
	return v, nil
}

// retrieveError turns an oauth2 failure into a *TokenError. oauth2's own
// error text includes the response body, which an endpoint may have filled
// with the posted form, client secret and all.
func retrieveError(err error, sec secrets) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		// oauth2 reads at most 1 MiB; a body that long may end mid-secret.
		msg := errorMessage(re.Body, len(re.Body) >= 1<<20, re.Response.Header.Get("Content-Type"), sec)
		return &TokenError{
			StatusCode: re.Response.StatusCode,
			Message:    msg,
			RequestID:  requestID(re.Response.Header),
		}
	}
	return &TokenError{Message: OneLine(sec.redact(err.Error()), 2*maxMessage+len(ellipsis)), cause: err}
}

// validToken admits visible ASCII only: anything else would be rejected by
// net/http or, worse, change the meaning of the header.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
