// Package settings is the one place that knows every setting of the
// tallyfy-deleter binary: its environment variable, its flag, its default
// and its help. A Set binds names to targets and parses the environment,
// then the flags (the flag wins); every error names the setting. Run holds
// what `tallyfy-deleter run` needs, Tool what the operator tools share,
// and Sweep what `sweep` needs. The settings that reach Tallyfy (API and
// its credentials, the organizations, the API timeout and rate limit) are
// defined once, by AddAPI, AddOrgs, AddAPITimeout and AddRate, for `run`
// and `sweep` alike. So are the settings that reach NATS, by AddNATS, for
// every command: NATS holds them, and its Check, which Command and LoadRun
// run, reads the files they name (CA, client certificate and key, NKey
// seed, credentials, password, a nats CLI context) before anything
// connects.
//
//	cfg, err := settings.LoadRun(args, os.Getenv, os.Stdout)
//	if err != nil {
//		return err // names the setting: "DELETER_CONCURRENCY: ..."
//	}
package settings
