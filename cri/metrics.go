package cri

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the CRI proxy's counts.
type Metrics struct {
	calls *prometheus.CounterVec
	// tokens is the cache whose Outstanding the tokens gauge reports, read
	// when the gauge is collected (NewProxy sets it): a token is redeemed by
	// the stream server and expires on its own, both outside the proxy.
	tokens atomic.Pointer[Tokens]
}

// NewMetrics registers the proxy's metrics with reg; nil keeps them
// private (for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portforwardd_cri_calls_total",
			Help: "CRI calls through the proxy, by handling (portforward: answered here; portforward_upstream: passed on because the stream server was not ready; passthrough: any other method) and gRPC status code.",
		}, []string{"handling", "code"}),
	}
	tokens := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "portforwardd_cri_tokens_outstanding",
		Help: "Port-forward tokens issued and neither redeemed nor expired.",
	}, func() float64 {
		if t := m.tokens.Load(); t != nil {
			return float64(t.Outstanding())
		}
		return 0
	})
	if reg != nil {
		reg.MustRegister(m.calls, tokens)
	}
	return m
}
