// Package cli holds what the subcommands of tallyfy-deleter share on a
// terminal: the logger, the signal handling, the NATS connection of the
// tools, a progress line, and the cleaning of text for tables.
package cli
