package servers

import (
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"time"
)

// defaultTokenTTL is what Tallyfy's docs give for application tokens.
const defaultTokenTTL = 7 * 24 * time.Hour

// SetClient registers an OAuth client that the token endpoint accepts, with
// the lifetime of the tokens it issues (<= 0: 7 days, as Tallyfy documents).
// Registering an id again replaces its secret and lifetime.
//
// The answer's expires_in is the lifetime rounded up to whole seconds (at
// least 1), while the token really expires after exactly ttl: a sub-second
// ttl therefore gives a token that dies before the client expects, which is
// how a client's "refetch after a 401" path can be tested.
func (f *FakeTallyfy) SetClient(id, secret string, ttl time.Duration) {
	if ttl <= 0 {
		ttl = defaultTokenTTL
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clients[id] = oauthClient{secret: secret, ttl: ttl}
}

// TokenRequests is how many tokens the token endpoint has issued.
func (f *FakeTallyfy) TokenRequests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokensIssued
}

// RevokeTokens makes every token issued so far answer 401; new ones work.
// The personal access token (Token) is not affected: see SetToken.
func (f *FakeTallyfy) RevokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.issued)
}

func tokenError(status int, code string) Response {
	b, _ := json.Marshal(map[string]string{"error": code})
	return Response{Status: status, Body: string(b), Header: http.Header{"Cache-Control": {"no-store"}}}
}

// issueToken answers a client-credentials grant the way RFC 6749 section 4.4
// and Tallyfy's docs describe it.
func (f *FakeTallyfy) issueToken(r *http.Request) Response {
	if r.Method != http.MethodPost {
		return Response{Status: http.StatusNotFound, Body: bodyNoRoute}
	}
	// Tallyfy wants a form, not JSON; a client sending JSON must find out
	// here rather than in production.
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return tokenError(http.StatusBadRequest, "invalid_request")
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return tokenError(http.StatusBadRequest, "invalid_request")
	}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
	case "":
		return tokenError(http.StatusBadRequest, "invalid_request")
	default:
		return tokenError(http.StatusBadRequest, "unsupported_grant_type")
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	// golang.org/x/oauth2 may send the credentials as HTTP Basic instead,
	// each part form-escaped (RFC 6749 section 2.3.1).
	if u, p, ok := r.BasicAuth(); ok {
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		secret, err2 = url.QueryUnescape(p)
		if err1 != nil || err2 != nil {
			return tokenError(http.StatusUnauthorized, "invalid_client")
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.clients[id]
	if !ok || id == "" || c.secret != secret {
		return tokenError(http.StatusUnauthorized, "invalid_client")
	}
	tok := "oauth-" + randomHex(16)
	f.issued[tok] = issuedToken{expires: f.now().Add(c.ttl)}
	f.tokensIssued++

	secs := int64((c.ttl + time.Second - 1) / time.Second)
	b, err := json.Marshal(struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}{tok, "Bearer", secs})
	if err != nil {
		panic(err) // a string and a number: cannot fail
	}
	return Response{Status: http.StatusOK, Body: string(b), Header: http.Header{"Cache-Control": {"no-store"}}}
}
