package proxy

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/skiffnet/skiff/bpf"
	"github.com/skiffnet/skiff/proxy/lbmap"
)

type metrics struct {
	sync, programming, fullSync prometheus.Histogram
	syncErrors                  prometheus.Counter
	entries                     *prometheus.GaugeVec
	kernel                      *kernelCollector
	ctEntries                   prometheus.Gauge
	ctDeleted                   prometheus.Counter
}

func newMetrics(m *bpf.Maps, np *bpf.NodePort) *metrics {
	buckets := prometheus.ExponentialBuckets(0.0001, 2, 16) // 100µs .. 3.3s
	return &metrics{
		sync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skiff_proxy_sync_duration_seconds", Buckets: buckets,
			Help: "Time to compute one Service's frontends and write the difference to the BPF maps.",
		}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skiff_proxy_programming_latency_seconds", Buckets: buckets,
			Help: "Time from a Service or EndpointSlice change reaching the agent to the BPF maps holding it.",
		}),
		fullSync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "skiff_proxy_full_sync_duration_seconds", Buckets: buckets,
			Help: "Time to sync every Service at start.",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_proxy_sync_errors_total", Help: "Service syncs that failed to write the BPF maps (retried).",
		}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "skiff_proxy_map_entries", Help: "Entries in the load balancer's BPF maps.",
		}, []string{"map"}),
		ctEntries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_proxy_conntrack_entries",
			Help: "Conntrack entries of the tc programs after the last garbage collection.",
		}),
		ctDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_proxy_conntrack_gc_deleted_total",
			Help: "Expired conntrack entries of the tc programs deleted by garbage collection.",
		}),
		kernel: &kernelCollector{
			maps: m, nodePort: np,
			packets: prometheus.NewDesc("skiff_proxy_nodeport_packets_total",
				"Packets entering the node for a NodePort, externalIP or LoadBalancer IP, by what the tc programs did.",
				[]string{"event"}, nil),
			rejects: prometheus.NewDesc("skiff_proxy_rejects_total",
				"Connections and datagrams to a Service refused for want of endpoints.", []string{"reason"}, nil),
			xlates: prometheus.NewDesc("skiff_proxy_translations_total",
				"Connections (connect) and datagrams (sendmsg) sent to a backend by the socket programs.", []string{"hook"}, nil),
		},
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sync, m.programming, m.fullSync, m.syncErrors, m.entries, m.kernel, m.ctEntries, m.ctDeleted}
}

func (m *metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range m.collectors() {
		errs = append(errs, r.Register(c))
	}
	return errors.Join(errs...)
}

func (m *metrics) unregister(r prometheus.Registerer) {
	for _, c := range m.collectors() {
		r.Unregister(c)
	}
}

func (m *metrics) observeOccupancy(a *lbmap.Applier) {
	f, b, s := a.Occupancy()
	m.entries.WithLabelValues("frontends").Set(float64(f))
	m.entries.WithLabelValues("backends").Set(float64(b))
	m.entries.WithLabelValues("slots").Set(float64(s))
}

func (m *metrics) observeConntrack(deleted, left int) {
	m.ctDeleted.Add(float64(deleted))
	m.ctEntries.Set(float64(left))
}

// kernelCollector reads the programs' counters when scraped.
type kernelCollector struct {
	maps                     *bpf.Maps
	nodePort                 *bpf.NodePort // nil without tc programs
	rejects, xlates, packets *prometheus.Desc
}

// nodePortEvents names the tc programs' counters.
var nodePortEvents = []struct {
	stat bpf.NodePortStat
	name string
}{
	{bpf.NPDNATLocal, "new_flow_local"},
	{bpf.NPDNATSNAT, "new_flow_snat"},
	{bpf.NPRevNat, "reverse_nat"},
	{bpf.NPReject, "reject_no_endpoints"},
	{bpf.NPDropNoEndpoints, "drop_no_endpoints"},
	{bpf.NPDropNoLocal, "drop_no_local_endpoints"},
	{bpf.NPDropNoRoute, "drop_no_route"},
	{bpf.NPDropSNAT, "drop_snat"},
}

func (c *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rejects
	ch <- c.xlates
	if c.nodePort != nil {
		ch <- c.packets
	}
}

func (c *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.maps.ReadStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.rejects, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.rejects, prometheus.CounterValue, float64(s[bpf.StatRejectNoEndpoints]), "no_endpoints")
	ch <- prometheus.MustNewConstMetric(c.rejects, prometheus.CounterValue, float64(s[bpf.StatRejectNoLocal]), "no_local_endpoints")
	ch <- prometheus.MustNewConstMetric(c.xlates, prometheus.CounterValue, float64(s[bpf.StatXlateConnect]), "connect")
	ch <- prometheus.MustNewConstMetric(c.xlates, prometheus.CounterValue, float64(s[bpf.StatXlateSendmsg]), "sendmsg")
	if c.nodePort == nil {
		return
	}
	np, err := c.nodePort.ReadStats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.packets, err)
		return
	}
	for _, e := range nodePortEvents {
		ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(np[e.stat]), e.name)
	}
}
