// Package worker is the JetStream consumer that turns run-deletion jobs into
// Tallyfy API calls and gives every job exactly one outcome.
//
// A pool of identical workers shares one durable pull consumer. Each worker
// decodes a job, checks it against the allow-list, calls the API through a
// circuit breaker, routes the answer with Policy.Route (the README's outcome
// table), publishes a result event and, where the table says so, a dead
// letter (both confirmed by JetStream), and only then acks.
//
// A job's W3C trace context (traceparent and tracestate headers) goes with
// everything the worker does for it: the requests to Tallyfy, its log
// lines, its result event and its dead letter. With Config.TracerProvider
// the worker also makes a span of each job and of each request.
//
//	api, _ := tallyfy.New(tallyfy.DefaultBaseURL, tallyfy.WithToken(token))
//	w, err := worker.New(js, api, worker.Config{DefaultOrg: "org1"})
//	if err != nil {
//		return err // a setting that cannot work, named by its env var
//	}
//	return w.Run(ctx) // until ctx is cancelled, then a graceful shutdown
package worker
