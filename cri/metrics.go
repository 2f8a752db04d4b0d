package cri

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the CRI proxy's counts.
type Metrics struct {
	calls  *prometheus.CounterVec
	tokens prometheus.Gauge
}

// NewMetrics registers the proxy's metrics with reg; nil keeps them
// private (for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portforwardd_cri_calls_total",
			Help: "CRI calls through the proxy, by handling (portforward: answered here; portforward_upstream: passed on because the stream server was not ready; passthrough: any other method) and gRPC status code.",
		}, []string{"handling", "code"}),
		tokens: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portforwardd_cri_tokens_outstanding",
			Help: "Port-forward tokens issued and not yet redeemed or swept.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.tokens)
	}
	return m
}
