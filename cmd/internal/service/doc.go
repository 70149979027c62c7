// Package service is `tallyfy-deleter run` once its settings are loaded:
// the worker wired to NATS, the Tallyfy client, Prometheus metrics and the
// /healthz and /readyz probes, working until its context is cancelled. The
// run subcommand and the bench's worker child both call Run.
package service
