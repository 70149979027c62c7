// Package deploy holds what runs tallyfy-deleter on a platform, and no Go code of its own: its
// tests check the files beside it without a cluster.
//
//   - kubernetes/: the kustomize base (`kubectl apply -k deploy/kubernetes`): the worker's
//     Deployment, Service, PodDisruptionBudget and ServiceMonitor, KEDA's ScaledObject, NACK's
//     Stream and Consumer resources, and the daily sweep's CronJob.
//   - prometheus/: the alerts, a PrometheusRule whose spec is also a plain rules file.
//   - grafana/: the dashboard, and the ConfigMap Grafana's sidecar loads it from.
//
// The tests render the base as kubectl does (kustomize's krusty), decode every object strictly
// as its kind (k8s.io/api, the Prometheus Operator's and NACK's Go types, and the KEDA CRD's
// schema from testdata/), compare NACK's streams and consumer with what the worker would
// provision (worker.Config.StreamConfigs, ConsumerConfig) both as written and as a JetStream
// server stores them, and run the real binary, built from ../cmd/tallyfy-deleter, with the
// Deployment's and the CronJob's settings against an embedded JetStream and the fake Tallyfy:
// the worker accepts the NACK streams, the sweep enqueues, and every metric the alerts and the
// dashboard use is one the worker exports.
//
// It is a module of its own, so that Kubernetes, kustomize and Prometheus never reach the
// binary's dependencies:
//
//	cd deploy && go test ./...
package deploy
