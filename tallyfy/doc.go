// Package tallyfy is the small part of the Tallyfy REST API that
// tallyfy-deleter needs: permanently deleting an archived process run,
// archiving one first when a job asks for it, reading a run back to tell
// "gone" from "not archived", and listing an organization's runs (ListRuns)
// for a retention sweep.
//
// It exists so that the worker can treat Tallyfy as a function from a run to
// a classified outcome, and so that the care a production caller owes a
// remote API lives in one place: every answer other than 2xx becomes an
// *APIError that matches sentinels with errors.Is; IDs are checked before
// they reach a URL; every body read is bounded and every attempt has a
// deadline; redirects are never followed, so the bearer token goes nowhere
// but the configured host; and no error ever carries a token or a client
// secret. Failing to get a token is a *TokenError (errors.Is ErrToken),
// never an *APIError, so a misconfigured token endpoint cannot be mistaken
// for an answer about a run.
//
// A request carries the caller's trace on: when its ctx holds a valid
// OpenTelemetry span context (trace.ContextWithSpan, or
// trace.ContextWithRemoteSpanContext for a trace context received from
// elsewhere), the request sends it as the W3C traceparent and tracestate
// headers. The client makes no spans of its own; the caller makes one per
// call if it wants them.
//
// Credentials are a static token (WithToken), a token file that may be
// rotated under the running process (FileTokenSource), or OAuth client
// credentials (ClientCredentials). The last two can be invalidated, so a 401
// is retried once with a fresh token.
//
//	ts, err := tallyfy.ClientCredentials(tallyfy.ClientCredentialsConfig{
//		ClientID:         os.Getenv("TALLYFY_CLIENT_ID"),
//		ClientSecretFile: "/var/run/secrets/tallyfy/client_secret",
//		Scope:            "*",
//	})
//	if err != nil {
//		return err
//	}
//	api, err := tallyfy.New(tallyfy.DefaultBaseURL, tallyfy.WithTokenSource(ts))
//	if err != nil {
//		return err
//	}
//	resp, err := api.DeleteRun(ctx, orgID, runID)
//	var apiErr *tallyfy.APIError
//	switch {
//	case err == nil, errors.Is(err, tallyfy.ErrNotFound):
//		// Deleted, now or before.
//	case errors.Is(err, tallyfy.ErrNotArchived):
//		// Archive it first; retrying will not help.
//	case errors.As(err, &apiErr):
//		log.Printf("status %d, retry after %v, request %s", apiErr.StatusCode, apiErr.RetryAfter, apiErr.RequestID)
//	default:
//		// Timeout, connection trouble, no token: worth another try.
//	}
//	_ = resp
package tallyfy
