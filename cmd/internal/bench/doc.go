// Package bench measures the worker where its cost shows: in a process of
// its own. The bench process hosts the embedded JetStream server and the
// fake Tallyfy API; each measured loop (the real worker, then a bare loop
// for comparison) runs in a child process, the same binary re-executed as
// `bench --child worker|bare`, so that its CPU time, peak RSS and
// allocations are the loop's alone and not the servers'.
//
// One run: fresh streams, N jobs published up front (the backlog), N
// archived runs in the fake, then the child works until the results stream
// holds N events; then its stdin is closed, it shuts down and reports.
// Throughput and latencies come from the events themselves (`at`) and the
// jobs' publish times as stored by the stream, not from the child.
//
// The binary's bench subcommand hands a child's arguments to Child and
// everything else to Run:
//
//	if bench.IsChild(args) {
//		return bench.Child(args, version, os.Stdin, stdout, stderr)
//	}
//	rows, err := bench.Run(ctx, opts, stderr)
//	bench.WriteTable(stdout, rows, opts.Memory)
package bench
