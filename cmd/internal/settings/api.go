package settings

import (
	"errors"
	"fmt"
	"time"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// The settings of reaching Tallyfy, which `run` and `sweep` share: each is
// defined here once, and both commands add it from here.

// API is where Tallyfy is and how to authenticate to it.
type API struct {
	APIURL           string
	Token, TokenFile string
	ClientID         string
	ClientSecret     string
	ClientSecretFile string
	TokenURL         string
	// credentials is what check built; see Credentials.
	credentials tallyfy.Option
}

// AddAPI adds the API URL and the credentials.
func AddAPI(s *Set, a *API) {
	s.Str(&a.APIURL, "TALLYFY_API_URL", "tallyfy-api-url", tallyfy.DefaultBaseURL, "Tallyfy API base URL")
	s.Str(&a.Token, "TALLYFY_ACCESS_TOKEN", "tallyfy-access-token", "", "Tallyfy personal access token (prefer the variable or the file: flags show in ps)").secret = true
	s.Str(&a.TokenFile, "TALLYFY_ACCESS_TOKEN_FILE", "tallyfy-access-token-file", "", "file holding the access token, re-read when it changes")
	s.Str(&a.ClientID, "TALLYFY_CLIENT_ID", "tallyfy-client-id", "", "OAuth client ID (client credentials instead of a personal token)")
	s.Str(&a.ClientSecret, "TALLYFY_CLIENT_SECRET", "tallyfy-client-secret", "", "OAuth client secret (prefer the variable or the file)").secret = true
	s.Str(&a.ClientSecretFile, "TALLYFY_CLIENT_SECRET_FILE", "tallyfy-client-secret-file", "", "file holding the OAuth client secret, re-read when it changes")
	s.Str(&a.TokenURL, "TALLYFY_TOKEN_URL", "tallyfy-token-url", tallyfy.DefaultTokenURL, "OAuth token endpoint")
}

// AddOrgs adds the default organization and the allow-list, which set the
// worker.Config fields DefaultOrg and AllowedOrgs (whose rule AllowedOrg
// repeats for the tools).
func AddOrgs(s *Set, defaultOrg *string, allowed *[]string) {
	s.Str(defaultOrg, "TALLYFY_ORG_ID", "tallyfy-org-id", "", "organization of jobs that name none").For("DefaultOrg")
	s.StrList(allowed, "TALLYFY_ALLOWED_ORGS", "tallyfy-allowed-orgs", "", "comma list of organizations jobs may name; '*' for any (default: TALLYFY_ORG_ID only)").For("AllowedOrgs")
}

// AddAPITimeout adds the timeout of one Tallyfy call.
func AddAPITimeout(s *Set, d *time.Duration) {
	s.DurIn(d, "DELETER_API_TIMEOUT", "api-timeout", "10s", "timeout of one Tallyfy call (10ms to 10m)", 10*time.Millisecond, 10*time.Minute).For("APITimeout")
}

// AddRate adds the client-side rate limit of API requests.
func AddRate(s *Set, perSecond *float64, burst *int) {
	s.Float(perSecond, "DELETER_RATE_LIMIT", "rate-limit", "0", "API requests per second per worker; 0 = no limit (429s still slow it down)").For("RateLimit")
	s.NumIn(burst, "DELETER_RATE_BURST", "rate-burst", "", "burst of the rate limit, 1 to 100000 (default: one second's worth)", 1, 100000).For("RateBurst")
}

// check wants a base URL the client takes and exactly one way to
// authenticate, and builds the credentials option.
func (a *API) check() []error {
	errs := a.checkCredentials()
	if err := tallyfy.CheckBaseURL(a.APIURL); err != nil {
		errs = append(errs, fmt.Errorf("TALLYFY_API_URL: %w", err))
	}
	return errs
}

// checkCredentials wants exactly one way to authenticate.
func (a *API) checkCredentials() []error {
	ways := 0
	for _, set := range []bool{a.Token != "", a.TokenFile != "", a.ClientID != "" || a.ClientSecret != "" || a.ClientSecretFile != ""} {
		if set {
			ways++
		}
	}
	switch {
	case ways == 0:
		return []error{errors.New("no credentials: set TALLYFY_ACCESS_TOKEN, TALLYFY_ACCESS_TOKEN_FILE, or TALLYFY_CLIENT_ID with TALLYFY_CLIENT_SECRET or TALLYFY_CLIENT_SECRET_FILE")}
	case ways > 1:
		return []error{errors.New("more than one kind of credentials: set only one of TALLYFY_ACCESS_TOKEN, TALLYFY_ACCESS_TOKEN_FILE, and TALLYFY_CLIENT_ID with its secret")}
	}
	switch {
	case a.TokenFile != "":
		// Read it as the worker will: a file that exists but cannot be
		// read, or is empty, is refused like a missing one. The worker gets
		// a source of its own, which reads the file at its first call: a
		// file that became unreadable since is found out then, not a
		// second later.
		if _, err := tallyfy.FileTokenSource(a.TokenFile).Token(); err != nil {
			return []error{fmt.Errorf("TALLYFY_ACCESS_TOKEN_FILE: %w", err)}
		}
		a.credentials = tallyfy.WithTokenSource(tallyfy.FileTokenSource(a.TokenFile))
	case a.ClientID != "" || a.ClientSecret != "" || a.ClientSecretFile != "":
		return a.checkClientCredentials()
	default:
		a.credentials = tallyfy.WithToken(a.Token)
	}
	return nil
}

// checkClientCredentials wants a client ID with exactly one secret, and
// builds the token source: reading the secret file, fetching nothing.
func (a *API) checkClientCredentials() []error {
	switch {
	case a.ClientID == "":
		return []error{errors.New("TALLYFY_CLIENT_SECRET or TALLYFY_CLIENT_SECRET_FILE is set but TALLYFY_CLIENT_ID is not")}
	case a.ClientSecret != "" && a.ClientSecretFile != "":
		return []error{errors.New("TALLYFY_CLIENT_SECRET and TALLYFY_CLIENT_SECRET_FILE are both set: set one")}
	case a.ClientSecret == "" && a.ClientSecretFile == "":
		return []error{errors.New("TALLYFY_CLIENT_ID is set but neither TALLYFY_CLIENT_SECRET nor TALLYFY_CLIENT_SECRET_FILE is")}
	}
	if err := tallyfy.CheckBaseURL(a.TokenURL); err != nil {
		return []error{fmt.Errorf("TALLYFY_TOKEN_URL: %w", err)}
	}
	cs, err := tallyfy.ClientCredentials(tallyfy.ClientCredentialsConfig{
		TokenURL:         a.TokenURL,
		ClientID:         a.ClientID,
		ClientSecret:     a.ClientSecret,
		ClientSecretFile: a.ClientSecretFile,
	})
	if err != nil {
		// With the ID, one secret and the URL checked, only the file is left.
		return []error{fmt.Errorf("TALLYFY_CLIENT_SECRET_FILE: %w", err)}
	}
	a.credentials = tallyfy.WithTokenSource(cs)
	return nil
}

// Credentials is the API client's option for the credentials that were
// checked (LoadRun, Sweep.Check); nil before.
func (a *API) Credentials() tallyfy.Option { return a.credentials }
