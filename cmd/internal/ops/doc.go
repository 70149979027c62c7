// Package ops is what the operator tools of tallyfy-deleter do (enqueue,
// dlq ls, dlq replay, status, sweep, results), apart from their command lines and their
// output: functions that take a context first, a JetStream context (or a
// handle opened from one) and typed options, and return typed results.
// They print nothing and never exit; what happens to each item is
// reported to a callback, whose calls never overlap. The binary parses
// flags, connects, calls ops and prints.
//
//   - Enqueue reads job lines (JSON or CSV) from a Source, validates each as
//     the worker would, and publishes the valid ones to the Jobs that
//     OpenJobs looked up, each with a Nats-Msg-Id that makes a second
//     enqueue of the same job a duplicate.
//   - ScanDeadLetters reads the dead letters a Filter selects, changing
//     nothing (so a dry run of a replay is a scan alone); a Replayer
//     re-publishes them as jobs, at a capped rate, and removes each once the
//     jobs stream has confirmed it.
//   - Status counts the backlog, the dead letters by reason and the result
//     events by outcome.
//   - Sweep lists an organization's archived runs through a RunLister
//     (tallyfy.Client.ListRuns), keeps those whose own record says they
//     were archived before the cutoff, and publishes them as Enqueue would.
//   - ScanResults reads the result events a ResultsQuery selects, changing
//     nothing; a Summary turns them into one RequestSummary per request ID,
//     which says whether the request is complete.
//
// Replaying the dead letters of one reason:
//
//	scan, err := ops.ScanDeadLetters(ctx, js, names, ops.Filter{Reason: "not_archived"})
//	if err != nil {
//		return err
//	}
//	r, err := ops.NewReplayer(ctx, js, names) // errors.Is(err, ops.ErrNoJobsStream): no worker ran yet
//	if err != nil {
//		return err
//	}
//	res := r.Replay(ctx, scan.Letters, ops.ReplayOptions{PerSecond: 10, OnLetter: func(rep ops.ReplayReport) {
//		if rep.Err != nil {
//			log.Printf("dead letter %d kept: %v", rep.Letter.Seq, rep.Err)
//		}
//	}})
//	fmt.Printf("%d replayed, %d failed\n", res.Replayed, res.Failed)
//
// names are a worker.Streams: the streams, subjects and consumer the
// worker uses (settings.Tool.Names). Every NATS call is bounded by
// cli.ToolTimeout.
package ops
