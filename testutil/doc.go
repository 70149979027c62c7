// Package testutil runs the two things tallyfy-deleter talks to, inside the
// test (or demo) process: a NATS server with JetStream, alone or as a
// cluster, and a fake Tallyfy API that can be told to fail the ways the real
// one does (401, 403, 404, 422, 429 with Retry-After, 5xx outages, slow,
// redirecting, huge or endless answers) and records what it was asked.
//
// Tests use the helpers that take a testing.TB: they fail the test on error
// and stop what they started when it ends, so a test reads as its steps:
//
//	func TestDeletesArchivedRun(t *testing.T) {
//		ns := testutil.JetStream(t)
//		_, js := testutil.Connect(t, ns.URL())
//		api := testutil.NewFakeTallyfy(t)
//		api.AddRun("org1", "run1", true)
//		api.Script("org1", "run1", testutil.Response{Status: 503}) // first try fails
//
//		// ... create the stream, publish a job with js, run the worker
//		// against api.URL() with api.Token() ...
//
//		if !api.Deleted("org1", "run1") || api.DeleteCount("org1", "run1") != 2 {
//			t.Fatalf("requests: %+v", api.Requests())
//		}
//	}
//
// Programs (the demo subcommand) and benchmarks' setup code use StartNATS,
// StartNATSCluster and StartFakeTallyfy, which return errors instead and are
// stopped with Shutdown and Close.
//
// Nothing here is global: every server is owned by whoever started it, and
// any number can run side by side, as parallel tests need.
package testutil
