// Package servers runs the two things tallyfy-deleter talks to inside one
// process: a NATS server with JetStream, alone or as a cluster, and a fake
// Tallyfy API that can be told to fail the ways the real one does (401, 403,
// 404, 422, 429 with Retry-After, 5xx outages, slow, redirecting, huge or
// endless answers) and records what it was asked.
//
// It is what the demo and bench subcommands start, so it must never import
// the package testing: the binary that runs in production links it. Tests
// use package testutil, whose helpers take a testing.TB and wrap these.
//
//	ns, err := servers.StartNATS(servers.NATSOptions{StoreDir: dir})
//	if err != nil {
//		return err
//	}
//	defer ns.Shutdown()
//	api := servers.StartFakeTallyfy()
//	defer api.Close()
//	api.AddRun("org1", "run1", true)
//
// Nothing here is global: every server is owned by whoever started it, and
// any number can run side by side.
package servers
