package netpol

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/netpol/model"
)

type metrics struct {
	syncDuration prometheus.Histogram
	syncErrors   prometheus.Counter
	endpoints    prometheus.Gauge
	policies     prometheus.Gauge
}

var (
	dropsDesc = prometheus.NewDesc("skiff_netpol_dropped_packets_total",
		"Packets the NetworkPolicy programs dropped, by direction seen from the pod.", []string{"direction"}, nil)
	allowedDesc = prometheus.NewDesc("skiff_netpol_allowed_flows_total",
		"New flows of local pods the NetworkPolicy programs let through, by direction seen from the pod.", []string{"direction"}, nil)
	hostDesc = prometheus.NewDesc("skiff_netpol_host_flows_total",
		"New flows from the node into pods isolated for ingress (always allowed: probes, host-network pods).", nil, nil)
)

func newMetrics(c *Controller, reg prometheus.Registerer) *metrics {
	m := &metrics{
		syncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skiff_netpol_sync_duration_seconds", Help: "Time to compute and write the node's policy maps.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_netpol_sync_errors_total", Help: "Policy syncs that failed and were retried.",
		}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_netpol_isolated_pods", Help: "Local pods isolated by at least one NetworkPolicy.",
		}),
		policies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_netpol_policies", Help: "NetworkPolicies in the cluster.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.syncDuration, m.syncErrors, m.endpoints, m.policies, &statsCollector{c.prog})
	}
	return m
}

func (m *metrics) setEndpoints(eps map[netip.Addr]*model.Endpoint, policies int) {
	n := 0
	for _, ep := range eps {
		if ep.IngressIsolated || ep.EgressIsolated {
			n++
		}
	}
	m.endpoints.Set(float64(n))
	m.policies.Set(float64(policies))
}

// statsCollector reads the programs' counters at scrape time.
type statsCollector struct{ p *bpf.Policy }

func (s *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dropsDesc
	ch <- allowedDesc
	ch <- hostDesc
}

func (s *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := s.p.ReadStats()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(st[bpf.PolicyDropIngress]), "ingress")
	ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(st[bpf.PolicyDropEgress]), "egress")
	ch <- prometheus.MustNewConstMetric(allowedDesc, prometheus.CounterValue, float64(st[bpf.PolicyAllowIngress]), "ingress")
	ch <- prometheus.MustNewConstMetric(allowedDesc, prometheus.CounterValue, float64(st[bpf.PolicyAllowEgress]), "egress")
	ch <- prometheus.MustNewConstMetric(hostDesc, prometheus.CounterValue, float64(st[bpf.PolicyAllowHost]))
}
