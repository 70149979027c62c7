package worker

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"

	"github.com/tallyfy-deleter/tallyfy-deleter/tallyfy"
)

// Metrics is the Prometheus Observer. Its names are the README's contract.
type Metrics struct {
	jobs            *prometheus.CounterVec
	apiRequests     *prometheus.CounterVec
	apiDuration     prometheus.Histogram
	jobDuration     prometheus.Histogram
	breakerState    prometheus.Gauge
	unable          *prometheus.GaugeVec
	handedBack      *prometheus.CounterVec
	inFlight        prometheus.Gauge
	publishFailures *prometheus.CounterVec
	pending         prometheus.Gauge
	ackPending      prometheus.Gauge
	redelivered     prometheus.Gauge

	// finished holds the jobs counter of every outcome and reason the
	// worker gives, looked up once; read-only after NewMetrics.
	finished map[outcomeReason]prometheus.Counter
	byStatus sync.Map // int → prometheus.Counter
}

type outcomeReason struct {
	o Outcome
	r Reason
}

// NewMetrics registers the worker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	const ns = "tallyfy_deleter"
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "jobs_total",
			Help: "Jobs finished, by outcome and dead-letter reason."}, []string{"outcome", "reason"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "api_requests_total",
			Help: "Tallyfy API requests, by HTTP status (\"error\" when there was no answer)."}, []string{"code"}),
		apiDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "api_request_duration_seconds",
			Help:    "Tallyfy API request time, body included.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		jobDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "job_duration_seconds",
			Help:    "Time from a job's publish to its outcome.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400}}),
		breakerState: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "breaker_state",
			Help: "Circuit breaker: 0 closed, 1 half-open, 2 open."}),
		unable: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "unable",
			Help: "1 while this worker cannot call Tallyfy, for the reason labelled (breaker, credentials_rejected, credentials_unreadable)."}, []string{"reason"}),
		handedBack: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "jobs_handed_back_total",
			Help: "Jobs given back to the pool unfinished: unable (this worker could not call Tallyfy) or shutdown."}, []string{"why"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "jobs_in_flight",
			Help: "Jobs in this worker's hands."}),
		publishFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "publish_failures_total",
			Help: "Results, dead letters and acks that JetStream did not confirm, by kind."}, []string{"kind"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_pending",
			Help: "Jobs not yet delivered (the backlog), as the consumer reports it."}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_ack_pending",
			Help: "Jobs delivered to the pool and not yet acked."}),
		redelivered: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_redelivered",
			Help: "Jobs delivered more than once and not yet acked."}),
	}
	for _, c := range []prometheus.Collector{m.jobs, m.apiRequests, m.apiDuration, m.jobDuration, m.breakerState,
		m.unable, m.handedBack, m.inFlight, m.publishFailures, m.pending, m.ackPending, m.redelivered} {
		f(c)
	}
	// Every series a dashboard or alert names exists from the start.
	m.finished = map[outcomeReason]prometheus.Counter{}
	for _, o := range Outcomes {
		if o != OutcomeDeadLettered {
			m.finished[outcomeReason{o, ""}] = m.jobs.WithLabelValues(string(o), "")
		}
	}
	for _, r := range Reasons {
		m.finished[outcomeReason{OutcomeDeadLettered, r}] = m.jobs.WithLabelValues(string(OutcomeDeadLettered), string(r))
	}
	for _, k := range []string{kindResult, kindDeadLetter, kindAck} {
		m.publishFailures.WithLabelValues(k)
	}
	for _, i := range Inabilities {
		m.unable.WithLabelValues(i.String())
	}
	for _, w := range []string{handedBackUnable, handedBackShutdown} {
		m.handedBack.WithLabelValues(w)
	}
	return m
}

// ObserveRequest is a tallyfy.WithRequestHook.
func (m *Metrics) ObserveRequest(info tallyfy.RequestInfo) {
	// The counter of each status is looked up once: WithLabelValues hashes
	// its labels on every call, which the profile showed per request.
	c, ok := m.byStatus.Load(info.StatusCode)
	if !ok {
		code := "error"
		if info.StatusCode != 0 {
			code = strconv.Itoa(info.StatusCode)
		}
		c, _ = m.byStatus.LoadOrStore(info.StatusCode, m.apiRequests.WithLabelValues(code))
	}
	c.(prometheus.Counter).Inc()
	m.apiDuration.Observe(info.Duration.Seconds())
}

// JobStarted implements Observer.
func (m *Metrics) JobStarted() { m.inFlight.Inc() }

// JobEnded implements Observer.
func (m *Metrics) JobEnded() { m.inFlight.Dec() }

// JobFinished implements Observer.
func (m *Metrics) JobFinished(o Outcome, r Reason, age time.Duration) {
	if c, ok := m.finished[outcomeReason{o, r}]; ok {
		c.Inc()
	} else {
		m.jobs.WithLabelValues(string(o), string(r)).Inc()
	}
	m.jobDuration.Observe(age.Seconds())
}

// BreakerChanged implements Observer.
func (m *Metrics) BreakerChanged(to gobreaker.State) {
	// gobreaker's own numbering is the one documented: closed, half-open, open.
	m.breakerState.Set(float64(to))
}

// AbilityChanged implements Observer.
func (m *Metrics) AbilityChanged(now Inability) {
	for _, i := range Inabilities {
		v := 0.0
		if i == now {
			v = 1
		}
		m.unable.WithLabelValues(i.String()).Set(v)
	}
}

// HandedBack implements Observer.
func (m *Metrics) HandedBack(why string) { m.handedBack.WithLabelValues(why).Inc() }

// PublishFailed implements Observer.
func (m *Metrics) PublishFailed(kind string) { m.publishFailures.WithLabelValues(kind).Inc() }

// ConsumerBacklog implements Observer.
func (m *Metrics) ConsumerBacklog(pending, ackPending, redelivered uint64) {
	m.pending.Set(float64(pending))
	m.ackPending.Set(float64(ackPending))
	m.redelivered.Set(float64(redelivered))
}
