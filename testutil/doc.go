// Package testutil gives tests what tallyfy-deleter talks to: a NATS server
// with JetStream, alone or as a cluster, and a stateful, scriptable fake
// Tallyfy API. The servers themselves live in testutil/servers, which does
// not import the package testing (the demo and bench subcommands of the
// production binary start them); the helpers here take a testing.TB, fail
// the test on error and stop what they started when it ends, so a test
// reads as its steps:
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
// The servers' types are aliased here, so tests need only this package.
package testutil
