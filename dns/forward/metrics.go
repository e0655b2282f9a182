package forward

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the forwarder: how often the cache answers, and how long the
// node's resolvers take when it does not.
type metrics struct {
	hit, miss, stale prometheus.Counter
	upstream         *prometheus.HistogramVec
	upstreamErrors   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_dns_cache_total",
		Help: "Forwarded DNS questions by cache result: hit (fresh), stale (expired, served while upstreams failed) or miss.",
	}, []string{"result"})
	upstream := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "skiff_dns_upstream_duration_seconds",
		Help:    "Time an upstream resolver took to answer a forwarded DNS question.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"upstream"})
	upErrs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_dns_upstream_errors_total",
		Help: "Forwarded DNS questions an upstream resolver did not answer (timeout, refused, bad reply).",
	}, []string{"upstream"})
	if reg != nil {
		for _, c := range []prometheus.Collector{cache, upstream, upErrs} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return &metrics{
		hit:            cache.WithLabelValues("hit"),
		miss:           cache.WithLabelValues("miss"),
		stale:          cache.WithLabelValues("stale"),
		upstream:       upstream,
		upstreamErrors: upErrs,
	}, nil
}
