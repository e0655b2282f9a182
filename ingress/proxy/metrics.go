package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffnet/skiff/ingress/routes"
)

type metrics struct {
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	retries        prometheus.Counter
	ejections      prometheus.Counter
	swaps          prometheus.Counter
	routes         prometheus.Gauge

	// per-route children, resolved once per route object rather than by
	// label lookup on every request; a swap starts a fresh cache.
	mu    sync.RWMutex
	cache map[*routes.Route]*routeMetrics
}

type routeMetrics struct {
	codes    [6]prometheus.Counter // by status class: 1xx … 5xx, [0] others
	duration prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "requests_total",
			Help: "Requests served by the ingress proxy, by route and status class.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "request_duration_seconds",
			Help:    "Time from request headers to the end of the response, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "upstream_errors_total",
			Help: "Failed exchanges with endpoints: connect (dial failed) or exchange.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "retries_total",
			Help: "Requests retried on another endpoint after a failed connect.",
		}),
		ejections: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "endpoint_ejections_total",
			Help: "Endpoints taken out of rotation after failures.",
		}),
		swaps: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "table_swaps_total",
			Help: "Route tables swapped in.",
		}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "skiff", Subsystem: "ingress", Name: "routes",
			Help: "Routes in the current table.",
		}),
		cache: map[*routes.Route]*routeMetrics{},
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.upstreamErrors, m.retries, m.ejections, m.swaps, m.routes)
	}
	return m
}

func (m *metrics) swapped(t *routes.Table) {
	m.swaps.Inc()
	m.routes.Set(float64(t.Routes()))
	m.mu.Lock()
	m.cache = map[*routes.Route]*routeMetrics{}
	m.mu.Unlock()
}

func (m *metrics) forRoute(rt *routes.Route) *routeMetrics {
	m.mu.RLock()
	rm := m.cache[rt]
	m.mu.RUnlock()
	if rm != nil {
		return rm
	}
	name := "none"
	if rt != nil {
		name = rt.Name
	}
	rm = &routeMetrics{duration: m.duration.WithLabelValues(name)}
	for i := range rm.codes {
		class := "other"
		if i > 0 {
			class = strconv.Itoa(i) + "xx"
		}
		rm.codes[i] = m.requests.WithLabelValues(name, class)
	}
	m.mu.Lock()
	m.cache[rt] = rm
	m.mu.Unlock()
	return rm
}

func (m *metrics) observe(rt *routes.Route, status int, d time.Duration) {
	rm := m.forRoute(rt)
	c := status / 100
	if c < 1 || c > 5 {
		c = 0
	}
	rm.codes[c].Inc()
	rm.duration.Observe(d.Seconds())
}

// selfSigned makes the certificate for TLS clients whose server name no
// Secret covers, so they get a handshake (and a 404) rather than an alert.
func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Skiff ingress default certificate"},
		DNSNames:     []string{"ingress.skiff.invalid"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
