package server

import (
	"net/http"
	"runtime"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/portforwardd/portforwardd/streams"
)

const namespace = "portforwardd"

// Metrics are portforwardd's Prometheus metrics, in a private registry.
// Labels are bounded: protocol, result, direction and reason come from
// fixed sets; pods, ports and UIDs never appear.
type Metrics struct {
	reg *prometheus.Registry

	sessionsActive  *prometheus.GaugeVec
	sessionsTotal   *prometheus.CounterVec
	streamsActive   *prometheus.GaugeVec
	streamsTotal    *prometheus.CounterVec
	bytes           *prometheus.CounterVec
	dialDuration    prometheus.Histogram
	dialErrors      *prometheus.CounterVec
	upgradeFailures *prometheus.CounterVec
	limitHits       *prometheus.CounterVec
	limits          *prometheus.GaugeVec
	authDenials     *prometheus.CounterVec
	tlsReloads      *prometheus.CounterVec
	tlsFailing      prometheus.Gauge

	// budget is the server's shared buffer budget, read by
	// portforwardd_buffered_bytes.
	budget atomic.Pointer[streams.Budget]
	// logDrops reads portforwardd_log_lines_dropped_total (SetLogDrops).
	logDrops atomic.Pointer[func() uint64]
}

// NewMetrics registers portforwardd's metrics and the Go and process
// collectors in a new registry. version labels portforwardd_build_info.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		sessionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sessions_active",
			Help: "Upgraded port-forward connections being served.",
		}, []string{"protocol"}),
		sessionsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sessions_total",
			Help: "Upgraded port-forward connections that ended, by how they ended.",
		}, []string{"protocol", "result"}),
		streamsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "streams_active",
			Help: "Forwarded connections (stream pairs) being served.",
		}, []string{"protocol"}),
		streamsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "streams_total",
			Help: "Forwarded connections and rejected streams, by result.",
		}, []string{"protocol", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "bytes_total",
			Help: "Bytes forwarded, by direction.",
		}, []string{"protocol", "direction"}),
		dialDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "dial_duration_seconds",
			Help:    "Time to enter a pod's network namespace and connect, successful or not.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10), // 50µs .. 13s
		}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dial_errors_total",
			Help: "Failed dials into pods, by reason.",
		}, []string{"reason"}),
		upgradeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upgrade_failures_total",
			Help: "Requests answered without an upgrade, by reason.",
		}, []string{"reason"}),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "limit_hits_total",
			Help: "Times a limit refused or paused a client, by limit.",
		}, []string{"limit"}),
		limits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "limit",
			Help: "Configured limits (sessions, streams, bytes), by limit.",
		}, []string{"limit"}),
		authDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "auth_denials_total",
			Help: "Requests refused by authentication or authorization, by reason.",
		}, []string{"reason"}),
		tlsReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "tls_reloads_total",
			Help: "Loads of changed TLS certificate, key or client CA files, by result.",
		}, []string{"result"}),
		tlsFailing: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "tls_reload_failing",
			Help: "1 while the TLS files on disk did not load at their last change, and the previous ones are served; else 0.",
		}),
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help:        "Always 1; labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	buffered := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "buffered_bytes",
		Help: "Client data held for pods that have not read it yet, against --buffer-bytes (SPDY and v4 WebSocket sessions).",
	}, func() float64 { return float64(m.budget.Load().Used()) })
	logDrops := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: namespace, Name: "log_lines_dropped_total",
		Help: "Log lines dropped because the log's reader fell more than the log queue behind.",
	}, func() float64 {
		if f := m.logDrops.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.reg.MustRegister(buffered, logDrops, m.sessionsActive, m.sessionsTotal, m.streamsActive, m.streamsTotal,
		m.bytes, m.dialDuration, m.dialErrors, m.upgradeFailures, buildInfo,
		m.limitHits, m.limits, m.authDenials, m.tlsReloads, m.tlsFailing,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// AuthDenied counts a request refused by authentication or authorization
// (auth.Config.OnDeny).
func (m *Metrics) AuthDenied(reason string) { m.authDenials.WithLabelValues(reason).Inc() }

// TLSReloaded counts a load of changed TLS files (certs.Reloader.OnReload),
// and says whether the files on disk are the ones served.
func (m *Metrics) TLSReloaded(err error) {
	result, failing := "success", 0.0
	if err != nil {
		result, failing = "failure", 1
	}
	m.tlsReloads.WithLabelValues(result).Inc()
	m.tlsFailing.Set(failing)
}

// SetLogDrops makes portforwardd_log_lines_dropped_total read f, the
// count of log lines the daemon's log writer has dropped.
func (m *Metrics) SetLogDrops(f func() uint64) { m.logDrops.Store(&f) }

// Registerer is where other packages' metrics join these (served by the
// same /metrics).
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}

// observer returns a streams.Observer for one protocol, with its label
// values resolved once so the per-chunk byte count is a single add.
func (m *Metrics) observer(protocol string) *observer {
	return &observer{
		m:        m,
		protocol: protocol,
		active:   m.streamsActive.WithLabelValues(protocol),
		up:       m.bytes.WithLabelValues(protocol, streams.ClientToPod.String()),
		down:     m.bytes.WithLabelValues(protocol, streams.PodToClient.String()),
	}
}

type observer struct {
	m        *Metrics
	protocol string
	active   prometheus.Gauge
	up, down prometheus.Counter
}

var _ streams.Observer = (*observer)(nil)

func (o *observer) ForwardStarted() { o.active.Inc() }

func (o *observer) ForwardEnded(result string) {
	o.active.Dec()
	o.m.streamsTotal.WithLabelValues(o.protocol, result).Inc()
}

func (o *observer) StreamRejected(result string) {
	o.m.streamsTotal.WithLabelValues(o.protocol, result).Inc()
}

func (o *observer) Transferred(d streams.Direction, n int) {
	if d == streams.ClientToPod {
		o.up.Add(float64(n))
	} else {
		o.down.Add(float64(n))
	}
}
