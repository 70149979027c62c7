// Package ops is what the operator tools of tallyfy-deleter (status, and
// the dead-letter and enqueue tools) do, apart from their command lines
// and their output: functions that take a JetStream context and typed
// options, and return typed results. They print nothing; the binary
// parses flags, connects, calls ops and prints.
//
//	rep, err := ops.Status(ctx, js, names)
//	if err != nil {
//		return err
//	}
//	fmt.Println(rep.Jobs.Consumer.Backlog, rep.DeadLetters.ByReason["not_archived"])
package ops
